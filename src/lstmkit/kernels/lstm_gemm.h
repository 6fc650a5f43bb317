// lstmkit fused kernels: the register-blocked micro-kernel and the packed panel layout.
//
// A "panel" is a K x (NV*L) block of the right-hand matrix stored k-major and contiguous:
//     panel[k * NV*L + j*L + l]      (j < NV vectors of L lanes)
// The micro-kernel multiplies MR rows of a row-major left matrix A (leading dimension lda) by one
// panel and leaves the MR x NV vector accumulators in registers for the caller's epilogue, so the
// LSTM pointwise work happens on the freshly computed pre-activations without a round trip
// through memory. With AVX2 floats MR * NV <= 12 keeps everything in the 16 ymm registers; AVX-512
// has 32 zmm registers, room for MR * NV <= 28 (kMRMax: the tallest row block the loops use).
#pragma once

#include <type_traits>

#include "lstm_simd.h"

namespace lstmkit {

template <typename T>
constexpr int kMRMax = Vec<T>::L == 16 ? 12 : 6;

// The row-split time loops multiply a thread's few rows (4 at train-small) by all of W_hh: with
// AVX-512 their panels are 4L wide (MR x 4 accumulators, MR <= 6), which shares each broadcast row
// value among 4 vectors (standalone, 4 rows: 84-90 multiply-adds/ns against 66-73 for 2L panels).
// With AVX2 there are not registers enough for that: 2L.
template <typename T>
constexpr int kRowNV = Vec<T>::L == 16 ? 4 : 2;

template <typename T, int MR, int NV>
struct Acc {
  Vec<T> v[MR][NV];
};

// acc = A[0:MR, 0:K] @ panel (K x NV*L)   (ADD: acc += ...)
template <typename T, int MR, int NV, bool ADD = false>
inline void microkernel(const T* __restrict A, int64_t lda, const T* __restrict panel, int64_t K,
                        Acc<T, MR, NV>& acc) {
  using V = Vec<T>;
  constexpr int L = V::L;
  if constexpr (!ADD) {
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc.v[m][j] = V::zero();
  }
  const T* a[MR];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m) a[m] = A + m * lda;
#pragma GCC unroll 4
  for (int64_t k = 0; k < K; ++k) {
    const T* bp = panel + k * (NV * L);
    V b[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) b[j] = V::load(bp + j * L);
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      V am = V::set1(a[m][k]);
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc.v[m][j] = fmadd(am, b[j], acc.v[m][j]);
    }
  }
}

// for_row_blocks2 runs fn(row0, Acc<T, mr, NV>&) over the rows [0, M), each block of mr <= MRMAX
// rows of [A | A2] multiplied by the same stacked panel [panel; panel2] (K + K2 rows; A2 == nullptr:
// just A @ panel, which is for_row_blocks). The rows are split evenly (32 rows with MRMAX 6 ->
// 6,6,5,5,5,5; 8 -> 4,4) because a block of 1 or 2 rows runs at a fraction of the speed. fn is a
// generic lambda, instantiated for every block height 1..MRMAX.
template <typename T, int NV, int MR, typename F>
inline void run_block2(const T* A, int64_t lda, const T* panel, int64_t K, const T* A2, int64_t lda2,
                       const T* panel2, int64_t K2, int64_t r, F& fn) {
  Acc<T, MR, NV> acc;
  microkernel<T, MR, NV>(A + r * lda, lda, panel, K, acc);
  if (A2) microkernel<T, MR, NV, true>(A2 + r * lda2, lda2, panel2, K2, acc);
  fn(r, acc);
}

// f(std::integral_constant<int, n>{}) for a run-time n in 1..MAX: a kernel templated on its height
// picked at run time
template <int MAX, int N = 1, typename F>
inline void with_height(int64_t n, F&& f) {
  if constexpr (N < MAX) {
    if (n != N) {
      with_height<MAX, N + 1>(n, f);
      return;
    }
  }
  f(std::integral_constant<int, N>{});
}

template <typename T, int MRMAX, int NV, typename F>
inline void for_row_blocks2(const T* A, int64_t lda, const T* panel, int64_t K, const T* A2, int64_t lda2,
                            const T* panel2, int64_t K2, int64_t M, F&& fn) {
  static_assert(MRMAX >= 1 && MRMAX <= 14, "MRMAX in 1..14");
  if (M <= 0) return;
  const int64_t nb = (M + MRMAX - 1) / MRMAX;
  const int64_t base = M / nb, extra = M % nb;
  int64_t r = 0;
  for (int64_t blk = 0; blk < nb; ++blk) {
    const int64_t mr = base + (blk < extra ? 1 : 0);
    with_height<MRMAX>(mr, [&](auto h) {
      run_block2<T, NV, decltype(h)::value>(A, lda, panel, K, A2, lda2, panel2, K2, r, fn);
    });
    r += mr;
  }
}

template <typename T, int MRMAX, int NV, typename F>
inline void for_row_blocks(const T* A, int64_t lda, const T* panel, int64_t K, int64_t M, F&& fn) {
  for_row_blocks2<T, MRMAX, NV>(A, lda, panel, K, (const T*)nullptr, 0, (const T*)nullptr, 0, M, fn);
}

}  // namespace lstmkit
