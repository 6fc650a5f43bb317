// lstmkit int8 kernel: the LSTM step (streaming and whole sequences, inference) with int8 weights.
//
// Weights: the int8 codes of lstmkit.compress (one float32 scale per output row, codes in
// [-127, 127]). Activations of the two matrix products are coded to int8 on the fly:
//   * the layer input x_t: one scale per row of the batch, s_x = max|x_t| / 127 (dynamic);
//   * the recurrent input h_{t-1}, which lies in (-1, 1): the fixed step 1/127.
// The products are exact in int32; then
//   pre[n] = s_ih[n] * s_x * sum_k q_ih[n,k] x_q[k] + s_hh[n] / 127 * sum_k q_hh[n,k] h_q[k] + b[n]
// and the gates, the cell and h stay float32 (the pointwise pass is the float kernel's).
//
// With AVX2 the products use vpmaddubsw on |x| and sign(w, x) (no saturation: 2 * 127 * 127 <
// 32767), widened by vpmaddwd; 32 multiply-adds in four instructions on a quarter of the bytes of
// float32 weights. Without AVX2 the same arithmetic runs in plain loops.
//
// Packed layout: per block u of 8 hidden units, per quad j of 4 input columns, per gate q: 32 bytes,
// lane n holding W_q[8u + n][4j .. 4j + 3]. The x-quads (from W_ih) come first, then the h-quads
// (from W_hh). Scales and biases are interleaved [u][gate][lane] like the float stream's.
#pragma once

#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "lstm_fused.h"

namespace lstmkit {

struct Int8Layer {
  int64_t I = 0, H = 0, NU = 0, QX = 0, QH = 0, KQ = 0;  // QX/QH quads of x and h, KQ = QX + QH
  at::Tensor w;      // (NU, KQ, 4, 8, 4) int8
  at::Tensor s_ih;   // (NU, 4, 8) float
  at::Tensor s_hh;   // (NU, 4, 8) float, already divided by 127
  at::Tensor bias;   // (NU, 4, 8) float (zeros without biases)
};

// Packs one layer's codes (q_ih (4H, I), q_hh (4H, H) int8; scales (4H,) float; bias (4H,) or empty).
inline Int8Layer pack_int8_layer(const at::Tensor& q_ih, const at::Tensor& s_ih, const at::Tensor& q_hh,
                                 const at::Tensor& s_hh, const at::Tensor& bias) {
  TORCH_CHECK(q_ih.scalar_type() == at::kChar && q_hh.scalar_type() == at::kChar,
              "lstmkit int8: weight codes must be int8");
  TORCH_CHECK(q_ih.dim() == 2 && q_hh.dim() == 2 && q_ih.size(0) % 4 == 0 && q_hh.size(0) == q_ih.size(0) &&
                  q_hh.size(1) * 4 == q_hh.size(0),
              "lstmkit int8: codes must be (4H, I) and (4H, H)");
  Int8Layer l;
  l.H = q_hh.size(1);
  l.I = q_ih.size(1);
  l.NU = (l.H + 7) / 8;
  l.QX = (l.I + 3) / 4;
  l.QH = (l.H + 3) / 4;
  l.KQ = l.QX + l.QH;
  TORCH_CHECK(s_ih.numel() == 4 * l.H && s_hh.numel() == 4 * l.H, "lstmkit int8: one scale per row (4H)");
  TORCH_CHECK(!bias.defined() || bias.numel() == 0 || bias.numel() == 4 * l.H, "lstmkit int8: bias must be (4H,)");
  const int64_t H = l.H, Hp = l.NU * 8;
  auto ci = q_ih.contiguous(), ch = q_hh.contiguous();
  const int8_t* pi = ci.data_ptr<int8_t>();
  const int8_t* ph = ch.data_ptr<int8_t>();
  l.w = at::zeros({l.NU, l.KQ, 4, 8, 4}, at::kChar);
  int8_t* w = l.w.data_ptr<int8_t>();
  for (int64_t u = 0; u < l.NU; ++u)
    for (int64_t j = 0; j < l.KQ; ++j)
      for (int q = 0; q < 4; ++q)
        for (int n = 0; n < 8; ++n) {
          const int64_t unit = u * 8 + n;
          if (unit >= H) continue;
          const int64_t row = q * H + unit;
          int8_t* dst = w + (((u * l.KQ + j) * 4 + q) * 8 + n) * 4;
          for (int e = 0; e < 4; ++e) {
            if (j < l.QX) {
              const int64_t k = j * 4 + e;
              if (k < l.I) dst[e] = pi[row * l.I + k];
            } else {
              const int64_t k = (j - l.QX) * 4 + e;
              if (k < H) dst[e] = ph[row * H + k];
            }
          }
        }
  auto inter = [&](const at::Tensor& v, float mul) {
    at::Tensor out = at::zeros({l.NU, 4, 8}, at::kFloat);
    if (!v.defined() || v.numel() == 0) return out;
    auto vc = v.to(at::kFloat).contiguous();
    const float* s = vc.data_ptr<float>();
    float* o = out.data_ptr<float>();
    for (int64_t u = 0; u < l.NU; ++u)
      for (int q = 0; q < 4; ++q)
        for (int n = 0; n < 8; ++n) {
          const int64_t unit = u * 8 + n;
          if (unit < H) o[(u * 4 + q) * 8 + n] = s[q * H + unit] * mul;
        }
    return out;
  };
  (void)Hp;
  l.s_ih = inter(s_ih, 1.0f);
  l.s_hh = inter(s_hh, 1.0f / 127.0f);
  l.bias = inter(bias, 1.0f);
  return l;
}

// acc[m][q] (8 int32 each) = sum over quads j in [j0, j1) of codes(row m) . w(u, j, q)
template <int MR>
inline void int8_block(const int8_t* const* rows, const int8_t* pan, int64_t j0, int64_t j1, int32_t acc[MR][4][8]) {
#if LSTMKIT_HAVE_AVX2
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i a[MR][4];
  for (int m = 0; m < MR; ++m)
    for (int q = 0; q < 4; ++q) a[m][q] = _mm256_setzero_si256();
  for (int64_t j = j0; j < j1; ++j) {
    __m256i sx[MR], ax[MR];
    for (int m = 0; m < MR; ++m) {
      int32_t quad;
      std::memcpy(&quad, rows[m] + j * 4, 4);
      sx[m] = _mm256_set1_epi32(quad);
      ax[m] = _mm256_abs_epi8(sx[m]);
    }
    const int8_t* p = pan + j * 128;
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + q * 32));
      for (int m = 0; m < MR; ++m) {
        const __m256i prod = _mm256_maddubs_epi16(ax[m], _mm256_sign_epi8(w, sx[m]));
        a[m][q] = _mm256_add_epi32(a[m][q], _mm256_madd_epi16(prod, ones));
      }
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int q = 0; q < 4; ++q) _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc[m][q]), a[m][q]);
#else
  for (int m = 0; m < MR; ++m)
    for (int q = 0; q < 4; ++q)
      for (int n = 0; n < 8; ++n) acc[m][q][n] = 0;
  for (int64_t j = j0; j < j1; ++j)
    for (int m = 0; m < MR; ++m) {
      const int8_t* x = rows[m] + j * 4;
      for (int q = 0; q < 4; ++q)
        for (int n = 0; n < 8; ++n) {
          const int8_t* w = pan + j * 128 + q * 32 + n * 4;
          acc[m][q][n] += (int32_t)x[0] * w[0] + (int32_t)x[1] * w[1] + (int32_t)x[2] * w[2] + (int32_t)x[3] * w[3];
        }
    }
#endif
}

// n values v * mul, rounded to nearest even and clamped to [-127, 127], as int8 (= nearbyint).
inline void quantize_scaled(const float* v, int64_t n, float mul, int8_t* q) {
  int64_t k = 0;
#if LSTMKIT_HAVE_AVX2
  const __m256 m = _mm256_set1_ps(mul), hi = _mm256_set1_ps(127.f), lo = _mm256_set1_ps(-127.f);
  for (; k + 8 <= n; k += 8) {
    const __m256 y = _mm256_max_ps(lo, _mm256_min_ps(hi, _mm256_mul_ps(_mm256_loadu_ps(v + k), m)));
    const __m256i i32 = _mm256_cvtps_epi32(y);  // MXCSR rounding: nearest even, as std::nearbyint
    const __m128i i16 = _mm_packs_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + k), _mm_packs_epi16(i16, i16));
  }
#endif
  for (; k < n; ++k) q[k] = (int8_t)std::nearbyint(std::min(127.f, std::max(-127.f, v[k] * mul)));
}

// One row (batch 1) against NB unit blocks at once (their panels read side by side: more loads in
// flight while the codes stream from L3): acc[k][q] = sum over quads j in [0, nq) of row . w(k, j, q).
template <int NB>
inline void int8_blocks_row(const int8_t* row, const int8_t* const* pans, int64_t nq, int32_t acc[NB][4][8]) {
#if LSTMKIT_HAVE_AVX2
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i a[NB][4];
  for (int k = 0; k < NB; ++k)
    for (int q = 0; q < 4; ++q) a[k][q] = _mm256_setzero_si256();
  for (int64_t j = 0; j < nq; ++j) {
    int32_t quad;
    std::memcpy(&quad, row + j * 4, 4);
    const __m256i sx = _mm256_set1_epi32(quad), ax = _mm256_abs_epi8(sx);
#pragma GCC unroll 8
    for (int k = 0; k < NB; ++k) {
      const int8_t* p = pans[k] + j * 128;
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) {
        const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + q * 32));
        const __m256i prod = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(w, sx));
        a[k][q] = _mm256_add_epi32(a[k][q], _mm256_madd_epi16(prod, ones));
      }
    }
  }
  for (int k = 0; k < NB; ++k)
    for (int q = 0; q < 4; ++q) _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc[k][q]), a[k][q]);
#else
  for (int k = 0; k < NB; ++k) {
    int32_t one[1][4][8];
    const int8_t* rows[1] = {row};
    int8_block<1>(rows, pans[k], 0, nq, one);
    std::memcpy(acc[k], one[0], sizeof(one[0]));
  }
#endif
}

// Codes one row of n floats with the dynamic scale max|v| / 127; returns the scale (0 for all zeros).
inline float quantize_row_dynamic(const float* v, int64_t n, int8_t* q) {
  float amax = 0.f;
  for (int64_t k = 0; k < n; ++k) amax = std::max(amax, std::fabs(v[k]));
  if (!(amax > 0.f) || !std::isfinite(amax)) {
    std::memset(q, 0, (size_t)n);
    return 0.f;
  }
  quantize_scaled(v, n, 127.0f / amax, q);
  return amax / 127.0f;
}

inline int8_t quantize_h(float h) { return (int8_t)std::nearbyint(std::min(127.f, std::max(-127.f, h * 127.0f))); }

class Int8StreamCpp {
 public:
  Int8StreamCpp(const std::vector<at::Tensor>& q_ih, const std::vector<at::Tensor>& s_ih,
                const std::vector<at::Tensor>& q_hh, const std::vector<at::Tensor>& s_hh,
                const std::vector<at::Tensor>& bias, int64_t batch, int64_t num_threads)
      : B_(batch) {
    TORCH_CHECK(!q_ih.empty() && q_ih.size() == q_hh.size() && q_ih.size() == s_ih.size() &&
                    q_ih.size() == s_hh.size() && q_ih.size() == bias.size(),
                "lstmkit Int8Stream: one q_ih, s_ih, q_hh, s_hh, bias per layer");
    TORCH_CHECK(batch >= 1, "lstmkit Int8Stream: batch_size must be >= 1");
    int64_t wbytes = 0;
    for (size_t k = 0; k < q_ih.size(); ++k) {
      Int8Layer l = pack_int8_layer(q_ih[k], s_ih[k], q_hh[k], s_hh[k], bias[k]);
      if (k > 0) TORCH_CHECK(l.I == layers_.back().H, "lstmkit Int8Stream: layer ", k, " input size");
      wbytes += l.w.numel();
      layers_.push_back(std::move(l));
    }
    for (const auto& l : layers_) {
      xq_.push_back(at::zeros({B_, (l.QX + l.QH) * 4}, at::kChar));
      sx_.push_back(at::zeros({B_}, at::kFloat));
      h_.push_back(at::zeros({B_, l.H}, at::kFloat));
      c_.push_back(at::zeros({B_, l.H}, at::kFloat));
      pre_.push_back(at::zeros({B_, l.NU * 32}, at::kFloat));
    }
    nt_ = num_threads > 0 ? (int)num_threads : at::get_num_threads();
    if (wbytes * B_ < (1 << 19)) nt_ = 1;  // fits one core's L2 many times over: threads cost more
    if (num_threads < 0) nt_ = (int)-num_threads;
  }

  int64_t input_size() const { return layers_.front().I; }
  int64_t hidden_size() const { return layers_.back().H; }

  at::Tensor step(const at::Tensor& x) {
    const int64_t I = input_size();
    TORCH_CHECK(x.scalar_type() == at::kFloat && x.device().is_cpu(), "lstmkit Int8Stream.step: x must be a CPU "
                "float32 tensor");
    const bool flat = x.dim() == 1;
    TORCH_CHECK((x.dim() == 2 && x.size(0) == B_ && x.size(1) == I) || (flat && B_ == 1 && x.size(0) == I),
                "lstmkit Int8Stream.step: x must be (", B_, ", ", I, ")", B_ == 1 ? " or (I,)" : "", ", got ",
                x.sizes());
    const at::Tensor xc = x.contiguous();
    at::Tensor out = flat ? at::empty({hidden_size()}, xc.options()) : at::empty({B_, hidden_size()}, xc.options());
    run(xc.data_ptr<float>(), out.data_ptr<float>());
    return out;
  }

  // x (T, B, I) float32 -> y (T, B, H) of the last layer; the state carries on from the current one.
  at::Tensor sequence(const at::Tensor& x) {
    TORCH_CHECK(x.scalar_type() == at::kFloat && x.device().is_cpu() && x.dim() == 3 && x.size(1) == B_ &&
                    x.size(2) == input_size(),
                "lstmkit Int8Stream.sequence: x must be CPU float32 (T, ", B_, ", ", input_size(), "), got ",
                x.sizes());
    const at::Tensor xc = x.contiguous();
    const int64_t T = x.size(0), H = hidden_size(), I = input_size();
    at::Tensor y = at::empty({T, B_, H}, xc.options());
    const float* xp = xc.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    {
      pybind11::gil_scoped_release nogil;
      for (int64_t t = 0; t < T; ++t) run(xp + t * B_ * I, yp + t * B_ * H);
    }
    return y;
  }

  void reset() {
    for (size_t k = 0; k < layers_.size(); ++k) {
      xq_[k].zero_();
      h_[k].zero_();
      c_[k].zero_();
    }
  }

  std::vector<at::Tensor> get_state() const {
    return {at::stack(h_), at::stack(c_)};
  }

  void set_state(const at::Tensor& h, const at::Tensor& c) {
    const int64_t L = (int64_t)layers_.size();
    TORCH_CHECK(h.dim() == 3 && c.dim() == 3 && h.size(0) == L && c.size(0) == L && h.size(1) == B_ &&
                    c.size(1) == B_,
                "lstmkit Int8Stream.set_state: h and c must be (L, B, H)");
    for (int64_t k = 0; k < L; ++k) {
      const Int8Layer& l = layers_[k];
      TORCH_CHECK(h.size(2) == l.H && c.size(2) == l.H, "lstmkit Int8Stream.set_state: hidden size");
      h_[k].copy_(h[k]);
      c_[k].copy_(c[k]);
      const float* hp = h_[k].data_ptr<float>();
      int8_t* q = xq_[k].data_ptr<int8_t>();
      const int64_t stride = (l.QX + l.QH) * 4;
      for (int64_t b = 0; b < B_; ++b)
        for (int64_t u = 0; u < l.H; ++u) q[b * stride + l.QX * 4 + u] = quantize_h(hp[b * l.H + u]);
    }
  }

  int64_t num_threads() const { return nt_; }

 private:
  void run(const float* x, float* out) {
    using V = Vec<float>;
    constexpr int L = V::L;
    static_assert(L == 8 || L == 4 || L == 1, "lanes");
    const int64_t B = B_;
    {
      const Int8Layer& l0 = layers_[0];
      int8_t* q = xq_[0].data_ptr<int8_t>();
      float* sx = sx_[0].data_ptr<float>();
      const int64_t stride = (l0.QX + l0.QH) * 4;
      for (int64_t b = 0; b < B; ++b) sx[b] = quantize_row_dynamic(x + b * l0.I, l0.I, q + b * stride);
    }
    parallel_region(nt_, [&](Team& team, int p) {
      int np = team.active();
      for (size_t li = 0; li < layers_.size(); ++li) {
        const Int8Layer& l = layers_[li];
        const int64_t stride = (l.QX + l.QH) * 4;
        int8_t* xq = xq_[li].data_ptr<int8_t>();
        const float* sx = sx_[li].data_ptr<float>();
        float* pre = pre_[li].data_ptr<float>();
        float* hf = h_[li].data_ptr<float>();
        float* c = c_[li].data_ptr<float>();
        const int8_t* w = l.w.data_ptr<int8_t>();
        const float* sih = l.s_ih.data_ptr<float>();
        const float* shh = l.s_hh.data_ptr<float>();
        int64_t u0, u1;
        split_range(l.NU, p, np, u0, u1);
        // pass 1: pre-activations of my unit blocks (without the bias)
        int64_t u = u0;
        if (B == 1)
          for (; u + 2 <= u1; u += 2) pair_row(xq, sx[0], l, w, sih, shh, u, pre);
        for (; u < u1; ++u) {
          const int8_t* pan = w + u * l.KQ * 128;
          const float* si = sih + u * 32;
          const float* sh = shh + u * 32;
          int64_t b = 0;
          for (; b + 2 <= B; b += 2) block<2>(xq, stride, b, sx, l, pan, si, sh, pre + u * 32);
          for (; b < B; ++b) block<1>(xq, stride, b, sx, l, pan, si, sh, pre + u * 32);
        }
        if ((np = team.sync(p)) <= p) return;  // everyone has read h_{t-1} before it is overwritten
        // pass 2: pointwise (float), h kept in float and coded for the next step
        split_range(l.NU, p, np, u0, u1);
        const float* bias = l.bias.data_ptr<float>();
        for (int64_t u = u0; u < u1; ++u) {
          for (int64_t b = 0; b < B; ++b) {
            const float* pr = pre + b * l.NU * 32 + u * 32;
            const float* bb = bias + u * 32;
            for (int64_t h0 = 0; h0 < 8; h0 += L) {
              const int64_t hu = u * 8 + h0;
              if (hu >= l.H) break;
              const int n = (int)std::min<int64_t>(L, l.H - hu);
              const V i = sigmoid(V::load(pr + h0) + V::load(bb + h0));
              const V f = sigmoid(V::load(pr + 8 + h0) + V::load(bb + 8 + h0));
              const V g = tanh(V::load(pr + 16 + h0) + V::load(bb + 16 + h0));
              const V o = sigmoid(V::load(pr + 24 + h0) + V::load(bb + 24 + h0));
              float* cp = c + b * l.H + hu;
              const V cn = fmadd(f, ld(cp, n), i * g);
              st(cn, cp, n);
              st(o * tanh(cn), hf + b * l.H + hu, n);
            }
            int8_t* hq = xq + b * stride + l.QX * 4;
            const int64_t e = std::min<int64_t>(l.H, u * 8 + 8);
            quantize_scaled(hf + b * l.H + u * 8, e - u * 8, 127.0f, hq + u * 8);
          }
        }
        if ((np = team.sync(p)) <= p) return;  // h_t of this layer complete
        if (p == 0) {
          if (li + 1 < layers_.size()) {
            const Int8Layer& nx = layers_[li + 1];
            int8_t* q = xq_[li + 1].data_ptr<int8_t>();
            float* s = sx_[li + 1].data_ptr<float>();
            const int64_t ns = (nx.QX + nx.QH) * 4;
            for (int64_t b = 0; b < B; ++b) s[b] = quantize_row_dynamic(hf + b * l.H, l.H, q + b * ns);
          } else {
            std::memcpy(out, hf, sizeof(float) * B * l.H);
          }
        }
        if ((np = team.sync(p)) <= p) return;
      }
    });
  }

  // Batch 1: unit blocks u and u + 1 together.
  static void pair_row(const int8_t* xq, float s, const Int8Layer& l, const int8_t* w, const float* sih,
                       const float* shh, int64_t u, float* pre) {
    alignas(32) int32_t ax[2][4][8];
    alignas(32) int32_t ah[2][4][8];
    const int8_t* px[2] = {w + u * l.KQ * 128, w + (u + 1) * l.KQ * 128};
    const int8_t* ph[2] = {px[0] + l.QX * 128, px[1] + l.QX * 128};
    int8_blocks_row<2>(xq, px, l.QX, ax);
    int8_blocks_row<2>(xq + l.QX * 4, ph, l.QH, ah);
    for (int k = 0; k < 2; ++k) {
      const float* si = sih + (u + k) * 32;
      const float* sh = shh + (u + k) * 32;
      float* dst = pre + (u + k) * 32;
      for (int q = 0; q < 4; ++q)
        for (int n = 0; n < 8; ++n)
          dst[q * 8 + n] = si[q * 8 + n] * s * (float)ax[k][q][n] + sh[q * 8 + n] * (float)ah[k][q][n];
    }
  }

  template <int MR>
  static void block(const int8_t* xq, int64_t stride, int64_t b, const float* sx, const Int8Layer& l,
                    const int8_t* pan, const float* si, const float* sh, float* pre_u) {
    const int8_t* rows[MR];
    for (int m = 0; m < MR; ++m) rows[m] = xq + (b + m) * stride;
    alignas(32) int32_t ax[MR][4][8];
    alignas(32) int32_t ah[MR][4][8];
    int8_block<MR>(rows, pan, 0, l.QX, ax);
    const int8_t* hrows[MR];
    for (int m = 0; m < MR; ++m) hrows[m] = rows[m] + l.QX * 4;
    int8_block<MR>(hrows, pan + l.QX * 128, 0, l.QH, ah);
    for (int m = 0; m < MR; ++m) {
      const float s = sx[b + m];
      float* dst = pre_u + (b + m) * l.NU * 32;
      for (int q = 0; q < 4; ++q)
        for (int n = 0; n < 8; ++n)
          dst[q * 8 + n] = si[q * 8 + n] * s * (float)ax[m][q][n] + sh[q * 8 + n] * (float)ah[m][q][n];
    }
  }

  int64_t B_;
  int nt_ = 1;
  std::vector<Int8Layer> layers_;
  std::vector<at::Tensor> xq_, sx_, h_, c_, pre_;
};

}  // namespace lstmkit
