// lstmkit fused kernels: packing of torch's weight layout into the kernels' panels (see the layouts
// in lstm_loops.h), and the transposes they are built from.
#include "lstm_pack.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>

#include "lstm_tensors.h"

namespace lstmkit {

// (4H, K) -> (4Hp, K) with rows in the interleaved order [u][gate][lane]
Tensor interleave_rows(const Tensor& w, int64_t H, int64_t L) {
  const int64_t Hp = round_up(H, L), K = w.size(1);
  Tensor v = w.reshape({4, H, K});
  if (Hp != H) v = at::constant_pad_nd(v, {0, 0, 0, Hp - H});
  return v.reshape({4, Hp / L, L, K}).permute({1, 0, 2, 3}).reshape({4 * Hp, K}).contiguous();
}

// (4H,) -> (4Hp,) interleaved
Tensor interleave_vec(const Tensor& b, int64_t H, int64_t L) {
  return interleave_rows(b.reshape({4 * H, 1}), H, L).reshape({-1});
}

// The packings below are plain loops: they run on every call (the weights change every training
// step), and as ATen permute+copy they cost ~0.25 ms per forward+backward at train-small.

#if LSTMKIT_HAVE_AVX2
// 8 x 8 float block: d[j * ldd + i] = s[i * lds + j]
inline void transpose8x8(const float* s, int64_t lds, float* d, int64_t ldd) {
  __m256 a[8], t[8], u[8];
  for (int k = 0; k < 8; ++k) a[k] = _mm256_loadu_ps(s + k * lds);
  for (int k = 0; k < 4; ++k) {
    t[2 * k] = _mm256_unpacklo_ps(a[2 * k], a[2 * k + 1]);
    t[2 * k + 1] = _mm256_unpackhi_ps(a[2 * k], a[2 * k + 1]);
  }
  for (int k = 0; k < 2; ++k) {
    u[4 * k] = _mm256_shuffle_ps(t[4 * k], t[4 * k + 2], 0x44);
    u[4 * k + 1] = _mm256_shuffle_ps(t[4 * k], t[4 * k + 2], 0xEE);
    u[4 * k + 2] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0x44);
    u[4 * k + 3] = _mm256_shuffle_ps(t[4 * k + 1], t[4 * k + 3], 0xEE);
  }
  for (int k = 0; k < 4; ++k) {
    _mm256_storeu_ps(d + k * ldd, _mm256_permute2f128_ps(u[k], u[k + 4], 0x20));
    _mm256_storeu_ps(d + (k + 4) * ldd, _mm256_permute2f128_ps(u[k], u[k + 4], 0x31));
  }
}
#endif

// d (cols, rows) = s (rows, cols)^T with leading dimensions lds / ldd, one thread: 8 x 8 register
// blocks for float, scalar edges (and double).
template <typename T>
void transpose_block(const T* s, int64_t rows, int64_t cols, int64_t lds, T* d, int64_t ldd) {
  for (int64_t c0 = 0; c0 < cols; c0 += 8) {
    const int64_t nc = std::min<int64_t>(8, cols - c0);
    int64_t r = 0;
#if LSTMKIT_HAVE_AVX2
    if constexpr (std::is_same_v<T, float>) {
      if (nc == 8)
        for (; r + 8 <= rows; r += 8) transpose8x8(s + r * lds + c0, lds, d + c0 * ldd + r, ldd);
    }
#endif
    for (; r < rows; ++r)
      for (int64_t c = 0; c < nc; ++c) d[(c0 + c) * ldd + r] = s[r * lds + c0 + c];
  }
}

// W_hh (4H, R) -> wf (NU, 2, R, 2L): wf[u][half][k][j*L + l] = W_hh[(2*half + j)*H + u*L + l][k], 0 for
// units >= H. wide: the two halves side by side, (NU, R, 4L) (the row split with kRowNV == 4).
template <typename T>
void pack_wf_loop(const T* w, int64_t H, int64_t R, int64_t L, bool wide, T* out) {
  const int64_t NU = (H + L - 1) / L, W = (wide ? 4 : 2) * L;
  for (int64_t u = 0; u < NU; ++u)
    for (int half = 0; half < 2; ++half) {
      // R x 2L (in rows W apart), small: stays in L1 while its 2L rows scatter in
      T* o = wide ? out + u * R * W + half * 2 * L : out + (u * 2 + half) * R * W;
      if ((u + 1) * L <= H) {  // a whole unit block: (L units, R) of each gate transposed into place
        for (int j = 0; j < 2; ++j) transpose_block(w + ((2 * half + j) * H + u * L) * R, L, R, R, o + j * L, W);
        continue;
      }
      for (int j = 0; j < 2; ++j)
        for (int64_t l = 0; l < L; ++l) {
          const int64_t unit = u * L + l;
          T* d = o + j * L + l;
          if (unit >= H) {
            for (int64_t k = 0; k < R; ++k) d[k * W] = T(0);
            continue;
          }
          const T* src = w + ((2 * half + j) * H + unit) * R;
          for (int64_t k = 0; k < R; ++k) d[k * W] = src[k];
        }
    }
}

Tensor pack_wf(const Tensor& w_hh, int64_t H, int64_t L, bool wide) {
  const Tensor w = w_hh.contiguous();
  const int64_t R = w.size(1), NU = round_up(H, L) / L;
  Tensor out = wide ? at::empty({NU, R, 4 * L}, w.options()) : at::empty({NU, 2, R, 2 * L}, w.options());
  AT_DISPATCH_FLOATING_TYPES(w.scalar_type(), "lstmkit_pack_wf", [&] {
    pack_wf_loop<scalar_t>(w.data_ptr<scalar_t>(), H, R, L, wide, out.data_ptr<scalar_t>());
  });
  return out;
}

// transpose_block on both cores, over blocks of 64 destination rows (ATen's transposing copy is
// one thread; for the weight-gradient split at train-small it took ~10 % of a backward's fixed cost)
template <typename T>
void transpose_into(const T* s, int64_t rows, int64_t cols, int64_t lds, T* d, int64_t ldd) {
  at::parallel_for(0, (cols + 63) / 64, 1, [&](int64_t b0, int64_t b1) {
    const int64_t c0 = b0 * 64, c1 = std::min(cols, b1 * 64);
    transpose_block(s + c0, rows, c1 - c0, lds, d + c0 * ldd, ldd);
  });
}

// right-hand matrix Bm (K, N), any strides -> panels (ceil(N / 2L), K, 2L), zero padded:
// panels[q][k][c] = Bm[k][q*2L + c]
template <typename T>
void pack_panels_loop(const T* b, int64_t K, int64_t N, int64_t sk, int64_t sn, int64_t W, T* out) {
  const int64_t NP = (N + W - 1) / W;
  for (int64_t q = 0; q < NP; ++q) {
    T* o = out + q * K * W;
    const int64_t n0 = q * W, nn = std::min<int64_t>(W, N - n0);
    if (sk == 1 && nn == W) {  // a transposed contiguous matrix: its W rows transposed into the panel
      transpose_block(b + n0 * sn, W, K, sn, o, W);
      continue;
    }
    if (sn == 1) {  // rows contiguous: copy 2L at a time
      for (int64_t k = 0; k < K; ++k) {
        const T* s = b + k * sk + n0;
        T* d = o + k * W;
        for (int64_t c = 0; c < nn; ++c) d[c] = s[c];
        for (int64_t c = nn; c < W; ++c) d[c] = T(0);
      }
    } else {  // e.g. a transposed weight: walk each source column (contiguous when sk == 1)
      for (int64_t c = 0; c < W; ++c) {
        T* d = o + c;
        if (c >= nn) {
          for (int64_t k = 0; k < K; ++k) d[k * W] = T(0);
          continue;
        }
        const T* s = b + (n0 + c) * sn;
        for (int64_t k = 0; k < K; ++k) d[k * W] = s[k * sk];
      }
    }
  }
}

Tensor pack_panels(const Tensor& Bm, int64_t L) {
  const int64_t K = Bm.size(0), N = Bm.size(1), W = 2 * L, NP = (N + W - 1) / W;
  Tensor out = at::empty({NP, K, W}, Bm.options());
  AT_DISPATCH_FLOATING_TYPES(Bm.scalar_type(), "lstmkit_pack_panels", [&] {
    pack_panels_loop<scalar_t>(Bm.data_ptr<scalar_t>(), K, N, Bm.stride(0), Bm.stride(1), W, out.data_ptr<scalar_t>());
  });
  return out;
}


template void transpose_into<float>(const float*, int64_t, int64_t, int64_t, float*, int64_t);
template void transpose_into<double>(const double*, int64_t, int64_t, int64_t, double*, int64_t);

}  // namespace lstmkit
