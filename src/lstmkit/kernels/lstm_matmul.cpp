// lstmkit fused kernels: the whole-sequence matrix products (see lstm_matmul.h).
#include "lstm_matmul.h"

#include <algorithm>

#include "lstm_loops.h"
#include "lstm_pool.h"

namespace lstmkit {

using at::Tensor;

void gemm_rows(const float* A, int64_t lda, int64_t M, int64_t K, const float* panels, int64_t N, float* C,
               const float* bias, int nt) {
  using V = Vec<float>;
  constexpr int L = V::L, NV = 2, W = NV * L;
  const int64_t NP = (N + W - 1) / W;
  constexpr int64_t kChunk = 48;
  const int64_t chunks = (M + kChunk - 1) / kChunk;
  parallel_region(nt, [&](Team& team, int p) {
    int64_t c0, c1;
    split_range(chunks, p, team.active(), c0, c1);
    for (int64_t ch = c0; ch < c1; ++ch) {
      const int64_t r0 = ch * kChunk, rows = std::min<int64_t>(kChunk, M - r0);
      for (int64_t q = 0; q < NP; ++q) {
        const int64_t col = q * W;
        const int n0 = (int)std::min<int64_t>(L, N - col), n1 = (int)std::max<int64_t>(0, std::min<int64_t>(L, N - col - L));
        V b0 = bias ? ld(bias + col, n0) : V::zero();
        V b1 = bias && n1 > 0 ? ld(bias + col + L, n1) : V::zero();
        for_row_blocks<float, 6, NV>(A + r0 * lda, lda, panels + q * K * W, K, rows, [&](int64_t rb, auto& acc) {
          constexpr int mr = sizeof(acc.v) / sizeof(acc.v[0]);
          for (int m = 0; m < mr; ++m) {
            float* c = C + (r0 + rb + m) * N + col;
            st(acc.v[m][0] + b0, c, n0);
            if (n1 > 0) st(acc.v[m][1] + b1, c + L, n1);
          }
        });
      }
    }
  });
}

template <int MR>
inline void tn_tile(const float* __restrict a, int64_t lda, const float* __restrict d, int64_t kn,
                    float* __restrict tile, bool first) {
  using V = Vec<float>;
  constexpr int L = V::L;
  V c0[MR], c1[MR];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m) c0[m] = c1[m] = V::zero();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kn; ++k) {
    const V d0 = V::load(d + k * 2 * L), d1 = V::load(d + k * 2 * L + L);
    const float* ak = a + k * lda;
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      const V am = V::set1(ak[m]);
      c0[m] = fmadd(am, d0, c0[m]);
      c1[m] = fmadd(am, d1, c1[m]);
    }
  }
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m) {
    float* o = tile + m * 2 * L;
    if (!first) {
      c0[m] = c0[m] + V::load(o);
      c1[m] = c1[m] + V::load(o + L);
    }
    c0[m].store(o);
    c1[m].store(o + L);
  }
}

int64_t weight_grad_tile_bytes(int64_t N, std::initializer_list<int64_t> Ms, int nt) {
  constexpr int64_t W = 2 * Vec<float>::L;
  const int64_t NP = (N + W - 1) / W, ntt = std::max<int64_t>(1, std::min<int64_t>(nt, NP));
  int64_t NB = 0;
  for (int64_t M : Ms) NB += (M + kDwMR - 1) / kDwMR;
  return (NP + ntt - 1) / ntt * NB * kDwMR * W * (int64_t)sizeof(float);
}

void weight_grad_gemm(const float* D, int64_t K, int64_t N, const std::vector<AGroup>& groups, int nt,
                      int64_t d_ks) {
  const bool d_pan = d_ks > 0;
  using V = Vec<float>;
  constexpr int L = V::L, W = 2 * L, kMR = kDwMR;
  constexpr int64_t kKc = 128;
  struct Blk {
    int g, mr;
    int64_t m0;
  };
  std::vector<Blk> blks;  // column blocks of <= kMR, evenly sized per group (a block of 1-2 columns is slow)
  for (int g = 0; g < (int)groups.size(); ++g) {
    const int64_t M = groups[g].M;
    if (M <= 0) continue;
    const int64_t nb = (M + kMR - 1) / kMR, base = M / nb, extra = M % nb;
    int64_t m0 = 0;
    for (int64_t b = 0; b < nb; ++b) {
      const int mr = (int)(base + (b < extra ? 1 : 0));
      blks.push_back({g, mr, m0});
      m0 += mr;
    }
  }
  const int64_t NP = (N + W - 1) / W, NB = (int64_t)blks.size();
  if (NB == 0 || N == 0) return;
  if (K == 0) {
    for (const auto& g : groups) std::fill_n(g.out, N * g.M, 0.0f);
    return;
  }
  nt = (int)std::max<int64_t>(1, std::min<int64_t>(nt, NP));
  const int64_t npt = (NP + nt - 1) / nt;  // panels per thread, at most
  Tensor tiles = pooled({nt, npt * NB * kMR * W}, at::TensorOptions().dtype(at::kFloat));
  // (panel blocks kKc + 1 rows apart: a multiple of 4 KB would put every panel's row k in one L1 set)
  Tensor dbuf = d_pan ? Tensor() : pooled({nt, npt * (kKc + 1) * W}, at::TensorOptions().dtype(at::kFloat));
  parallel_region(nt, [&](Team& team, int p) {
    int64_t q0, q1;
    split_range(NP, p, team.active(), q0, q1);
    if (q0 >= q1) return;
    float* tb = tiles.data_ptr<float>() + p * npt * NB * kMR * W;
    float* db = d_pan ? nullptr : dbuf.data_ptr<float>() + p * npt * (kKc + 1) * W;
    for (int64_t kb = 0; kb < K; kb += kKc) {
      const int64_t kn = std::min<int64_t>(kKc, K - kb);
      for (int64_t k = 0; !d_pan && k < kn; ++k) {  // pack my panels of rows [kb, kb + kn), zero past N
        const float* s = D + (kb + k) * N;
        for (int64_t q = q0; q < q1; ++q) {
          const int64_t c = q * W;
          float* o = db + (q - q0) * (kKc + 1) * W + k * W;
          const int n0 = (int)std::min<int64_t>(L, N - c), n1 = (int)std::max<int64_t>(0, std::min<int64_t>(L, N - c - L));
          ld(s + c, n0).store(o);
          (n1 > 0 ? ld(s + c + L, n1) : V::zero()).store(o + L);
        }
      }
      for (int64_t q = q0; q < q1; ++q) {
        const float* dp = d_pan ? D + q * d_ks + kb * W : db + (q - q0) * (kKc + 1) * W;
        for (int64_t bi = 0; bi < NB; ++bi) {
          const Blk& b = blks[bi];
          const AGroup& g = groups[b.g];
          float* tile = tb + ((q - q0) * NB + bi) * kMR * W;
          for (int s = 0; s < g.nseg; ++s) {
            const ASeg& sg = g.seg[s];
            const int64_t k0 = std::max(kb, sg.k0), k1 = std::min(kb + kn, sg.k1);
            if (k0 >= k1) continue;
            const float* a = sg.a + (k0 - sg.k0) * sg.lda + b.m0;
            const float* d = dp + (k0 - kb) * W;
            const bool first = k0 == 0;
            with_height<kMR>(b.mr, [&](auto h) {
              tn_tile<decltype(h)::value>(a, sg.lda, d, k1 - k0, tile, first);
            });
          }
        }
      }
    }
    for (int64_t q = q0; q < q1; ++q)  // tiles (mr x 2L) -> out rows q*2L + j, columns m0 .. m0 + mr
      for (int64_t bi = 0; bi < NB; ++bi) {
        const Blk& b = blks[bi];
        const AGroup& g = groups[b.g];
        const float* tile = tb + ((q - q0) * NB + bi) * kMR * W;
        const int64_t nj = std::min<int64_t>(W, N - q * W);
        for (int64_t j = 0; j < nj; ++j) {
          float* o = g.out + (q * W + j) * g.M + b.m0;
          for (int m = 0; m < b.mr; ++m) o[m] = tile[m * W + j];
        }
      }
  });
}

}  // namespace lstmkit
