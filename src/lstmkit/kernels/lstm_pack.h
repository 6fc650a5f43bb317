// lstmkit fused kernels: torch's weight layout -> the kernels' packed panels (layouts: lstm_loops.h).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace lstmkit {

// (4H, K) -> (4Hp, K) with rows in the interleaved order [u][gate][lane] (Hp: H rounded up to L)
at::Tensor interleave_rows(const at::Tensor& w, int64_t H, int64_t L);
// (4H,) -> (4Hp,) interleaved
at::Tensor interleave_vec(const at::Tensor& b, int64_t H, int64_t L);

// W_hh (4H, R) -> wf (NU, 2, R, 2L), or with wide (the row split with kRowNV == 4) (NU, R, 4L).
at::Tensor pack_wf(const at::Tensor& w_hh, int64_t H, int64_t L, bool wide = false);

// Right-hand matrix Bm (K, N), any strides -> panels (ceil(N / 2L), K, 2L), zero padded.
at::Tensor pack_panels(const at::Tensor& Bm, int64_t L);

// d (cols, rows) = s (rows, cols)^T with leading dimensions lds / ldd, on torch's threads (float, double).
template <typename T>
void transpose_into(const T* s, int64_t rows, int64_t cols, int64_t lds, T* d, int64_t ldd);

}  // namespace lstmkit
