// lstmkit fused kernels: what the time loops of one LSTM layer share (no torch here): the layouts
// of their buffers and the row helpers. The loops: lstm_forward_loop.h and lstm_backward_loop.h.
//
// Conventions (T steps, B batch, I input, H hidden, P projection, R = P if P > 0 else H; all
// buffers row-major and contiguous; "(T, B, H)" means index (t * B + b) * H + j):
//   L        lanes of Vec<T> (16 floats with AVX-512, 8 with AVX2, 4 doubles)
//   Hp       H rounded up to a multiple of L;  NU = Hp / L "unit blocks" of L hidden units
//   panel    K x 2L block of a right-hand matrix, k-major (see lstm_gemm.h); NV = 2 vectors wide
//
// Packed weights (built by lstm_pack.cpp from torch's layout, read-only here):
//   wf   (NU, 2, R, 2L)   forward recurrent panels: wf[u][half][k][j*L + l] = W_hh[(2*half + j)*H + u*L + l][k]
//                          (half 0 holds gates i, f; half 1 holds g, o; units >= H are 0)
//   wr   (NPP, H, 2L)     forward projection panels, NPP = ceil(P / 2L): wr[p][k][c] = W_hr[p*2L + c][k]
//   wb   (NPR, 4H, 2L)    backward recurrent panels, NPR = ceil(R / 2L): wb[p][k][c] = W_hh[k][p*2L + c]
//   wrb  (NPH, P, 2L)     backward projection panels, NPH = ceil(H / 2L): wrb[p][k][c] = W_hr[k][p*2L + c]
//   wx   (NU, 2, I, 2L)   W_ih packed like wf, when the input projection runs inside the loop
// With kRowNV<T> == 4 (float32 with AVX-512) the row split reads 4L-wide panels instead: wf and wx
// as (NU, K, 4L) (the two halves side by side: gates i, f, g, o of a unit block), wb as
// (ceil(R / 4L), 4H, 4L).
//
// Written by the backward for the weight-gradient GEMM (row split, float32, small layers):
//   dpan (4H / 2L, T*B + 1, 2L)   da in panel layout, dpan[p][tb][c] = da[tb][p*2L + c], streamed
//                                  (non-temporal stores: nothing in the loop reads it); the extra
//                                  row keeps the blocks' stride off a multiple of 4 KB
//
// Threads (lstm_team.h): the caller runs the loops inside one `omp parallel` region for the whole sequence.
// Each thread owns a range of hidden units (and of projection columns, or of batch rows in the
// row-wise layer-norm passes); ranges only change at a barrier (see Team), and every element is
// computed by the same arithmetic whatever the split, so 1 and 2 threads agree bit for bit in the
// time loops. Barriers per step: plain forward 1, backward 1; +1 each with a projection; the
// layer-norm variant needs 2 forward and 2 backward (row statistics need whole rows).
// Row split (`by_rows`, plain loops without projection or layer norm): each thread instead owns a
// range of batch rows and all units. Rows never read each other's state, so the threads meet no
// barrier at all until the end of the sequence; each multiplies its rows by the whole of W_hh
// (chosen by choose_rows in lstm_tuning.h). The threads never wait for each other inside the
// loop, so Team's oversubscription fallback (which watches barrier waits) does not apply there: a
// descheduled thread delays only the end of the call, by at most its own rows' share, instead of
// stalling its partner at every step. With `wx` (either split, chosen by choose_proj_in_loop in
// lstm_tuning.h) the input projection is part of each step's product and the biases are added in
// the pointwise pass: the same sums in another order, so there 1 and 2 threads agree to rounding,
// not bit for bit.
//
// Per step (forward): the recurrent product of the thread's unit blocks goes to a small per-thread
// scratch (hot in L1/L2), then one pointwise pass row by row reads xp and writes gates, c, h in
// memory order. (Computing the pointwise pass directly on the accumulators, unit block by unit
// block across rows, measured ~25% slower: it walks xp/gates with a 4H stride and misses cache.)
#pragma once

#include <algorithm>
#include <cstdint>

#include "lstm_gemm.h"
#include "lstm_team.h"

namespace lstmkit {

// Loads / stores of n <= L lanes (a unit block's tail: the lanes past n read as 0, are not written).
template <typename T>
inline Vec<T> ld(const T* p, int n) {
  return n == Vec<T>::L ? Vec<T>::load(p) : Vec<T>::load_n(p, n);
}
template <typename T>
inline void st(const Vec<T>& v, T* p, int n) {
  if (n == Vec<T>::L)
    v.store(p);
  else
    v.store_n(p, n);
}
template <typename T>
inline void fill_n(T* p, int64_t n, T v) {
  for (int64_t k = 0; k < n; ++k) p[k] = v;
}
template <typename T>
inline void copy_n(const T* s, T* d, int64_t n) {
  for (int64_t k = 0; k < n; ++k) d[k] = s[k];
}

// Software prefetch of the cache lines of p[0, n) (rw = 1: for writing). The forward loop reads and
// writes a few short pieces of each row of the large (T, B, 4H) buffers per step; the hardware
// prefetchers do not follow that pattern, and each piece was an L3 miss at the start of the
// pointwise pass. Prefetching the next pass's pieces before the recurrent product hides them.
template <int RW, typename T>
inline void prefetch_n(const T* p, int64_t n) {
  const char* c = reinterpret_cast<const char*>(p);
  const char* e = reinterpret_cast<const char*>(p + n);
  for (; c < e; c += 64) __builtin_prefetch(c, RW, 3);
}

// Row reductions with a scalar tail (the vector body never reads past n).
template <typename T>
inline T row_sum(const T* a, int64_t n) {
  using V = Vec<T>;
  V s = V::zero();
  int64_t k = 0;
  for (; k + V::L <= n; k += V::L) s = s + V::load(a + k);
  T r = s.hsum();
  for (; k < n; ++k) r += a[k];
  return r;
}
template <typename T>
inline T row_dot(const T* a, const T* b, int64_t n) {
  using V = Vec<T>;
  V s = V::zero();
  int64_t k = 0;
  for (; k + V::L <= n; k += V::L) s = fmadd(V::load(a + k), V::load(b + k), s);
  T r = s.hsum();
  for (; k < n; ++k) r += a[k] * b[k];
  return r;
}
// sum of (a - m)^2
template <typename T>
inline T row_sqdev(const T* a, T m, int64_t n) {
  using V = Vec<T>;
  const V mv = V::set1(m);
  V s = V::zero();
  int64_t k = 0;
  for (; k + V::L <= n; k += V::L) {
    const V d = V::load(a + k) - mv;
    s = fmadd(d, d, s);
  }
  T r = s.hsum();
  for (; k < n; ++k) r += (a[k] - m) * (a[k] - m);
  return r;
}


}  // namespace lstmkit
