// lstmkit fused kernels: the SIMD layer.
//
// Vec<T> is a short vector of T with Vec<T>::L lanes and the handful of operations the LSTM
// kernels need (load/store, partial load/store for the tail of a row, fma, sigmoid, tanh).
//
//  * float with AVX2+FMA (checked at compile time; the build uses -march=native and the cache key
//    holds the CPU's flags): 8 lanes in one __m256, exp/sigmoid/tanh by Cephes-style polynomials
//    (relative error ~2e-7 on the whole range), and fast_sigmoid/fast_tanh by one rational function
//    (max abs error 4.4e-7) for the plain time loops.
//  * float with AVX-512 F + DQ: VecF16, the same functions on 16 lanes in one __m512.
//  * everything else (double, or a CPU without AVX2): a plain array of lanes with scalar loops and
//    std::exp / std::tanh. double exists so that torch.autograd.gradcheck can check the very same
//    kernel code; it is not meant to be fast.
//
// Nothing here depends on torch, so the micro-kernels can be benchmarked standalone.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define LSTMKIT_HAVE_AVX2 1
#else
#define LSTMKIT_HAVE_AVX2 0
#endif
// AVX-512 (F and DQ) doubles the lanes (LSTMKIT_KERNEL_SIMD=avx2 builds without it, see _build.py).
#if LSTMKIT_HAVE_AVX2 && defined(__AVX512F__) && defined(__AVX512DQ__)
#define LSTMKIT_HAVE_AVX512 1
#else
#define LSTMKIT_HAVE_AVX512 0
#endif

namespace lstmkit {

// ---------------------------------------------------------------------------------------------
// Generic lanes (double everywhere; float without AVX2).
template <typename T, int N>
struct VecG {
  static constexpr int L = N;
  T v[N];
  static inline VecG zero() {
    VecG r;
    for (int l = 0; l < N; ++l) r.v[l] = T(0);
    return r;
  }
  static inline VecG set1(T a) {
    VecG r;
    for (int l = 0; l < N; ++l) r.v[l] = a;
    return r;
  }
  static inline VecG load(const T* p) {
    VecG r;
    for (int l = 0; l < N; ++l) r.v[l] = p[l];
    return r;
  }
  // Loads n (< L) lanes, the others are 0.
  static inline VecG load_n(const T* p, int n) {
    VecG r = zero();
    for (int l = 0; l < n; ++l) r.v[l] = p[l];
    return r;
  }
  inline void store(T* p) const {
    for (int l = 0; l < N; ++l) p[l] = v[l];
  }
  inline void stream(T* p) const { store(p); }
  inline void store_n(T* p, int n) const {
    for (int l = 0; l < n; ++l) p[l] = v[l];
  }
  inline T hsum() const {
    T s = T(0);
    for (int l = 0; l < N; ++l) s += v[l];
    return s;
  }
#define LSTMKIT_G_BINOP(op)                                   \
  friend inline VecG operator op(const VecG& a, const VecG& b) { \
    VecG r;                                                    \
    for (int l = 0; l < N; ++l) r.v[l] = a.v[l] op b.v[l];     \
    return r;                                                  \
  }
  LSTMKIT_G_BINOP(+)
  LSTMKIT_G_BINOP(-)
  LSTMKIT_G_BINOP(*)
#undef LSTMKIT_G_BINOP
  // a * b + c
  friend inline VecG fmadd(const VecG& a, const VecG& b, const VecG& c) {
    VecG r;
    for (int l = 0; l < N; ++l) r.v[l] = a.v[l] * b.v[l] + c.v[l];
    return r;
  }
  friend inline VecG sigmoid(const VecG& a) {
    VecG r;
    for (int l = 0; l < N; ++l) r.v[l] = T(1) / (T(1) + std::exp(-a.v[l]));
    return r;
  }
  friend inline VecG tanh(const VecG& a) {
    VecG r;
    for (int l = 0; l < N; ++l) r.v[l] = std::tanh(a.v[l]);
    return r;
  }
  // no faster variant here: double exists for gradcheck, where exactness matters
  friend inline VecG fast_sigmoid(const VecG& a) { return sigmoid(a); }
  friend inline VecG fast_tanh(const VecG& a) { return tanh(a); }
};

template <typename T>
struct VecSel {
  using type = VecG<T, 4>;
};

// Polynomial coefficients shared by the vector types (Horner's scheme, highest degree first).
namespace poly {
// exp(r) = 1 + r + r^2 P(r) on |r| <= ln2 / 2 (Cephes expf)
constexpr float kExp[6] = {1.9875691500E-4f, 1.3981999507E-3f, 8.3334519073E-3f,
                           4.1665795894E-2f, 1.6666665459E-1f, 5.0000001201E-1f};
// tanh(x) = x + x^3 P(x^2) on |x| < 0.625 (Cephes tanhf)
constexpr float kTanh[5] = {-5.70498872745E-3f, 2.06390887954E-2f, -5.37397155531E-2f, 1.33314422036E-1f,
                            -3.33332819422E-1f};
// tanh(x) = x P(x^2) / Q(x^2) on |x| <= 9 (see tanh_fast_ps)
constexpr float kTanhFastP[7] = {8.368814401e-14f, -1.487668589e-11f, -5.858397855e-09f, 7.569105684e-06f,
                                 2.759954391e-03f, 1.277611654e-01f,  1.000000142e+00f};
constexpr float kTanhFastQ[4] = {2.045687482e-04f, 2.312521542e-02f, 4.610945506e-01f, 1.0f};
}  // namespace poly

#if LSTMKIT_HAVE_AVX2
// ---------------------------------------------------------------------------------------------
// float x 8 with AVX2 + FMA.
struct VecF8 {
  static constexpr int L = 8;
  __m256 v;
  VecF8() = default;
  explicit VecF8(__m256 x) : v(x) {}
  static inline VecF8 zero() { return VecF8(_mm256_setzero_ps()); }
  static inline VecF8 set1(float a) { return VecF8(_mm256_set1_ps(a)); }
  static inline VecF8 load(const float* p) { return VecF8(_mm256_loadu_ps(p)); }
  static inline __m256i mask_n(int n) {
    // lanes l < n are selected (sign bit set)
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx);
  }
  static inline VecF8 load_n(const float* p, int n) { return VecF8(_mm256_maskload_ps(p, mask_n(n))); }
  inline void store(float* p) const { _mm256_storeu_ps(p, v); }
  inline void stream(float* p) const { _mm256_stream_ps(p, v); }  // p 32-byte aligned
  inline void store_n(float* p, int n) const { _mm256_maskstore_ps(p, mask_n(n), v); }
  inline float hsum() const {
    __m128 lo = _mm256_castps256_ps128(v);
    __m128 hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    __m128 sh = _mm_movehdup_ps(lo);
    lo = _mm_add_ps(lo, sh);
    sh = _mm_movehl_ps(sh, lo);
    lo = _mm_add_ss(lo, sh);
    return _mm_cvtss_f32(lo);
  }
  friend inline VecF8 operator+(VecF8 a, VecF8 b) { return VecF8(_mm256_add_ps(a.v, b.v)); }
  friend inline VecF8 operator-(VecF8 a, VecF8 b) { return VecF8(_mm256_sub_ps(a.v, b.v)); }
  friend inline VecF8 operator*(VecF8 a, VecF8 b) { return VecF8(_mm256_mul_ps(a.v, b.v)); }
  friend inline VecF8 fmadd(VecF8 a, VecF8 b, VecF8 c) { return VecF8(_mm256_fmadd_ps(a.v, b.v, c.v)); }
  template <int N>
  __attribute__((always_inline)) static inline __m256 horner(__m256 x, const float (&c)[N]) {
    __m256 p = _mm256_set1_ps(c[0]);
#pragma GCC unroll 8
    for (int k = 1; k < N; ++k) p = _mm256_fmadd_ps(p, x, _mm256_set1_ps(c[k]));
    return p;
  }

  // exp(x) for x <= 0 ... any x: Cephes expf. n = round(x log2 e), r = x - n ln2 in [-ln2/2, ln2/2],
  // exp(r) by a degree-7 polynomial, times 2^n built in the exponent bits. Inputs are clamped to
  // [-87.3, 88.37] so that 2^n stays a normal number (results below ~1e-38 come out as ~1e-38).
  __attribute__((always_inline)) static inline __m256 exp_ps(__m256 x) {
    x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.3365478515625f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = horner(r, poly::kExp);
    __m256 r2 = _mm256_mul_ps(r, r);
    p = _mm256_fmadd_ps(p, r2, r);
    p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
    // 2^n; n in [-126, 128) after the clamp. n = 128 (x near 88.37) is split in two factors.
    __m256i ni = _mm256_cvtps_epi32(n);
    __m256i half = _mm256_srai_epi32(ni, 1);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, _mm256_set1_epi32(127)), 23));
    __m256 s2 = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, half), _mm256_set1_epi32(127)), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
  }
  // sigmoid(x) = 1 / (1 + exp(-x)); exact division keeps the relative error at the exp's.
  __attribute__((always_inline)) friend inline VecF8 sigmoid(VecF8 a) {
    __m256 e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), a.v));
    return VecF8(_mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e)));
  }
  // tanh: Cephes tanhf. |x| < 0.625: x + x^3 P(x^2); otherwise sign(x) (1 - 2 / (exp(2|x|) + 1)).
  __attribute__((always_inline)) friend inline VecF8 tanh(VecF8 a) {
    const __m256 sign_mask = _mm256_set1_ps(-0.0f);
    __m256 ax = _mm256_andnot_ps(sign_mask, a.v);
    __m256 x2 = _mm256_mul_ps(a.v, a.v);
    __m256 p = horner(x2, poly::kTanh);
    __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(p, x2), a.v, a.v);
    __m256 e = exp_ps(_mm256_add_ps(ax, ax));
    __m256 big = _mm256_sub_ps(_mm256_set1_ps(1.0f),
                               _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, _mm256_set1_ps(1.0f))));
    big = _mm256_or_ps(big, _mm256_and_ps(a.v, sign_mask));
    __m256 is_small = _mm256_cmp_ps(ax, _mm256_set1_ps(0.625f), _CMP_LT_OQ);
    return VecF8(_mm256_blendv_ps(big, small, is_small));
  }
  // tanh(x) = x P(x^2) / Q(x^2) on |x| <= 9 (P degree 6, Q degree 3 in x^2; a minimax fit of
  // tanh on [0, 9] made for lstmkit by the differential-correction algorithm), +-1 beyond.
  // Measured max abs error in float32: 4.4e-7 (tanh), 2.6e-7 (sigmoid), i.e. up to ~8 ulp where the
  // Cephes versions above have 1-2. One division and ~13 dependent multiply-adds: about half the
  // work, which made the pointwise pass of the plain time loops ~2x faster standalone. Used only
  // there (FwdLoop/BwdLoop::cells): the layer-norm variant normalises over the hidden units and can
  // amplify these errors (a row of near-equal c~ values, rstd up to 1/sqrt(eps)), so it keeps the
  // accurate functions, as do the streaming steps. NaN stays NaN (min/max return their second
  // operand when one is NaN).
  __attribute__((always_inline)) static inline __m256 tanh_fast_ps(__m256 a) {
    const __m256 lim = _mm256_set1_ps(9.0f);
    const __m256 x = _mm256_max_ps(_mm256_sub_ps(_mm256_setzero_ps(), lim), _mm256_min_ps(lim, a));
    const __m256 z = _mm256_mul_ps(x, x);
    const __m256 p = _mm256_mul_ps(horner(z, poly::kTanhFastP), x);
    const __m256 q = horner(z, poly::kTanhFastQ);
    // |p / q| can round to just above 1 near the clamp: keep tanh in [-1, 1] (and sigmoid >= 0)
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_max_ps(_mm256_sub_ps(_mm256_setzero_ps(), one), _mm256_min_ps(one, _mm256_div_ps(p, q)));
  }
  __attribute__((always_inline)) friend inline VecF8 fast_sigmoid(VecF8 a) {  // (1 + tanh(x / 2)) / 2
    const __m256 h = _mm256_set1_ps(0.5f);
    return VecF8(_mm256_fmadd_ps(tanh_fast_ps(_mm256_mul_ps(a.v, h)), h, h));
  }
  __attribute__((always_inline)) friend inline VecF8 fast_tanh(VecF8 a) { return VecF8(tanh_fast_ps(a.v)); }
};

#if LSTMKIT_HAVE_AVX512
// ---------------------------------------------------------------------------------------------
// float x 16 with AVX-512: the same functions as VecF8, lane for lane the same arithmetic (the
// polynomials and their constants are VecF8's; 2^n of exp comes from scalef, which is exact).
struct VecF16 {
  static constexpr int L = 16;
  __m512 v;
  VecF16() = default;
  explicit VecF16(__m512 x) : v(x) {}
  static inline VecF16 zero() { return VecF16(_mm512_setzero_ps()); }
  static inline VecF16 set1(float a) { return VecF16(_mm512_set1_ps(a)); }
  static inline VecF16 load(const float* p) { return VecF16(_mm512_loadu_ps(p)); }
  static inline __mmask16 mask_n(int n) { return (__mmask16)((1u << n) - 1u); }
  static inline VecF16 load_n(const float* p, int n) { return VecF16(_mm512_maskz_loadu_ps(mask_n(n), p)); }
  inline void store(float* p) const { _mm512_storeu_ps(p, v); }
  inline void stream(float* p) const { _mm512_stream_ps(p, v); }  // p 64-byte aligned
  inline void store_n(float* p, int n) const { _mm512_mask_storeu_ps(p, mask_n(n), v); }
  inline float hsum() const { return _mm512_reduce_add_ps(v); }
  friend inline VecF16 operator+(VecF16 a, VecF16 b) { return VecF16(_mm512_add_ps(a.v, b.v)); }
  friend inline VecF16 operator-(VecF16 a, VecF16 b) { return VecF16(_mm512_sub_ps(a.v, b.v)); }
  friend inline VecF16 operator*(VecF16 a, VecF16 b) { return VecF16(_mm512_mul_ps(a.v, b.v)); }
  friend inline VecF16 fmadd(VecF16 a, VecF16 b, VecF16 c) { return VecF16(_mm512_fmadd_ps(a.v, b.v, c.v)); }
  template <int N>
  __attribute__((always_inline)) static inline __m512 horner(__m512 x, const float (&c)[N]) {
    __m512 p = _mm512_set1_ps(c[0]);
#pragma GCC unroll 8
    for (int k = 1; k < N; ++k) p = _mm512_fmadd_ps(p, x, _mm512_set1_ps(c[k]));
    return p;
  }

  __attribute__((always_inline)) static inline __m512 exp_ps(__m512 x) {
    x = _mm512_min_ps(x, _mm512_set1_ps(88.3762626647949f));
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.3365478515625f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = horner(r, poly::kExp);
    __m512 r2 = _mm512_mul_ps(r, r);
    p = _mm512_fmadd_ps(p, r2, r);
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);  // p * 2^n, n in [-126, 128]
  }
  __attribute__((always_inline)) friend inline VecF16 sigmoid(VecF16 a) {
    __m512 e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), a.v));
    return VecF16(_mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(_mm512_set1_ps(1.0f), e)));
  }
  __attribute__((always_inline)) friend inline VecF16 tanh(VecF16 a) {
    const __m512 sign_mask = _mm512_set1_ps(-0.0f);
    __m512 ax = _mm512_andnot_ps(sign_mask, a.v);
    __m512 x2 = _mm512_mul_ps(a.v, a.v);
    __m512 p = horner(x2, poly::kTanh);
    __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(p, x2), a.v, a.v);
    __m512 e = exp_ps(_mm512_add_ps(ax, ax));
    __m512 big = _mm512_sub_ps(_mm512_set1_ps(1.0f),
                               _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, _mm512_set1_ps(1.0f))));
    big = _mm512_or_ps(big, _mm512_and_ps(a.v, sign_mask));
    __mmask16 is_small = _mm512_cmp_ps_mask(ax, _mm512_set1_ps(0.625f), _CMP_LT_OQ);
    return VecF16(_mm512_mask_blend_ps(is_small, big, small));
  }
  __attribute__((always_inline)) static inline __m512 tanh_fast_ps(__m512 a) {
    const __m512 lim = _mm512_set1_ps(9.0f);
    const __m512 x = _mm512_max_ps(_mm512_sub_ps(_mm512_setzero_ps(), lim), _mm512_min_ps(lim, a));
    const __m512 z = _mm512_mul_ps(x, x);
    const __m512 p = _mm512_mul_ps(horner(z, poly::kTanhFastP), x);
    const __m512 q = horner(z, poly::kTanhFastQ);
    const __m512 one = _mm512_set1_ps(1.0f);
    // p / q as p * (1 / q): rcp14 and one Newton step (q in [1, 2e4]: ~1 ulp of 1 / q) instead of
    // the divider, whose throughput bounds the pointwise pass (one division per gate)
    __m512 r = _mm512_rcp14_ps(q);
    r = _mm512_fmadd_ps(_mm512_fnmadd_ps(q, r, one), r, r);
    return _mm512_max_ps(_mm512_sub_ps(_mm512_setzero_ps(), one), _mm512_min_ps(one, _mm512_mul_ps(p, r)));
  }
  __attribute__((always_inline)) friend inline VecF16 fast_sigmoid(VecF16 a) {
    const __m512 h = _mm512_set1_ps(0.5f);
    return VecF16(_mm512_fmadd_ps(tanh_fast_ps(_mm512_mul_ps(a.v, h)), h, h));
  }
  __attribute__((always_inline)) friend inline VecF16 fast_tanh(VecF16 a) { return VecF16(tanh_fast_ps(a.v)); }
};

template <>
struct VecSel<float> {
  using type = VecF16;
};
#else
template <>
struct VecSel<float> {
  using type = VecF8;
};
#endif
// 8 float lanes whatever the CPU (the int8 kernel's blocks are 8 units wide)
using Vec8f = VecF8;
#else
template <>
struct VecSel<float> {
  using type = VecG<float, 8>;
};
using Vec8f = VecG<float, 8>;
#endif

template <typename T>
using Vec = typename VecSel<T>::type;

// Orders this thread's streaming (non-temporal) stores before its later stores.
inline void stream_fence() {
#if LSTMKIT_HAVE_AVX2
  _mm_sfence();
#endif
}

inline bool compiled_with_avx2() { return LSTMKIT_HAVE_AVX2 != 0; }
inline bool compiled_with_avx512() { return LSTMKIT_HAVE_AVX512 != 0; }

}  // namespace lstmkit
