// lstmkit int8 kernel: the LSTM step (streaming and whole sequences, inference) with int8 weights.
//
// Weights: the int8 codes of lstmkit.compress (one float32 scale per output row, codes in
// [-127, 127]). Activations of the two matrix products are coded on the fly to 7-bit codes in
// [-63, 63] (kActMax):
//   * the layer input x_t: one step per row of the batch, s_x = max|x_t| / 63 (dynamic);
//   * the recurrent input h_{t-1}, which lies in (-1, 1): the fixed step 1/63.
// The products are exact in int32; then
//   pre[n] = s_ih[n] * s_x * sum_k q_ih[n,k] x_q[k] + s_hh[n] / 63 * sum_k q_hh[n,k] h_q[k] + b[n]
// and the gates, the cell and h stay float32 (the pointwise pass is the float kernel's).
//
// Why 7 bits: with AVX2 the products use vpmaddubsw, which multiplies unsigned by signed bytes. A
// code stored with the offset 64 is an unsigned byte in [1, 127], so it multiplies the weight codes
// directly (2 * 127 * 127 < 32767: no saturation), widened by vpmaddwd, and the offset comes off
// exactly in int32 (64 * the row sums of the weight codes, precomputed). 32 multiply-adds take three
// vector-multiply-port instructions; 8-bit signed codes need a fourth (vpsignb, to move the sign of
// x onto w), and on this machine's Zen 3 those ports are the bound: 8-bit codes ran the step-large
// product about 1.3x slower. Without AVX2 the same arithmetic runs in plain loops.
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

#include "lstm_loops.h"
#include "lstm_tuning.h"

namespace lstmkit {

// Activation codes: a value v with step s is coded as round(v / s) in [-kActMax, kActMax], stored
// with the offset kActOffset, i.e. as an unsigned byte in [1, 127]: vpmaddubsw multiplies it by the
// signed weight codes directly (2 * 127 * 127 < 32767: the int16 pair sums never saturate), and the
// offset is taken off exactly in int32 with the precomputed row sums of the weight codes.
constexpr int kActMax = 63;
constexpr int kActOffset = 64;

struct Int8Layer {
  int64_t I = 0, H = 0, NU = 0, QX = 0, QH = 0, KQ = 0;  // QX/QH quads of x and h, KQ = QX + QH
  at::Tensor w;      // (NU, KQ, 4, 8, 4) int8
  at::Tensor s_ih;   // (NU, 4, 8) float
  at::Tensor s_hh;   // (NU, 4, 8) float, already divided by 127
  at::Tensor bias;   // (NU, 4, 8) float (zeros without biases)
  at::Tensor corr;   // (NU, 2, 4, 8) int32: kActOffset * the row sums of the x and of the h codes
  // raw pointers into the tensors above (set by pack_int8_layer; the tensors own the memory)
  const int8_t* pw = nullptr;
  const float* psi = nullptr;
  const float* psh = nullptr;
  const float* pb = nullptr;
  const int32_t* pc = nullptr;
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
  const int64_t H = l.H;
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
  l.s_ih = inter(s_ih, 1.0f);
  l.s_hh = inter(s_hh, 1.0f / (float)kActMax);
  l.bias = inter(bias, 1.0f);
  l.pw = l.w.data_ptr<int8_t>();
  l.psi = l.s_ih.data_ptr<float>();
  l.psh = l.s_hh.data_ptr<float>();
  l.pb = l.bias.data_ptr<float>();
  // the activation codes carry the offset kActOffset: subtract kActOffset * sum_k w[n, k] per product
  l.corr = at::zeros({l.NU, 2, 4, 8}, at::kInt);
  int32_t* cr = l.corr.data_ptr<int32_t>();
  for (int64_t u = 0; u < l.NU; ++u)
    for (int64_t j = 0; j < l.KQ; ++j)
      for (int q = 0; q < 4; ++q)
        for (int n = 0; n < 8; ++n) {
          const int8_t* src = w + (((u * l.KQ + j) * 4 + q) * 8 + n) * 4;
          cr[((u * 2 + (j < l.QX ? 0 : 1)) * 4 + q) * 8 + n] +=
              kActOffset * ((int32_t)src[0] + src[1] + src[2] + src[3]);
        }
  l.pc = cr;
  return l;
}

// acc + the 4 products of unsigned codes x and signed codes w of each int32 lane. With VNNI
// (AVX-512 VNNI + VL, or AVX-VNNI) that is one vpdpbusd; else vpmaddubsw + vpmaddwd, which give the
// same exact sums here (the int16 pair sums cannot saturate, see above).
#if LSTMKIT_HAVE_AVX2
inline __m256i dot4_add(__m256i acc, __m256i x, __m256i w) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(acc, x, w);
#elif defined(__AVXVNNI__)
  return _mm256_dpbusd_avx_epi32(acc, x, w);
#else
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(x, w), _mm256_set1_epi16(1)));
#endif
}
#endif

// acc[m][q] (8 int32 each) = sum over quads j in [j0, j1) of codes(row m) . w(u, j, q)
template <int MR>
inline void int8_block(const int8_t* const* rows, const int8_t* pan, int64_t j0, int64_t j1, int32_t acc[MR][4][8]) {
#if LSTMKIT_HAVE_AVX2
  __m256i a[MR][4];
  for (int m = 0; m < MR; ++m)
    for (int q = 0; q < 4; ++q) a[m][q] = _mm256_setzero_si256();
  for (int64_t j = j0; j < j1; ++j) {
    __m256i ax[MR];
    for (int m = 0; m < MR; ++m) {
      int32_t quad;
      std::memcpy(&quad, rows[m] + j * 4, 4);
      ax[m] = _mm256_set1_epi32(quad);
    }
    const int8_t* p = pan + j * 128;
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + q * 32));
      for (int m = 0; m < MR; ++m) {
        a[m][q] = dot4_add(a[m][q], ax[m], w);
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

// n activation codes: v * mul rounded to nearest even (= nearbyint), clamped to [-kActMax, kActMax],
// plus kActOffset.
inline void quantize_scaled(const float* v, int64_t n, float mul, int8_t* q) {
  int64_t k = 0;
  constexpr float A = (float)kActMax;
#if LSTMKIT_HAVE_AVX2
  const __m256 m = _mm256_set1_ps(mul), hi = _mm256_set1_ps(A), lo = _mm256_set1_ps(-A);
  const __m256i off = _mm256_set1_epi32(kActOffset);
  for (; k + 8 <= n; k += 8) {
    const __m256 y = _mm256_max_ps(lo, _mm256_min_ps(hi, _mm256_mul_ps(_mm256_loadu_ps(v + k), m)));
    // MXCSR rounding: nearest even, as std::nearbyint
    const __m256i i32 = _mm256_add_epi32(_mm256_cvtps_epi32(y), off);
    const __m128i i16 = _mm_packs_epi32(_mm256_castsi256_si128(i32), _mm256_extracti128_si256(i32, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + k), _mm_packs_epi16(i16, i16));
  }
#endif
  for (; k < n; ++k) q[k] = (int8_t)(std::nearbyint(std::min(A, std::max(-A, v[k] * mul))) + kActOffset);
}

// One row (batch 1) against NB unit blocks at once (their panels read side by side: more loads in
// flight while the codes stream from L3): acc[k][q] = sum over quads j in [0, nq) of row . w(k, j, q).
template <int NB>
inline void int8_blocks_row(const int8_t* row, const int8_t* const* pans, int64_t nq, int32_t acc[NB][4][8]) {
#if LSTMKIT_HAVE_AVX2
  __m256i a[NB][4];
  for (int k = 0; k < NB; ++k)
    for (int q = 0; q < 4; ++q) a[k][q] = _mm256_setzero_si256();
  for (int64_t j = 0; j < nq; ++j) {
    int32_t quad;
    std::memcpy(&quad, row + j * 4, 4);
    const __m256i ax = _mm256_set1_epi32(quad);
#pragma GCC unroll 8
    for (int k = 0; k < NB; ++k) {
      const int8_t* p = pans[k] + j * 128;
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) {
        const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + q * 32));
        a[k][q] = dot4_add(a[k][q], ax, w);
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

// Codes one row of n floats with the dynamic step max|v| / kActMax; returns the step (0 for all zeros).
inline float quantize_row_dynamic(const float* v, int64_t n, int8_t* q) {
  float amax = 0.f;
  for (int64_t k = 0; k < n; ++k) amax = std::max(amax, std::fabs(v[k]));
  if (!(amax > 0.f) || !std::isfinite(amax)) {
    std::memset(q, kActOffset, (size_t)n);
    return 0.f;
  }
  quantize_scaled(v, n, (float)kActMax / amax, q);
  return amax / (float)kActMax;
}

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
    nt_ = int8_stream_threads(num_threads, wbytes, B_);
    nt_ = std::max(1, std::min(nt_, Team::kMaxThreads));
    for (const auto& l : layers_) {
      xq_.push_back(at::zeros({nt_, B_, l.QX * 4}, at::kChar));  // each thread codes the layer input itself
      sx_.push_back(at::zeros({nt_, B_}, at::kFloat));
      hq_.push_back(at::full({2, B_, l.QH * 4}, kActOffset, at::kChar));  // h_{t-1} and h_t: read one, write the other
      h_.push_back(at::zeros({B_, l.H}, at::kFloat));
      c_.push_back(at::zeros({B_, l.H}, at::kFloat));
    }
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
    run(xc.data_ptr<float>(), out.data_ptr<float>(), 1);
    return out;
  }

  // x (T, B, I) float32 -> y (T, B, H) of the last layer; the state carries on from the current one.
  at::Tensor sequence(const at::Tensor& x) {
    TORCH_CHECK(x.scalar_type() == at::kFloat && x.device().is_cpu() && x.dim() == 3 && x.size(1) == B_ &&
                    x.size(2) == input_size(),
                "lstmkit Int8Stream.sequence: x must be CPU float32 (T, ", B_, ", ", input_size(), "), got ",
                x.sizes());
    const at::Tensor xc = x.contiguous();
    const int64_t T = x.size(0), H = hidden_size();
    at::Tensor y = at::empty({T, B_, H}, xc.options());
    if (T > 0) {
      pybind11::gil_scoped_release nogil;
      run(xc.data_ptr<float>(), y.data_ptr<float>(), T);
    }
    return y;
  }

  void reset() {
    for (size_t k = 0; k < layers_.size(); ++k) {
      hq_[k].fill_(kActOffset);
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
      int8_t* q = hq_[k].data_ptr<int8_t>() + parity_ * B_ * l.QH * 4;
      for (int64_t b = 0; b < B_; ++b) quantize_scaled(hp + b * l.H, l.H, (float)kActMax, q + b * l.QH * 4);
    }
  }

  int64_t num_threads() const { return nt_; }

 private:
  // T steps: x (T, B, I) -> y (T, B, H) of the last layer. One barrier per layer per step: each
  // thread owns the same unit blocks in the product and in the pointwise pass (so no barrier between
  // them), and the int8 codes of h are double-buffered (step t reads h_{t-1}'s codes and writes h_t's
  // into the other buffer, so nobody overwrites what another thread may still read). The barrier
  // closes the step (or the layer: the next layer codes this one's whole h_t as its input).
  void run(const float* x, float* y, int64_t T) {
    const int64_t B = B_, L = (int64_t)layers_.size(), H = hidden_size(), I = input_size();
    const int parity = parity_;
    parallel_region(nt_, [&](Team& team, int p) {
      int np = team.active();
      for (int64_t t = 0; t < T; ++t) {
        const int cur = (int)((parity + t) & 1);
        for (int64_t li = 0; li < L; ++li) {
          const Int8Layer& l = layers_[li];
          // this thread's codes of the layer input (x_t, or h_t of the layer below, complete after the barrier)
          int8_t* xq = xq_[li].data_ptr<int8_t>() + p * B * l.QX * 4;
          float* sx = sx_[li].data_ptr<float>() + p * B;
          const float* xin = li == 0 ? x + t * B * I : h_[li - 1].data_ptr<float>();
          for (int64_t b = 0; b < B; ++b) sx[b] = quantize_row_dynamic(xin + b * l.I, l.I, xq + b * l.QX * 4);
          int8_t* hq = hq_[li].data_ptr<int8_t>();
          Rows r{xq, hq + cur * B * l.QH * 4, hq + (1 - cur) * B * l.QH * 4, sx, h_[li].data_ptr<float>(),
                 c_[li].data_ptr<float>(), li + 1 == L ? y + t * B * H : nullptr};
          int64_t u0, u1;
          split_range(l.NU, p, np, u0, u1);
          int64_t u = u0;
          if (B == 1)
            for (; u + 2 <= u1; u += 2) pair_row(l, r, u);
          for (; u < u1; ++u) {
            int64_t b = 0;
            for (; b + 2 <= B; b += 2) block<2>(l, r, u, b);
            for (; b < B; ++b) block<1>(l, r, u, b);
          }
          if (li + 1 < L || t + 1 < T)
            if ((np = team.sync(p)) <= p) return;
        }
      }
    });
    parity_ = (int)((parity + T) & 1);
  }

  struct Rows {
    const int8_t* xq;  // (B, QX*4) codes of the layer input
    const int8_t* hq;  // (B, QH*4) codes of h_{t-1}
    int8_t* hq_next;   // (B, QH*4) codes of h_t
    const float* sx;   // (B) scales of xq
    float* h;          // (B, H)
    float* c;          // (B, H)
    float* y;          // (B, H) or null
  };

  // Pre-activations from the exact int32 products, then the gates, c and h of unit block u, row b.
  static void finish(const Int8Layer& l, const Rows& r, int64_t u, int64_t b, const int32_t ax[4][8],
                     const int32_t ah[4][8]) {
    using V = Vec8f;  // one unit block of 8 per vector
    constexpr int LN = V::L;
    static_assert(LN == 8, "lanes");
    auto ld = [](const float* p, int n) { return n == LN ? V::load(p) : V::load_n(p, n); };
    auto st = [](const V& v, float* p, int n) {
      if (n == LN)
        v.store(p);
      else
        v.store_n(p, n);
    };
    const float s = r.sx[b];
    const float* si = l.psi + u * 32;
    const float* sh = l.psh + u * 32;
    const float* bb = l.pb + u * 32;
    const int32_t* cx = l.pc + u * 64;
    const int32_t* ch = cx + 32;
    alignas(32) float pre[32];
    for (int q = 0; q < 4; ++q)
      for (int n = 0; n < 8; ++n) {
        const int k = q * 8 + n;
        pre[k] = si[k] * s * (float)(ax[q][n] - cx[k]) + sh[k] * (float)(ah[q][n] - ch[k]) + bb[k];
      }
    const int64_t H = l.H;
    float* c = r.c + b * H;
    float* h = r.h + b * H;
    for (int64_t h0 = 0; h0 < 8; h0 += LN) {
      const int64_t hu = u * 8 + h0;
      if (hu >= H) break;
      const int n = (int)std::min<int64_t>(LN, H - hu);
      const V i = sigmoid(V::load(pre + h0));
      const V f = sigmoid(V::load(pre + 8 + h0));
      const V g = tanh(V::load(pre + 16 + h0));
      const V o = sigmoid(V::load(pre + 24 + h0));
      const V cn = fmadd(f, ld(c + hu, n), i * g);
      st(cn, c + hu, n);
      const V hn = o * tanh(cn);
      st(hn, h + hu, n);
      if (r.y) st(hn, r.y + b * H + hu, n);
    }
    const int64_t e = std::min<int64_t>(H, u * 8 + 8);
    quantize_scaled(h + u * 8, e - u * 8, (float)kActMax, r.hq_next + b * l.QH * 4 + u * 8);
  }

  // Batch 1: unit blocks u and u + 1 together.
  static void pair_row(const Int8Layer& l, const Rows& r, int64_t u) {
    alignas(32) int32_t ax[2][4][8];
    alignas(32) int32_t ah[2][4][8];
    const int8_t* w = l.pw;
    const int8_t* px[2] = {w + u * l.KQ * 128, w + (u + 1) * l.KQ * 128};
    const int8_t* ph[2] = {px[0] + l.QX * 128, px[1] + l.QX * 128};
    int8_blocks_row<2>(r.xq, px, l.QX, ax);
    int8_blocks_row<2>(r.hq, ph, l.QH, ah);
    finish(l, r, u, 0, ax[0], ah[0]);
    finish(l, r, u + 1, 0, ax[1], ah[1]);
  }

  template <int MR>
  static void block(const Int8Layer& l, const Rows& r, int64_t u, int64_t b) {
    const int8_t* pan = l.pw + u * l.KQ * 128;
    const int8_t* rows[MR];
    const int8_t* hrows[MR];
    for (int m = 0; m < MR; ++m) {
      rows[m] = r.xq + (b + m) * l.QX * 4;
      hrows[m] = r.hq + (b + m) * l.QH * 4;
    }
    alignas(32) int32_t ax[MR][4][8];
    alignas(32) int32_t ah[MR][4][8];
    int8_block<MR>(rows, pan, 0, l.QX, ax);
    int8_block<MR>(hrows, pan + l.QX * 128, 0, l.QH, ah);
    for (int m = 0; m < MR; ++m) finish(l, r, u, b + m, ax[m], ah[m]);
  }

  int64_t B_;
  int nt_ = 1;
  int parity_ = 0;  // which of the two h-code buffers holds the current h
  std::vector<Int8Layer> layers_;
  std::vector<at::Tensor> xq_, sx_, hq_, h_, c_;
};

}  // namespace lstmkit
