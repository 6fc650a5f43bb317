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

// The activations, written once for the SIMD vector types (VecF8, VecF16). V provides set1, zero,
// + - * and fmadd, and as static members: fnmadd (c - a b), min / max (the second operand when one
// is NaN, as minps / maxps), round_nearest, scale2n (p 2^n), div, fast_div (p / q where an
// approximate reciprocal may do), abs, or_sign (x | the sign bit of s), select_lt (a < c ? x : y)
// and horner.
namespace simd {
#define LSTMKIT_AI __attribute__((always_inline)) inline
// exp(x) for any x: Cephes expf. n = round(x log2 e), r = x - n ln2 in [-ln2/2, ln2/2], exp(r) by a
// degree-7 polynomial, times 2^n. Inputs are clamped to [-87.3, 88.37] so that 2^n stays a normal
// number (results below ~1e-38 come out as ~1e-38).
template <class V>
LSTMKIT_AI V exp(V x) {
  x = V::min(x, V::set1(88.3762626647949f));
  x = V::max(x, V::set1(-87.3365478515625f));
  const V n = V::round_nearest(x * V::set1(1.44269504088896341f));
  V r = V::fnmadd(n, V::set1(0.693359375f), x);
  r = V::fnmadd(n, V::set1(-2.12194440e-4f), r);
  V p = V::horner(r, poly::kExp);
  p = fmadd(p, r * r, r);
  p = p + V::set1(1.0f);
  return V::scale2n(p, n);
}
// sigmoid(x) = 1 / (1 + exp(-x)); exact division keeps the relative error at the exp's.
template <class V>
LSTMKIT_AI V sigmoid(V a) {
  return V::div(V::set1(1.0f), V::set1(1.0f) + exp(V::zero() - a));
}
// tanh: Cephes tanhf. |x| < 0.625: x + x^3 P(x^2); otherwise sign(x) (1 - 2 / (exp(2|x|) + 1)).
template <class V>
LSTMKIT_AI V tanh(V a) {
  const V ax = V::abs(a);
  const V x2 = a * a;
  const V small = fmadd(V::horner(x2, poly::kTanh) * x2, a, a);
  const V e = exp(ax + ax);
  const V big = V::or_sign(V::set1(1.0f) - V::div(V::set1(2.0f), e + V::set1(1.0f)), a);
  return V::select_lt(ax, V::set1(0.625f), small, big);
}
// tanh(x) = x P(x^2) / Q(x^2) on |x| <= 9 (P degree 6, Q degree 3 in x^2; a minimax fit of tanh on
// [0, 9] made for lstmkit by the differential-correction algorithm), +-1 beyond. Measured max abs
// error in float32: 4.4e-7 (tanh), 2.6e-7 (sigmoid), i.e. up to ~8 ulp where the Cephes versions
// above have 1-2. One division and ~13 dependent multiply-adds: about half the work, which made the
// pointwise pass of the plain time loops ~2x faster standalone. Used only there
// (FwdLoop/BwdLoop::cells): the layer-norm variant normalises over the hidden units and can amplify
// these errors (a row of near-equal c~ values, rstd up to 1/sqrt(eps)), so it keeps the accurate
// functions, as do the streaming steps. NaN stays NaN (min/max return their second operand when one
// is NaN).
template <class V>
LSTMKIT_AI V tanh_fast(V a) {
  const V lim = V::set1(9.0f);
  const V x = V::max(V::zero() - lim, V::min(lim, a));
  const V z = x * x;
  const V p = V::horner(z, poly::kTanhFastP) * x;
  const V q = V::horner(z, poly::kTanhFastQ);
  // |p / q| can round to just above 1 near the clamp: keep tanh in [-1, 1] (and sigmoid >= 0)
  const V one = V::set1(1.0f);
  return V::max(V::zero() - one, V::min(one, V::fast_div(p, q)));
}
template <class V>
LSTMKIT_AI V sigmoid_fast(V a) {  // (1 + tanh(x / 2)) / 2
  const V h = V::set1(0.5f);
  return fmadd(tanh_fast(a * h), h, h);
}
#undef LSTMKIT_AI
}  // namespace simd

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
  // the primitives of the activations in namespace simd
  template <int N>
  __attribute__((always_inline)) static inline VecF8 horner(VecF8 x, const float (&c)[N]) {
    __m256 p = _mm256_set1_ps(c[0]);
#pragma GCC unroll 8
    for (int k = 1; k < N; ++k) p = _mm256_fmadd_ps(p, x.v, _mm256_set1_ps(c[k]));
    return VecF8(p);
  }
  static inline VecF8 fnmadd(VecF8 a, VecF8 b, VecF8 c) { return VecF8(_mm256_fnmadd_ps(a.v, b.v, c.v)); }
  static inline VecF8 min(VecF8 a, VecF8 b) { return VecF8(_mm256_min_ps(a.v, b.v)); }
  static inline VecF8 max(VecF8 a, VecF8 b) { return VecF8(_mm256_max_ps(a.v, b.v)); }
  static inline VecF8 round_nearest(VecF8 a) {
    return VecF8(_mm256_round_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  // p 2^n for integral n in [-126, 128]: 2^n built in the exponent bits, in two factors (2^128 is not
  // a float)
  static inline VecF8 scale2n(VecF8 p, VecF8 n) {
    const __m256i ni = _mm256_cvtps_epi32(n.v);
    const __m256i half = _mm256_srai_epi32(ni, 1);
    const __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, _mm256_set1_epi32(127)), 23));
    const __m256 s2 = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, half), _mm256_set1_epi32(127)), 23));
    return VecF8(_mm256_mul_ps(_mm256_mul_ps(p.v, s1), s2));
  }
  static inline VecF8 div(VecF8 a, VecF8 b) { return VecF8(_mm256_div_ps(a.v, b.v)); }
  static inline VecF8 fast_div(VecF8 a, VecF8 b) { return div(a, b); }
  static inline VecF8 abs(VecF8 a) { return VecF8(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), a.v)); }
  static inline VecF8 or_sign(VecF8 x, VecF8 s) {
    return VecF8(_mm256_or_ps(x.v, _mm256_and_ps(s.v, _mm256_set1_ps(-0.0f))));
  }
  static inline VecF8 select_lt(VecF8 a, VecF8 c, VecF8 x, VecF8 y) {
    return VecF8(_mm256_blendv_ps(y.v, x.v, _mm256_cmp_ps(a.v, c.v, _CMP_LT_OQ)));
  }
  __attribute__((always_inline)) friend inline VecF8 sigmoid(VecF8 a) { return simd::sigmoid(a); }
  __attribute__((always_inline)) friend inline VecF8 tanh(VecF8 a) { return simd::tanh(a); }
  __attribute__((always_inline)) friend inline VecF8 fast_sigmoid(VecF8 a) { return simd::sigmoid_fast(a); }
  __attribute__((always_inline)) friend inline VecF8 fast_tanh(VecF8 a) { return simd::tanh_fast(a); }
};

#if LSTMKIT_HAVE_AVX512
// ---------------------------------------------------------------------------------------------
// float x 16 with AVX-512: the same functions as VecF8 (namespace simd); 2^n of exp comes from
// scalef, and tanh_fast's division from rcp14 and one Newton step.
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
  // the primitives of the activations in namespace simd
  template <int N>
  __attribute__((always_inline)) static inline VecF16 horner(VecF16 x, const float (&c)[N]) {
    __m512 p = _mm512_set1_ps(c[0]);
#pragma GCC unroll 8
    for (int k = 1; k < N; ++k) p = _mm512_fmadd_ps(p, x.v, _mm512_set1_ps(c[k]));
    return VecF16(p);
  }
  static inline VecF16 fnmadd(VecF16 a, VecF16 b, VecF16 c) { return VecF16(_mm512_fnmadd_ps(a.v, b.v, c.v)); }
  static inline VecF16 min(VecF16 a, VecF16 b) { return VecF16(_mm512_min_ps(a.v, b.v)); }
  static inline VecF16 max(VecF16 a, VecF16 b) { return VecF16(_mm512_max_ps(a.v, b.v)); }
  static inline VecF16 round_nearest(VecF16 a) {
    return VecF16(_mm512_roundscale_ps(a.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static inline VecF16 scale2n(VecF16 p, VecF16 n) { return VecF16(_mm512_scalef_ps(p.v, n.v)); }  // exact
  static inline VecF16 div(VecF16 a, VecF16 b) { return VecF16(_mm512_div_ps(a.v, b.v)); }
  // a * (1 / b): rcp14 and one Newton step (b in [1, 2e4] in tanh_fast: ~1 ulp of 1 / b) instead of
  // the divider, whose throughput bounds the pointwise pass (one division per gate)
  static inline VecF16 fast_div(VecF16 a, VecF16 b) {
    __m512 r = _mm512_rcp14_ps(b.v);
    r = _mm512_fmadd_ps(_mm512_fnmadd_ps(b.v, r, _mm512_set1_ps(1.0f)), r, r);
    return VecF16(_mm512_mul_ps(a.v, r));
  }
  static inline VecF16 abs(VecF16 a) { return VecF16(_mm512_andnot_ps(_mm512_set1_ps(-0.0f), a.v)); }
  static inline VecF16 or_sign(VecF16 x, VecF16 s) {
    return VecF16(_mm512_or_ps(x.v, _mm512_and_ps(s.v, _mm512_set1_ps(-0.0f))));
  }
  static inline VecF16 select_lt(VecF16 a, VecF16 c, VecF16 x, VecF16 y) {
    return VecF16(_mm512_mask_blend_ps(_mm512_cmp_ps_mask(a.v, c.v, _CMP_LT_OQ), y.v, x.v));
  }
  __attribute__((always_inline)) friend inline VecF16 sigmoid(VecF16 a) { return simd::sigmoid(a); }
  __attribute__((always_inline)) friend inline VecF16 tanh(VecF16 a) { return simd::tanh(a); }
  __attribute__((always_inline)) friend inline VecF16 fast_sigmoid(VecF16 a) { return simd::sigmoid_fast(a); }
  __attribute__((always_inline)) friend inline VecF16 fast_tanh(VecF16 a) { return simd::tanh_fast(a); }
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
