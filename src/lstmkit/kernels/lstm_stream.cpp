// lstmkit fused kernels: the streaming step of a stack of unidirectional layers (see lstm_stream.h).
#include "lstm_stream.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "lstm_loops.h"
#include "lstm_pack.h"
#include "lstm_tensors.h"
#include "lstm_tuning.h"

namespace lstmkit {

namespace {

// y = x @ panel for one row (B = 1): two independent accumulator sets over even / odd k so the FMA
// latency is hidden; NV vectors wide.
template <typename T, int NV>
inline void gemv_panel(const T* __restrict x, const T* __restrict panel, int64_t K, Vec<T>* out) {
  using V = Vec<T>;
  constexpr int L = V::L;
  V a0[NV], a1[NV];
  for (int j = 0; j < NV; ++j) a0[j] = V::zero(), a1[j] = V::zero();
  int64_t k = 0;
  for (; k + 1 < K; k += 2) {
    const V x0 = V::set1(x[k]), x1 = V::set1(x[k + 1]);
    const T* p0 = panel + k * NV * L;
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) a0[j] = fmadd(x0, V::load(p0 + j * L), a0[j]);
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) a1[j] = fmadd(x1, V::load(p0 + NV * L + j * L), a1[j]);
  }
  if (k < K) {
    const V x0 = V::set1(x[k]);
    for (int j = 0; j < NV; ++j) a0[j] = fmadd(x0, V::load(panel + k * NV * L + j * L), a0[j]);
  }
  for (int j = 0; j < NV; ++j) out[j] = a0[j] + a1[j];
}

}  // namespace

FusedStreamCpp::FusedStreamCpp(const std::vector<Tensor>& w_ih, const std::vector<Tensor>& w_hh,
                               const std::vector<Tensor>& bias, const std::vector<Tensor>& w_hr, int64_t batch,
                               int64_t num_threads, const std::vector<Tensor>& peep,
                               const std::vector<std::vector<Tensor>>& ln, bool coupled, double zoneout_c,
                               double zoneout_h)
    : B_(batch), coupled_(coupled), zc_(zoneout_c), zh_(zoneout_h) {
  TORCH_CHECK(peep.empty() || peep.size() == w_ih.size(), "lstmkit FusedStream: one peephole tensor per layer");
  TORCH_CHECK(ln.empty() || ln.size() == w_ih.size(), "lstmkit FusedStream: six layer-norm tensors per layer");
  TORCH_CHECK(!w_ih.empty() && w_ih.size() == w_hh.size() && w_ih.size() == bias.size() &&
                  w_ih.size() == w_hr.size(),
              "lstmkit FusedStream: one w_ih, w_hh, bias, w_hr per layer (bias/w_hr may be empty)");
  TORCH_CHECK(batch >= 1, "lstmkit FusedStream: batch_size must be >= 1");
  st_ = w_ih[0].scalar_type();
  TORCH_CHECK(st_ == at::kFloat || st_ == at::kDouble, "lstmkit FusedStream: float32 or float64 weights");
  const int64_t L = lanes_for(st_);
  auto opts = w_ih[0].options();
  int64_t wbytes = 0;
  bool with_ln = false;
  for (size_t k = 0; k < w_ih.size(); ++k) {
    StreamLayer l;
    l.H = w_hh[k].size(0) / 4;
    l.I = w_ih[k].size(1);
    l.P = w_hr[k].defined() && w_hr[k].numel() > 0 ? w_hr[k].size(0) : 0;
    l.R = l.P > 0 ? l.P : l.H;
    l.K = l.I + l.R;
    l.Hp = round_up(l.H, L);
    l.NU = l.Hp / L;
    TORCH_CHECK(w_ih[k].size(0) == 4 * l.H && w_hh[k].size(1) == l.R, "lstmkit FusedStream: layer ", k,
                ": weight shapes do not match");
    if (k > 0) TORCH_CHECK(l.I == layers_.back().R, "lstmkit FusedStream: layer ", k, " input size");
    Tensor cat = at::cat({w_ih[k], w_hh[k]}, 1).contiguous();  // (4H, K)
    Tensor v = cat.reshape({4, l.H, l.K});
    if (l.Hp != l.H) v = at::constant_pad_nd(v, {0, 0, 0, l.Hp - l.H});
    l.wc = v.reshape({4, l.NU, L, l.K}).permute({1, 3, 0, 2}).contiguous();  // (NU, K, 4, L)
    l.bias = bias[k].defined() && bias[k].numel() > 0 ? interleave_vec(bias[k].contiguous(), l.H, L)
                                                      : at::zeros({4 * l.Hp}, opts);
    if (l.P > 0) {
      l.wr = pack_panels(w_hr[k].t(), L);
      l.NPP = l.wr.size(0);
      l.hc = at::zeros({B_, l.H}, opts);
    }
    l.xh = at::zeros({B_, l.K}, opts);
    l.c = at::zeros({B_, l.H}, opts);
    l.pre = at::zeros({B_, 4 * l.Hp}, opts);
    if (!peep.empty() && peep[k].defined() && peep[k].numel() > 0) {
      TORCH_CHECK(peep[k].numel() == 3 * l.H, "lstmkit FusedStream: peephole weights must be (3, H)");
      l.peep = peep[k].to(st_).contiguous().reshape({3, l.H});
    }
    if (!ln.empty() && !ln[k].empty()) {
      TORCH_CHECK(ln[k].size() == 6, "lstmkit FusedStream: layer norm takes 6 tensors per layer");
      std::vector<Tensor> v;
      for (int q = 0; q < 4; ++q) v.push_back(interleave_vec(ln[k][q].to(st_).contiguous(), l.H, L));
      l.ln = at::stack(v);
      l.lnc = at::stack({ln[k][4].to(st_).contiguous(), ln[k][5].to(st_).contiguous()});
      l.prex = at::zeros({B_, 4 * l.Hp}, opts);
      with_ln = true;
    }
    wbytes += l.wc.numel() * l.wc.element_size();
    layers_.push_back(std::move(l));
  }
  nt_ = stream_threads(num_threads, wbytes, B_);
  if (with_ln) nt_ = 1;  // the norms reduce over all units: one thread, no extra barriers
}

Tensor FusedStreamCpp::step(const Tensor& x) {
  const StreamLayer& l0 = layers_.front();
  TORCH_CHECK(x.scalar_type() == st_ && x.device().is_cpu(), "lstmkit FusedStream.step: x must be a CPU ",
              st_, " tensor");
  const bool flat = x.dim() == 1;  // (I,) with batch_size 1 -> (R,)
  TORCH_CHECK((x.dim() == 2 && x.size(0) == B_ && x.size(1) == l0.I) || (flat && B_ == 1 && x.size(0) == l0.I),
              "lstmkit FusedStream.step: x must be (", B_, ", ", l0.I, ")", B_ == 1 ? " or (I,)" : "", ", got ",
              x.sizes());
  const Tensor& xc = x.is_contiguous() ? x : x.contiguous();
  Tensor out = flat ? at::empty({layers_.back().R}, xc.options()) : at::empty({B_, layers_.back().R}, xc.options());
  AT_DISPATCH_FLOATING_TYPES(st_, "lstmkit_stream_step", [&] {
    run<scalar_t>(xc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
  });
  return out;
}

void FusedStreamCpp::reset() {
  for (auto& l : layers_) {
    l.xh.zero_();
    l.c.zero_();
  }
}

std::vector<Tensor> FusedStreamCpp::get_state() const {
  std::vector<Tensor> hs, cs;
  for (const auto& l : layers_) {
    hs.push_back(l.xh.narrow(1, l.I, l.R));
    cs.push_back(l.c);
  }
  return {at::stack(hs), at::stack(cs)};
}

void FusedStreamCpp::set_state(const Tensor& h, const Tensor& c) {
  TORCH_CHECK(h.dim() == 3 && c.dim() == 3 && h.size(0) == (int64_t)layers_.size() &&
                  c.size(0) == (int64_t)layers_.size(),
              "lstmkit FusedStream.set_state: h and c must be (L, B, .)");
  for (size_t k = 0; k < layers_.size(); ++k) {
    layers_[k].xh.narrow(1, layers_[k].I, layers_[k].R).copy_(h[k]);
    layers_[k].c.copy_(c[k]);
  }
}



template <typename T>
void FusedStreamCpp::run(const T* x, T* out) {
  using V = Vec<T>;
  constexpr int L = V::L;
  const int64_t B = B_;
  const StreamLayer& l0 = layers_[0];
  T* xh0 = l0.xh.data_ptr<T>();
  for (int64_t b = 0; b < B; ++b) copy_n(x + b * l0.I, xh0 + b * l0.K, l0.I);
  const bool reverse = (calls_++ & 1) != 0;
  parallel_region(nt_, [&](Team& team, int p) {
    int np = team.active();
    for (size_t li = 0; li < layers_.size(); ++li) {
      const StreamLayer& l = layers_[li];
      T* xh = l.xh.data_ptr<T>();
      T* pre = l.pre.data_ptr<T>();
      T* c = l.c.data_ptr<T>();
      const T* wc = l.wc.data_ptr<T>();
      const T* bias = l.bias.data_ptr<T>();
      int64_t u0, u1;
      split_range(l.NU, p, np, u0, u1);
      // pass 1: pre-activations of my unit blocks, in alternating order from call to call: when a
      // thread's weights are larger than its cache, the blocks it read last are still cached
      // when it starts the next call (the same order each time would miss on every block)
      for (int64_t ui = u0; ui < u1; ++ui) {
        const int64_t u = reverse ? u0 + u1 - 1 - ui : ui;
        const T* pan = wc + u * l.K * 4 * L;
        if (l.ln.defined()) {  // x W_ih^T and h W_hh^T apart: each has its own norm
          T* prex = l.prex.data_ptr<T>();
          for (int64_t b = 0; b < B; ++b) {
            V acc[4];
            gemv_panel<T, 4>(xh + b * l.K, pan, l.I, acc);
            for (int q = 0; q < 4; ++q) acc[q].store(prex + b * 4 * l.Hp + u * 4 * L + q * L);
            gemv_panel<T, 4>(xh + b * l.K + l.I, pan + l.I * 4 * L, l.R, acc);
            for (int q = 0; q < 4; ++q) acc[q].store(pre + b * 4 * l.Hp + u * 4 * L + q * L);
          }
        } else if (B == 1) {
          V acc[4];
          gemv_panel<T, 4>(xh, pan, l.K, acc);
          for (int q = 0; q < 4; ++q) acc[q].store(pre + u * 4 * L + q * L);
        } else {
          for_row_blocks<T, 3, 4>(xh, l.K, pan, l.K, B, [&](int64_t r0, auto& acc) {
            constexpr int mr = sizeof(acc.v) / sizeof(acc.v[0]);
            for (int m = 0; m < mr; ++m)
              for (int q = 0; q < 4; ++q) acc.v[m][q].store(pre + (r0 + m) * 4 * l.Hp + u * 4 * L + q * L);
          });
        }
      }
      if ((np = team.sync(p)) <= p) return;  // everyone has read h_{t-1} before it is overwritten
      // pass 2: pointwise, h written in place into xh[:, I:] (or hc with a projection)
      split_range(l.NU, p, np, u0, u1);
      if (!l.peep.defined() && !l.ln.defined() && !coupled_ && zc_ == 0.0 && zh_ == 0.0) {
        for (int64_t u = u0; u < u1; ++u) {
          const int64_t hu = u * L;
          const int n = (int)std::min<int64_t>(L, l.H - hu);
          const T* bb = bias + u * 4 * L;
          for (int64_t b = 0; b < B; ++b) {
            const T* pr = pre + b * 4 * l.Hp + u * 4 * L;
            const V i = sigmoid(V::load(pr) + V::load(bb));
            const V f = sigmoid(V::load(pr + L) + V::load(bb + L));
            const V g = tanh(V::load(pr + 2 * L) + V::load(bb + 2 * L));
            const V o = sigmoid(V::load(pr + 3 * L) + V::load(bb + 3 * L));
            T* cp = c + b * l.H + hu;
            const V cn = fmadd(f, ld(cp, n), i * g);
            st(cn, cp, n);
            const V h = o * tanh(cn);
            if (l.P > 0)
              st(h, l.hc.data_ptr<T>() + b * l.H + hu, n);
            else
              st(h, xh + b * l.K + l.I + hu, n);
          }
        }
      } else {
        pointwise_variants<T>(l, u0, u1);
      }
      if (l.P > 0) {
        if ((np = team.sync(p)) <= p) return;
        const T* hcp = l.hc.data_ptr<T>();
        const T* wr = l.wr.data_ptr<T>();
        int64_t q0, q1;
        split_range(l.NPP, p, np, q0, q1);
        for (int64_t q = q0; q < q1; ++q) {
          for (int64_t b = 0; b < B; ++b) {
            V acc[2];
            gemv_panel<T, 2>(hcp + b * l.H, wr + q * l.H * 2 * L, l.H, acc);
            for (int j = 0; j < 2; ++j) {
              const int64_t cidx = q * 2 * L + j * L;
              const int n = (int)std::max<int64_t>(0, std::min<int64_t>(L, l.P - cidx));
              T* hp = xh + b * l.K + l.I + cidx;
              if (n > 0) st(zh_ > 0.0 ? fmadd(V::set1((T)zh_), ld(hp, n) - acc[j], acc[j]) : acc[j], hp, n);
            }
          }
        }
      }
      if ((np = team.sync(p)) <= p) return;  // h_t of this layer complete
      // feed the next layer (or the output)
      if (p == 0) {
        T* dst = li + 1 < layers_.size() ? layers_[li + 1].xh.data_ptr<T>() : out;
        const int64_t dstride = li + 1 < layers_.size() ? layers_[li + 1].K : l.R;
        for (int64_t b = 0; b < B; ++b) copy_n(xh + b * l.K + l.I, dst + b * dstride, l.R);
      }
      if ((np = team.sync(p)) <= p) return;
    }
  });
}

// The pointwise pass with the variants (equations of lstmkit.core.functional.cell_step, zoneout
// in evaluation: the expectation). Layer norm runs with one thread (p = 0 owns all units).
template <typename T>
void FusedStreamCpp::pointwise_variants(const StreamLayer& l, int64_t u0, int64_t u1) {
  using V = Vec<T>;
  constexpr int L = V::L;
  const int64_t B = B_, H = l.H, Hp = l.Hp;
  T* xh = l.xh.data_ptr<T>();
  T* pre = l.pre.data_ptr<T>();
  T* c = l.c.data_ptr<T>();
  const T* bias = l.bias.data_ptr<T>();
  const T* peep = l.peep.defined() ? l.peep.data_ptr<T>() : nullptr;
  const T zc = (T)zc_, zh = (T)zh_;
  for (int64_t b = 0; b < B; ++b) {
    T* pr = pre + b * 4 * Hp;
    if (l.ln.defined()) {  // a = LN(x W_ih^T) + LN(h W_hh^T) (+ biases below), over the 4H entries
      const T* lnp = l.ln.data_ptr<T>();
      T* px = l.prex.data_ptr<T>() + b * 4 * Hp;
      T* srcs[2] = {px, pr};
      T mean[2], rstd[2];
      for (int s2 = 0; s2 < 2; ++s2) {
        double sum = 0, sq = 0;
        for (int64_t k = 0; k < 4 * Hp; ++k) sum += srcs[s2][k];  // padded lanes are 0
        const double m = sum / (4.0 * H);
        for (int64_t u = 0; u < l.NU; ++u)
          for (int q = 0; q < 4; ++q)
            for (int j = 0; j < L && u * L + j < H; ++j) {
              const double d = srcs[s2][u * 4 * L + q * L + j] - m;
              sq += d * d;
            }
        mean[s2] = (T)m;
        rstd[s2] = (T)(1.0 / std::sqrt(sq / (4.0 * H) + 1e-5));
      }
      for (int64_t k = 0; k < 4 * Hp; ++k)
        pr[k] = ((px[k] - mean[0]) * rstd[0]) * lnp[k] + lnp[4 * Hp + k] +
                ((pr[k] - mean[1]) * rstd[1]) * lnp[2 * 4 * Hp + k] + lnp[3 * 4 * Hp + k];
    }
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t hu = u * L;
      const int n = (int)std::min<int64_t>(L, H - hu);
      const T* bb = bias + u * 4 * L;
      T* g4 = pr + u * 4 * L;
      T* cp = c + b * H + hu;
      const V c_prev = ld(cp, n);
      V ai = V::load(g4) + V::load(bb), af = V::load(g4 + L) + V::load(bb + L);
      if (peep) {
        ai = fmadd(ld(peep + hu, n), c_prev, ai);
        af = fmadd(ld(peep + H + hu, n), c_prev, af);
      }
      const V i = sigmoid(ai);
      const V f = coupled_ ? V::set1(T(1)) - i : sigmoid(af);
      const V g = tanh(V::load(g4 + 2 * L) + V::load(bb + 2 * L));
      const V cn = fmadd(f, c_prev, i * g);
      V ao = V::load(g4 + 3 * L) + V::load(bb + 3 * L);
      if (peep) ao = fmadd(ld(peep + 2 * H + hu, n), cn, ao);
      const V o = sigmoid(ao);
      o.store(g4 + 3 * L);        // kept for the layer norm of c
      cn.store(g4 + 2 * L);       // c~ before zoneout
      st(zc > 0 ? fmadd(V::set1(zc), c_prev - cn, cn) : cn, cp, n);
    }
    T mc = 0, rc = 0;
    if (l.ln.defined()) {  // LN of c~ over H
      double sum = 0, sq = 0;
      for (int64_t u = 0; u < l.NU; ++u)
        for (int j = 0; j < L && u * L + j < H; ++j) sum += pr[u * 4 * L + 2 * L + j];
      const double m = sum / (double)H;
      for (int64_t u = 0; u < l.NU; ++u)
        for (int j = 0; j < L && u * L + j < H; ++j) {
          const double d = pr[u * 4 * L + 2 * L + j] - m;
          sq += d * d;
        }
      mc = (T)m;
      rc = (T)(1.0 / std::sqrt(sq / (double)H + 1e-5));
    }
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t hu = u * L;
      const int n = (int)std::min<int64_t>(L, H - hu);
      const T* g4 = pr + u * 4 * L;
      V cv = V::load(g4 + 2 * L);
      if (l.ln.defined()) {
        const T* lc = l.lnc.data_ptr<T>();
        cv = fmadd(ld(lc + hu, n), (cv - V::set1(mc)) * V::set1(rc), ld(lc + H + hu, n));
      }
      const V h = V::load(g4 + 3 * L) * tanh(cv);
      if (l.P > 0) {
        st(h, l.hc.data_ptr<T>() + b * H + hu, n);
      } else {
        T* hp = xh + b * l.K + l.I + hu;
        st(zh > 0 ? fmadd(V::set1(zh), ld(hp, n) - h, h) : h, hp, n);
      }
    }
  }
}

}  // namespace lstmkit
