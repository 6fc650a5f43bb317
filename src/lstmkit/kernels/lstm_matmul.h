// lstmkit fused kernels: the whole-sequence matrix products that run outside the time loops, on
// the kernels' own register-blocked micro-kernel (float32): the input projection and dx
// (gemm_rows), the weight gradients (weight_grad_gemm). ATen's GEMM covers the other cases.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <vector>

#include "lstm_simd.h"

namespace lstmkit {

// C (M, N) = A (M, K) @ Bm (K, N) [+ bias (N)], A row-major with leading dimension lda, Bm given as
// its panels (pack_panels), C contiguous. float32 only (the callers use ATen's GEMM otherwise).
// The kernels' own register-blocked micro-kernel: the threads split the rows; each thread walks
// chunks of 48 rows (in L1/L2) against every panel (Bm, packed, stays in L2). On the EPYC VM
// it ran the LSTM's input projection and dx products at 1.16-1.46x MKL's speed (skinny K and N).
void gemm_rows(const float* A, int64_t lda, int64_t M, int64_t K, const float* panels, int64_t N, float* C,
               const float* bias, int nt);

// ------------------------------------------------------------------------------------------------
// The weight gradients W_g (N, M_g) = D^T A_g for one or more column groups A_g (K, M_g) of the
// left factors (x_t and h_{t-1}), D (K, N) = the gradient of the gate pre-activations; all row-major
// with K = T * B rows, nothing transposed or concatenated first. float32.
// The threads split D's columns in panels of 2L. Per block of kKc rows, each thread copies its
// panels into a contiguous kKc x 2L layout (D's rows are 2 KB apart at H = 128, so read in place a
// panel's rows would fall into two L1 sets) and multiplies every block of <= 6 columns of A,
// broadcast from A's rows (in L2), into 6 x 2L tiles accumulated in a per-thread buffer; the tiles
// are written out transposed at the end. At train-small's shapes (K 1600, M 192, N 512) it ran at
// ~75 multiply-adds/ns on two cores, where MKL's A^T @ D reached ~60.
struct ASeg {
  const float* a = nullptr;  // row k0 of A's column group
  int64_t lda = 0, k0 = 0, k1 = 0;
};
struct AGroup {
  ASeg seg[2];  // rows [seg.k0, seg.k1) of A, together covering [0, K): h_{t-1} is h0, then y
  int nseg = 1;
  int64_t M = 0;
  float* out = nullptr;  // (N, M) row-major
};

// tallest tile of weight_grad_gemm: MR x 2L accumulators + 2 + 1 registers (16 ymm / 32 zmm)
constexpr int kDwMR = Vec<float>::L == 16 ? 12 : 6;

// Bytes of weight_grad_gemm's tiles per thread (the rule that uses it: own_weight_grad_fits,
// lstm_tuning.h).
int64_t weight_grad_tile_bytes(int64_t N, std::initializer_list<int64_t> Ms, int nt);

// d_ks > 0: D is given in panel layout, blocks of (K, 2L) d_ks apart (as the row-split backward loop
// writes it): no packing.
void weight_grad_gemm(const float* D, int64_t K, int64_t N, const std::vector<AGroup>& groups, int nt,
                      int64_t d_ks = 0);

}  // namespace lstmkit
