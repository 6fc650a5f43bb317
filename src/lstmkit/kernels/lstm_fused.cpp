// lstmkit fused kernels: the torch binding (packing, the large GEMMs, the thread region) and the
// streaming step. The time loops themselves are in lstm_fused.h.
//
// Built on first use by lstmkit/kernels/_build.py through torch.utils.cpp_extension.load with
// -O3 -march=native -fopenmp. Python calls these functions only through lstmkit.kernels.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <string>
#include <type_traits>
#if __has_include(<unistd.h>)
#include <unistd.h>
#endif
#include <vector>

#include "lstm_fused.h"

using at::Tensor;
using c10::optional;

namespace lstmkit {

// --- large working buffers, kept between calls ---------------------------------------------------
// A training step allocates a few buffers of T*B*4H floats (the input projection, the gates, the
// gate gradients: 52 MB each at train-large). From the system allocator they come back as fresh
// pages on every call (glibc maps anything over 32 MB anew, and trims its heap), and each first
// touch of a page is a fault that zeroes it: ~55,000 faults per train-large forward+backward, tens
// of milliseconds on this VM. The pool keeps such buffers and hands one out again once nothing else
// holds it (its storage's reference count is back to the pool's own), so a steady training or
// inference loop allocates nothing. Bounded: at most kMaxBytes in the pool (free buffers are
// dropped first; past the bound a request is served by a plain allocation). release() frees the
// free buffers (lstmkit.kernels.release_buffers()).
class BufferPool {
 public:
  static constexpr int64_t kMinBytes = 1 << 18;
  static constexpr int64_t kMaxBytes = int64_t(1) << 30;

  static BufferPool& instance() {
    static BufferPool* p = new BufferPool();  // never destroyed: tensors may outlive static destruction
    return *p;
  }

  // Like at::empty(shape, opts) (uninitialised, contiguous).
  at::Tensor empty(at::IntArrayRef shape, const at::TensorOptions& opts) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    const int64_t bytes = n * (int64_t)c10::elementSize(c10::typeMetaToScalarType(opts.dtype()));
    if (bytes < kMinBytes || !opts.device().is_cpu()) return at::empty(shape, opts);
    std::lock_guard<std::mutex> g(mu_);
    int best = -1;
    for (int k = 0; k < (int)bufs_.size(); ++k) {
      const at::Tensor& b = bufs_[k];
      if (b.scalar_type() != c10::typeMetaToScalarType(opts.dtype()) || b.storage().use_count() != 1) continue;
      const int64_t cap = b.numel();
      if (cap < n || cap > 2 * n + (kMinBytes / 4)) continue;  // no much larger buffer for a small request
      if (best < 0 || cap < bufs_[best].numel()) best = k;
    }
    if (best >= 0) return bufs_[best].narrow(0, 0, n).view(shape);
    drop_free(kMaxBytes - bytes);  // a new buffer: make room by dropping free ones
    if (total_ + bytes > kMaxBytes) return at::empty(shape, opts);
    at::Tensor b = at::empty({n}, opts);
    bufs_.push_back(b);
    total_ += bytes;
    return b.view(shape);
  }

  // Frees the buffers nothing else holds; returns the bytes still pooled (held by live tensors).
  int64_t release() {
    std::lock_guard<std::mutex> g(mu_);
    drop_free(0);
    return total_;
  }

  int64_t bytes() {
    std::lock_guard<std::mutex> g(mu_);
    return total_;
  }

 private:
  // Drops buffers nothing else holds, newest first, until at most `keep` bytes are pooled (mu_ held).
  void drop_free(int64_t keep) {
    for (int k = (int)bufs_.size() - 1; k >= 0 && total_ > keep; --k)
      if (bufs_[k].storage().use_count() == 1) {
        total_ -= bufs_[k].nbytes();
        bufs_.erase(bufs_.begin() + k);
      }
  }

  std::mutex mu_;
  std::vector<at::Tensor> bufs_;
  int64_t total_ = 0;
};

inline at::Tensor pooled(at::IntArrayRef shape, const at::TensorOptions& opts) {
  return BufferPool::instance().empty(shape, opts);
}

namespace {

inline bool has(const optional<Tensor>& t) { return t.has_value() && t->defined(); }

template <typename T>
inline const T* ptr_or_null(const optional<Tensor>& t) {
  return has(t) ? t->data_ptr<T>() : nullptr;
}

inline int64_t round_up(int64_t a, int64_t m) { return (a + m - 1) / m * m; }

int lanes_for(at::ScalarType st) { return st == at::kFloat ? Vec<float>::L : Vec<double>::L; }

// --- packing (torch layout -> kernel layout; see lstm_fused.h) ----------------------------------

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

Tensor pack_wf(const Tensor& w_hh, int64_t H, int64_t L, bool wide = false) {
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

// requested > 0: at most that many threads; < 0: exactly -requested threads (tests); 0: torch's setting
int choose_threads(int64_t requested, int64_t B, int64_t R, int64_t H) {
  if (requested < 0) return (int)-requested;
  int nt = requested > 0 ? (int)requested : at::get_num_threads();
  // Below ~32k multiply-adds per step a barrier costs more than the second core saves.
  if (B * R * 4 * H < 32768) nt = 1;
  return std::max(1, nt);
}

// How the threads of a time loop share the work: 0 chosen here (auto), 1 unit blocks, 2 batch rows
// where legal (tests and benchmarks force each way through set_thread_split).
std::atomic<int>& split_override() {
  static std::atomic<int> v{0};
  return v;
}

// Row split of the plain time loops (see lstm_fused.h): legal without a projection and layer norm
// (and, backward, without peepholes, whose gradient sums over rows). Each thread then multiplies
// its rows by the whole of W_hh instead of by its columns, and the barrier of every step goes. It
// needs rows enough per thread for the micro-kernel (a block of 1-3 rows runs at a fraction of its
// speed). Measured on the AMD EPYC (Zen 3, AVX2) VM (forward+backward time, 2 threads, rows /
// units): B 8 H 128 (train-small) 0.85-0.99, B 32 H 256 0.97, B 64 H 512 0.92, B 8 H 512 0.98; but
// B 4 H 128 1.10, B 6 H 128 1.06: rows from 4 per thread.
// On the Intel Xeon (AVX-512) VM, whose 2 MB L2 per core is backed by a slower L3, rows pay when
// every thread reading all of W_hh each step stays in L2: B 8 H 128 0.82, B 32 H 256 0.94, but
// B 64 H 512 (4 MB of W_hh) 1.02 forward+backward and 1.04-1.09 inference, B 8 H 512 1.65
// inference. There the row split needs W_hh <= the L2 size as well (the AVX-512 build stands for
// that machine: both rules are measurements, not a model).
// A core's L2 in bytes (glibc's sysconf; 512 KB where unknown).
int64_t l2_bytes() {
  static const int64_t v = [] {
    long s = 0;
#ifdef _SC_LEVEL2_CACHE_SIZE
    s = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    return s > 0 ? (int64_t)s : (int64_t)512 * 1024;
  }();
  return v;
}

bool choose_rows(int nt, int64_t B, int64_t whh_bytes, bool legal) {
  if (!legal || nt < 2) return false;
  const int o = split_override().load(std::memory_order_relaxed);
  if (o != 0) return o == 2;
  if (compiled_with_avx512() && whh_bytes > l2_bytes()) return false;
  return B >= 4 * nt;
}

// The input projection inside the time loop ([x_t | h_{t-1}] @ [W_ih | W_hh]^T, plain layers
// without a projection or layer norm): the (T, B, 4H) projections then never go through memory.
//  * Row split: while [W_ih | W_hh], which each core reads every step, takes <= 384 KB (AVX2 build;
//    3/4 of the Zen 3 VM's 512 KB L2: train-small inference ~4 % faster, training within noise), or
//    <= 3/4 of a core's L2 (AVX-512 build; 1.5 MB on the Xeon VM: train-mid inference 4 % faster,
//    training even).
//  * Unit split (AVX-512 build, see choose_rows): from 32 rows, where a thread's share of the
//    weights is used by many rows per read. Xeon VM, with / without: B 64 H 512 0.90 inference,
//    0.96 forward+backward; B 64 I 1024 H 512 0.90; but B 16 H 512 1.02, B 8 H 512 1.20.
bool choose_proj_in_loop(bool by_rows, int64_t B, int64_t w_bytes, bool legal) {
  if (!legal) return false;
  if (by_rows) return compiled_with_avx512() ? w_bytes * 4 <= l2_bytes() * 3 : w_bytes <= 384 * 1024;
  return compiled_with_avx512() && B >= 32;
}

// Denormal floats (e.g. vanishing gradients far back in a long sequence) make x86 arithmetic
// ~100x slower; inside the time loops they are flushed to zero (values below ~1e-38 for float32),
// and each thread's mode is restored on the way out.
struct FlushDenormals {
#if LSTMKIT_HAVE_AVX2
  unsigned int saved = _mm_getcsr();
  FlushDenormals() { _mm_setcsr(saved | 0x8040u); }  // FTZ | DAZ
  ~FlushDenormals() { _mm_setcsr(saved); }
#endif
};

// Runs fn(team, p) on nt threads (one OpenMP region for the whole sequence), or on the calling
// thread alone when nt == 1 or when a recent call found the cores oversubscribed (see Team).
template <typename F>
void parallel_region(int nt, const F& fn) {
#ifdef _OPENMP
  if (nt > 1 && now_ns() >= single_thread_until_ns().load(std::memory_order_relaxed)) {
    Team team(nt);
#pragma omp parallel num_threads(nt)
    {
      const int p = omp_get_thread_num();
      FlushDenormals ftz;
      if (omp_get_num_threads() == team.size()) {
        fn(team, p);
      } else if (p == 0) {  // fewer threads than asked (nested region): run alone
        Team solo(1);
        fn(solo, 0);
      }
    }
    return;
  }
#endif
  FlushDenormals ftz;
  Team solo(1);
  fn(solo, 0);
}

// C (M, N) = A (M, K) @ Bm (K, N) [+ bias (N)], A row-major with leading dimension lda, Bm given as
// its panels (pack_panels), C contiguous. float32 only (the callers use ATen's GEMM otherwise).
// The kernels' own register-blocked micro-kernel: the threads split the rows; each thread walks
// chunks of 48 rows (in L1/L2) against every panel (Bm, packed, stays in L2). On this machine
// it ran the LSTM's input projection and dx products at 1.16-1.46x MKL's speed (skinny K and N).
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

// Threads for one gemm_rows call: as requested (torch's setting by default), one below ~1M multiply-adds.
int gemm_threads(int64_t requested, int64_t macs) {
  if (requested < 0) return (int)-requested;
  const int nt = requested > 0 ? (int)requested : at::get_num_threads();
  return macs < (1 << 20) ? 1 : std::max(1, nt);
}

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

// Bytes of weight_grad_gemm's tiles per thread. The kernel is used while they fit in a core's L2 with
// room to spare (train-small: 200 KB); larger layers go to MKL (at train-large, 3 MB of tiles per thread
// made the whole forward+backward ~5 % slower than MKL; train-mid, 0.8 MB, was even).
constexpr int64_t kOwnDwTileBytes = 256 * 1024;
int64_t weight_grad_tile_bytes(int64_t N, std::initializer_list<int64_t> Ms, int nt) {
  constexpr int64_t W = 2 * Vec<float>::L;
  const int64_t NP = (N + W - 1) / W, ntt = std::max<int64_t>(1, std::min<int64_t>(nt, NP));
  int64_t NB = 0;
  for (int64_t M : Ms) NB += (M + kDwMR - 1) / kDwMR;
  return (NP + ntt - 1) / ntt * NB * kDwMR * W * (int64_t)sizeof(float);
}

// d_ks > 0: D is given in panel layout, blocks of (K, 2L) d_ks apart (as the row-split backward loop
// writes it): no packing.
void weight_grad_gemm(const float* D, int64_t K, int64_t N, const std::vector<AGroup>& groups, int nt,
                      int64_t d_ks = 0) {
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

void check_tensor(const Tensor& t, const char* name, at::ScalarType st, int64_t dim) {
  TORCH_CHECK(t.defined(), "lstmkit fused kernel: ", name, " is undefined");
  TORCH_CHECK(t.device().is_cpu(), "lstmkit fused kernel: ", name, " must be on the CPU");
  TORCH_CHECK(t.scalar_type() == st, "lstmkit fused kernel: ", name, " has dtype ", t.scalar_type(),
              ", expected ", st);
  TORCH_CHECK(t.dim() == dim, "lstmkit fused kernel: ", name, " must have ", dim, " dimensions, got ",
              t.sizes());
}

}  // namespace

// ================================================================================================
// forward of one layer, one direction
// returns {y (T,B,R), h_T (B,R), c_T (B,H), gates (T,B,4H) or empty, c_all (T+1,B,H) with
//          store_gates (else two (B,H) states used in turn: (min(T+1, 2),B,H), not a history),
//          h_all (T+1,B,R) with lengths or empty, c_til (T,B,H) with zoneout_c or empty,
//          hc (T,B,H) with a projection or empty,
//          with layer_norm (else empty): zx = x W_ih^T (T*B,4H), its LN mean and rstd (T*B,1),
//          zhat (T,B,4H) normalised h W_hh^T, rstd_h (T,B), stat_c (T,B,2) mean and rstd of c~}
// ================================================================================================
std::vector<Tensor> fused_forward(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
                                  const Tensor& w_hh, const optional<Tensor>& b_ih,
                                  const optional<Tensor>& b_hh, const optional<Tensor>& w_hr,
                                  const optional<Tensor>& peep, const optional<Tensor>& zc,
                                  const optional<Tensor>& zh, const optional<Tensor>& lengths,
                                  const std::vector<Tensor>& ln, bool coupled, bool store_gates,
                                  int64_t num_threads) {
  const auto st = x.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble, "lstmkit fused kernel: dtype must be float32 or float64");
  check_tensor(x, "x", st, 3);
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = c0.size(1);
  const int64_t P = has(w_hr) ? w_hr->size(0) : 0, R = P > 0 ? P : H;
  check_tensor(h0, "h0", st, 2);
  check_tensor(c0, "c0", st, 2);
  check_tensor(w_ih, "w_ih", st, 2);
  check_tensor(w_hh, "w_hh", st, 2);
  TORCH_CHECK(h0.size(0) == B && h0.size(1) == R && c0.size(0) == B, "lstmkit fused kernel: bad state shapes");
  TORCH_CHECK(w_ih.size(0) == 4 * H && w_ih.size(1) == I, "lstmkit fused kernel: w_ih must be (4H, I)");
  TORCH_CHECK(w_hh.size(0) == 4 * H && w_hh.size(1) == R, "lstmkit fused kernel: w_hh must be (4H, R)");
  if (P > 0) {
    check_tensor(*w_hr, "w_hr", st, 2);
    TORCH_CHECK(w_hr->size(1) == H, "lstmkit fused kernel: w_hr must be (P, H)");
  }
  if (has(peep)) check_tensor(*peep, "peephole", st, 2);
  if (has(zc)) check_tensor(*zc, "zoneout_c", st, 3);
  if (has(zh)) check_tensor(*zh, "zoneout_h", st, 3);
  if (has(lengths))
    TORCH_CHECK(lengths->scalar_type() == at::kLong && lengths->numel() == B && lengths->device().is_cpu(),
                "lstmkit fused kernel: lengths must be an int64 CPU tensor of shape (B,)");
  const int64_t L = lanes_for(st), Hp = round_up(H, L), NU = Hp / L;
  auto opts = x.options();

  const bool with_ln = !ln.empty();
  TORCH_CHECK(ln.empty() || ln.size() == 6, "lstmkit fused kernel: ln must hold 6 tensors");
  if (with_ln) {
    for (int k = 0; k < 6; ++k) check_tensor(ln[k], "ln parameter", st, 1);
    TORCH_CHECK(ln[0].size(0) == 4 * H && ln[2].size(0) == 4 * H && ln[4].size(0) == H,
                "lstmkit fused kernel: ln gains must be (4H,), (4H,), (H,)");
  }
  const int nt = choose_threads(num_threads, B, R, H);
  const bool by_rows = choose_rows(nt, B, 4 * H * R * (int64_t)x.element_size(), P == 0 && !with_ln);
  const bool proj_in_loop =
      choose_proj_in_loop(by_rows, B, (I + R) * 4 * H * (int64_t)x.element_size(), P == 0 && !with_ln);
  // input projection of all steps in one GEMM, both biases folded in
  Tensor x2 = x.contiguous().reshape({T * B, I});
  Tensor xp, zx, mean_x, rstd_x;
  Tensor bias;
  if (has(b_ih) || has(b_hh)) {
    bias = has(b_ih) ? *b_ih : at::zeros({4 * H}, opts);
    if (has(b_hh)) bias = bias + *b_hh;
  }
  if (proj_in_loop) {
    xp = bias.defined() ? bias.contiguous() : at::zeros({4 * H}, opts);
  } else if (with_ln) {
    // a = LN(x W_ih^T) + LN(h W_hh^T) + b: the first term of all steps at once
    zx = pooled({T * B, 4 * H}, opts);
    at::mm_out(zx, x2, w_ih.t());
    auto r = at::native_layer_norm(zx, {4 * H}, ln[0], ln[1], 1e-5);
    xp = std::get<0>(r);
    mean_x = std::get<1>(r);
    rstd_x = std::get<2>(r);
    if (bias.defined()) xp.add_(bias);
  } else {
    xp = pooled({T * B, 4 * H}, opts);
    if (st == at::kFloat) {  // the kernels' own GEMM (faster than MKL on these skinny shapes)
      const Tensor bc = bias.defined() ? bias.contiguous() : Tensor();
      gemm_rows(x2.data_ptr<float>(), I, T * B, I, pack_panels(w_ih.t(), L).data_ptr<float>(), 4 * H,
                xp.data_ptr<float>(), bc.defined() ? bc.data_ptr<float>() : nullptr,
                gemm_threads(num_threads, T * B * I * 4 * H));
    } else if (bias.defined()) {
      at::addmm_out(xp, bias, x2, w_ih.t());
    } else {
      at::mm_out(xp, x2, w_ih.t());
    }
  }
  // the row split with 4L-wide panels (kRowNV: float32 with AVX-512): (NU, K, 4L)
  const bool wide_rows = by_rows && st == at::kFloat && kRowNV<float> == 4;
  Tensor wf = pack_wf(w_hh, H, L, wide_rows);
  Tensor wr, hc;
  if (P > 0) {
    wr = pack_panels(w_hr->t(), L);  // W_hr^T (H, P)
    hc = pooled({T, B, H}, opts);
  }
  const bool with_len = has(lengths);
  Tensor y = pooled({T, B, R}, opts);
  // c of every step for the backward or a trace, else two (B, H) buffers in turn (inference: the
  // history would be written to fresh lines every step, and nobody reads it)
  const bool c_pingpong = !store_gates;
  Tensor hall, call = pooled({c_pingpong ? std::min<int64_t>(T + 1, 2) : T + 1, B, H}, opts), ctil, gates;
  call[0].copy_(c0);
  if (with_len) {
    hall = pooled({T + 1, B, R}, opts);
    hall[0].copy_(h0);
  }
  // store_gates (for the backward or a trace): they are written with streaming stores (no read of
  // each line before the write, no cache pollution; nothing in this call reads them again, and the
  // backward, which does, measured ~1.5 % faster at train-small with them streamed than cached)
  if (has(zc) && store_gates) ctil = pooled({T, B, H}, opts);
  if (store_gates) gates = pooled({T, B, 4 * H}, opts);
  Tensor h0c = h0.contiguous();
  Tensor peepc = has(peep) ? peep->contiguous() : Tensor();
  Tensor zcc = has(zc) ? zc->contiguous() : Tensor();
  Tensor zhc = has(zh) ? zh->contiguous() : Tensor();
  Tensor lenc = with_len ? lengths->contiguous() : Tensor();
  Tensor wx = proj_in_loop ? pack_wf(w_ih, H, L, wide_rows) : Tensor();
  Tensor scratch = at::empty({nt, B, 4 * Hp}, opts);
  Tensor zhat, rstd_h, stat_c, rowbuf, lnc[6];
  if (with_ln) {
    zhat = pooled({T, B, 4 * H}, opts);
    rstd_h = at::empty({T, B}, opts);
    stat_c = at::empty({T, B, 2}, opts);
    rowbuf = at::empty({nt, 5 * H}, opts);
    for (int k = 0; k < 6; ++k) lnc[k] = ln[k].contiguous();
  }

  AT_DISPATCH_FLOATING_TYPES(st, "lstmkit_fused_forward", [&] {
    using T_ = scalar_t;
    FwdLoop<T_> k;
    k.T_ = T, k.B = B, k.H = H, k.R = R, k.P = P, k.Hp = Hp, k.NU = NU, k.NPP = P > 0 ? wr.size(0) : 0;
    k.coupled = coupled;
    k.xp = xp.data_ptr<T_>();
    k.xp_rs = proj_in_loop ? 0 : 4 * H;
    if (proj_in_loop) {
      k.wx = wx.data_ptr<T_>();
      k.xin = x2.data_ptr<T_>();
      k.I = I;
    }
    k.wf = wf.data_ptr<T_>();
    k.wr = P > 0 ? wr.data_ptr<T_>() : nullptr;
    k.h0 = h0c.data_ptr<T_>();
    k.peep = peepc.defined() ? peepc.data_ptr<T_>() : nullptr;
    k.zc = zcc.defined() ? zcc.data_ptr<T_>() : nullptr;
    k.zh = zhc.defined() ? zhc.data_ptr<T_>() : nullptr;
    k.len = with_len ? lenc.data_ptr<int64_t>() : nullptr;
    k.y = y.data_ptr<T_>();
    k.hall = with_len ? hall.data_ptr<T_>() : nullptr;
    k.call = call.data_ptr<T_>();
    k.c_pingpong = c_pingpong;
    k.ctil = ctil.defined() ? ctil.data_ptr<T_>() : nullptr;
    k.gates = gates.defined() ? gates.data_ptr<T_>() : nullptr;
    k.stream_gates = gates.defined() && H % Vec<T_>::L == 0 &&
                     reinterpret_cast<uintptr_t>(gates.data_ptr<T_>()) % (sizeof(T_) * Vec<T_>::L) == 0;
    k.hc = P > 0 ? hc.data_ptr<T_>() : nullptr;
    k.scratch = scratch.data_ptr<T_>();
    k.by_rows = by_rows;
    if (with_ln) {
      k.ln_ghh = lnc[2].data_ptr<T_>();
      k.ln_bhh = lnc[3].data_ptr<T_>();
      k.ln_gc = lnc[4].data_ptr<T_>();
      k.ln_bc = lnc[5].data_ptr<T_>();
      k.zhat = zhat.data_ptr<T_>();
      k.rstd_h = rstd_h.data_ptr<T_>();
      k.stat_c = stat_c.data_ptr<T_>();
      k.rowbuf = rowbuf.data_ptr<T_>();
    }
    if (T > 0) parallel_region(nt, [&](Team& team, int p) { k.run(team, p); });
  });
  Tensor hT, cT = call[c_pingpong ? (T & 1) : T].clone();
  if (with_len)
    hT = hall[T].clone();
  else
    hT = T > 0 ? y[T - 1].clone() : h0.clone();
  Tensor none = at::empty({0}, opts);
  return {y,
          hT,
          cT,
          gates.defined() ? gates : none,
          call,
          with_len ? hall : none,
          ctil.defined() ? ctil : none,
          P > 0 ? hc : none,
          with_ln ? zx : none,
          with_ln ? mean_x : none,
          with_ln ? rstd_x : none,
          with_ln ? zhat : none,
          with_ln ? rstd_h : none,
          with_ln ? stat_c : none};
}

// ================================================================================================
// backward of one layer, one direction
// saved: the forward's inputs and {y, gates, c_all, h_all, c_til, hc} as returned by fused_forward
// returns {dx, dh0, dc0, dw_ih, dw_hh, db (4H; the gradient of b_ih and of b_hh), dw_hr, dpeep}
// (empty tensors where not requested via need = [x, h0, c0, w_ih, w_hh, b, w_hr, peep, ln]), then with
// layer_norm and need[8] the grads of the 6 LN parameters (gain_ih, shift_ih, gain_hh, shift_hh,
// gain_c, shift_c). ln_saved = {zx, mean_x, rstd_x, zhat, rstd_h, stat_c} from the forward.
// ================================================================================================
std::vector<Tensor> fused_backward(const Tensor& x, const Tensor& h0, const Tensor& w_ih, const Tensor& w_hh,
                                   const optional<Tensor>& w_hr, const optional<Tensor>& peep,
                                   const optional<Tensor>& zc, const optional<Tensor>& zh,
                                   const optional<Tensor>& lengths, bool coupled, const Tensor& y,
                                   const Tensor& gates, const Tensor& call, const optional<Tensor>& hall,
                                   const optional<Tensor>& ctil, const optional<Tensor>& hc,
                                   const optional<Tensor>& dy_, const optional<Tensor>& dhT_,
                                   const optional<Tensor>& dcT_, const std::vector<Tensor>& ln,
                                   const std::vector<Tensor>& ln_saved, std::vector<bool> need,
                                   int64_t num_threads) {
  const auto st = x.scalar_type();
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = w_hh.size(0) / 4;
  const int64_t P = has(w_hr) ? w_hr->size(0) : 0, R = P > 0 ? P : H;
  const int64_t L = lanes_for(st), NU = round_up(H, L) / L;
  auto opts = x.options();
  TORCH_CHECK(need.size() == 9, "lstmkit fused kernel: need must have 9 flags");
  const bool with_len = has(lengths);

  Tensor dy;
  int64_t dy_rs = R;  // row stride of dy as the loop reads it
  if (!has(dy_)) {
    dy = pooled({T, B, R}, opts).zero_();
  } else if (dy_->is_contiguous()) {
    dy = *dy_;
  } else if (dy_->dim() == 3 && T > 0 && B > 0 && dy_->stride(0) == 0 && dy_->stride(1) == 0 && dy_->size(2) == R) {
    // one row broadcast over steps and batch (e.g. the expanded ones of y.sum().backward())
    dy = dy_->select(0, 0).select(0, 0).contiguous();
    dy_rs = 0;
  } else {
    dy = pooled({T, B, R}, opts).copy_(*dy_);
  }
  Tensor dH = has(dhT_) ? dhT_->clone().contiguous() : at::zeros({B, R}, opts);
  Tensor dC = has(dcT_) ? dcT_->clone().contiguous() : at::zeros({B, H}, opts);
  Tensor lenc = with_len ? lengths->contiguous() : Tensor();
  const int64_t* len = with_len ? lenc.data_ptr<int64_t>() : nullptr;
  Tensor zhc = has(zh) ? zh->contiguous() : Tensor();
  Tensor wb;  // (NPR, 4H, 2L); 4L wide with the row split on AVX-512, see below
  Tensor wrb, dht, dhc;
  if (P > 0) {
    wrb = pack_panels(w_hr->contiguous(), L);  // (NPH, P, 2L)
    dht = pooled({T, B, P}, opts);
    dhc = at::empty({B, H}, opts);
  }
  Tensor dpeep = has(peep) ? at::zeros({3, H}, opts) : Tensor();
  const int nt = choose_threads(num_threads, B, R, H);
  Tensor peepc = has(peep) ? peep->contiguous() : Tensor();
  Tensor zcc = has(zc) ? zc->contiguous() : Tensor();
  const bool with_ln = !ln.empty();
  TORCH_CHECK(!with_ln || (ln.size() == 6 && ln_saved.size() == 6), "lstmkit fused kernel: ln arguments");
  // the bias gradient (sum of da) is accumulated by the time loop, per thread (not with layer norm)
  // (two rows per thread: a running sum and the last <= 64 steps' sum, folded in every 64 steps)
  Tensor db_thr = need[5] && !with_ln && T > 0 ? at::zeros({nt, 2, 4 * H}, opts) : Tensor();
  const bool by_rows =
      choose_rows(nt, B, 4 * H * R * (int64_t)x.element_size(), P == 0 && !with_ln && !peepc.defined());
  // the row split reads W_hh in 4L-wide panels (kRowNV: float32 with AVX-512): (ceil(R / 4L), 4H, 4L)
  wb = pack_panels(w_hh.contiguous(), by_rows && st == at::kFloat && kRowNV<float> == 4 ? 2 * L : L);
  Tensor da = pooled({T, B, 4 * H}, opts);
  // Small float32 layers get their weight gradients from weight_grad_gemm. With the row split the
  // loop also streams da into panel layout for it, blocks (T * B, 2L) da_ks apart (packing da there
  // afterwards cost 0.3-0.6 ms at train-small; the blocks are one row longer than T * B: 4 KB-multiple
  // strides would put a row's 4H / 2L pieces in one L1 set); otherwise the GEMM packs da's rows.
  const int64_t K = T * B;
  int dw_nt = gemm_threads(num_threads, K * 4 * H * (I + R));
  // weight_grad_gemm: at least 8 panels (128 columns of da) per thread unless a thread count is forced
  // (tests): every thread reads all of x and h, so with fewer columns each the GEMM would turn
  // memory-bound on a many-core machine (train-small: 32 panels, 2 threads here, 4 at most)
  if (num_threads >= 0) dw_nt = (int)std::max<int64_t>(1, std::min<int64_t>(dw_nt, (4 * H + 2 * L - 1) / (2 * L) / 8));
  const bool own_dw = st == at::kFloat && K > 0 && (need[3] || need[4]) &&
                      weight_grad_tile_bytes(4 * H, {need[3] ? I : 0, need[4] ? R : 0}, dw_nt) <= kOwnDwTileBytes;
  const bool da_pan = own_dw && by_rows && H % L == 0;
  const int64_t da_ks = da_pan ? (T * B + 1) * 2 * L : 0;
  Tensor dpan = da_pan ? pooled({4 * H / (2 * L), T * B + 1, 2 * L}, opts) : Tensor();
  Tensor dzh, acc_thr, rowbuf, lnc[6];
  if (with_ln) {
    dzh = pooled({T, B, 4 * H}, opts);
    acc_thr = at::zeros({nt, 5 * H}, opts);
    rowbuf = at::empty({nt, H}, opts);
    for (int k = 0; k < 6; ++k) lnc[k] = ln[k].contiguous();
  }

  if (T > 0) {
    // dH <- grad of h_T + dy[T-1] (for sequences still running at T-1); dht[T-1] with a projection
    Tensor last_ok = with_len ? (lenc > (T - 1)).to(st).reshape({B, 1}) : at::ones({B, 1}, opts);
    dH.add_((dy_rs == 0 ? dy.expand({B, R}) : dy[T - 1]) * last_ok);
    if (P > 0) {
      Tensor v = dH * last_ok;
      if (zhc.defined()) v = v * (1 - zhc[T - 1]);
      dht[T - 1].copy_(v);
    }
    AT_DISPATCH_FLOATING_TYPES(st, "lstmkit_fused_backward", [&] {
      using T_ = scalar_t;
      BwdLoop<T_> k;
      k.T_ = T, k.B = B, k.H = H, k.R = R, k.P = P, k.NU = NU;
      k.NPH = (H + 2 * L - 1) / (2 * L);
      k.NPR = (R + 2 * L - 1) / (2 * L);
      k.coupled = coupled;
      k.gates = gates.data_ptr<T_>();
      k.call = call.data_ptr<T_>();
      k.ctil = ptr_or_null<T_>(ctil);
      k.peep = peepc.defined() ? peepc.data_ptr<T_>() : nullptr;
      k.zc = zcc.defined() ? zcc.data_ptr<T_>() : nullptr;
      k.zh = zhc.defined() ? zhc.data_ptr<T_>() : nullptr;
      k.len = len;
      k.wb = wb.data_ptr<T_>();
      k.wrb = P > 0 ? wrb.data_ptr<T_>() : nullptr;
      k.dy = dy.data_ptr<T_>();
      k.dy_rs = dy_rs;
      k.da = da.data_ptr<T_>();
      k.dH = dH.data_ptr<T_>();
      k.dC = dC.data_ptr<T_>();
      k.dht = P > 0 ? dht.data_ptr<T_>() : nullptr;
      k.dhc = P > 0 ? dhc.data_ptr<T_>() : nullptr;
      k.dpeep = dpeep.defined() ? dpeep.data_ptr<T_>() : nullptr;
      k.by_rows = by_rows;
      k.dpan = da_pan ? dpan.data_ptr<T_>() : nullptr;
      k.dpan_ks = da_ks;
      k.db_thr = db_thr.defined() ? db_thr.data_ptr<T_>() : nullptr;
      if (with_ln) {
        k.ln_ghh = lnc[2].data_ptr<T_>();
        k.ln_gc = lnc[4].data_ptr<T_>();
        k.ln_bc = lnc[5].data_ptr<T_>();
        k.zhat = ln_saved[3].data_ptr<T_>();
        k.rstd_h = ln_saved[4].data_ptr<T_>();
        k.stat_c = ln_saved[5].data_ptr<T_>();
        k.dzh = dzh.data_ptr<T_>();
        k.acc_thr = acc_thr.data_ptr<T_>();
        k.rowbuf = rowbuf.data_ptr<T_>();
      }
      parallel_region(nt, [&](Team& team, int p) { k.run(team, p); });
    });
  }
  Tensor none = at::empty({0}, opts);
  Tensor da2 = da.reshape({T * B, 4 * H});
  Tensor dx = none, dwih = none, dwhh = none, db = none, dwhr = none;
  std::vector<Tensor> dln;
  // left factors of the weight gradients: grads of x W_ih^T and of h_{t-1} W_hh^T
  Tensor dzx = da2, dzh_ = da;
  if (with_ln) {
    // need[8]: the LN parameters; dzx is needed for x and w_ih
    const bool want_ln = need.size() > 8 && need[8];
    auto r = at::native_layer_norm_backward(da2, ln_saved[0], {4 * H}, ln_saved[1], ln_saved[2], lnc[0], lnc[1],
                                            {need[0] || need[3], want_ln, want_ln});
    dzx = std::get<0>(r);
    dzh_ = dzh;
    if (want_ln) {
      Tensor acc = acc_thr.sum(0);
      dln = {std::get<1>(r), std::get<2>(r), (da * ln_saved[3]).sum({0, 1}), da2.sum(0), acc.narrow(0, 0, H),
             acc.narrow(0, H, H)};
      if (dpeep.defined()) dpeep = acc.narrow(0, 2 * H, 3 * H).reshape({3, H});
    } else if (dpeep.defined()) {
      dpeep = acc_thr.sum(0).narrow(0, 2 * H, 3 * H).reshape({3, H});
    }
  }
  if (need[0]) {
    dx = pooled({T * B, I}, opts);
    if (st == at::kFloat && dzx.is_contiguous()) {
      gemm_rows(dzx.data_ptr<float>(), 4 * H, T * B, 4 * H, pack_panels(w_ih.contiguous(), L).data_ptr<float>(), I,
                dx.data_ptr<float>(), nullptr, gemm_threads(num_threads, T * B * 4 * H * I));
    } else {
      at::mm_out(dx, dzx, w_ih);
    }
    dx = dx.view({T, B, I});
  }
  // small float32 layers: dW_ih = dzx^T x and dW_hh = dzh^T h_{t-1} by weight_grad_gemm, from the rows
  if (own_dw) {
    const Tensor xc = x.contiguous(), h0c = h0.contiguous();
    const Tensor hsrc = with_len ? hall->contiguous() : y.contiguous();
    // (with layer norm dzx is undefined unless x's or W_ih's gradient is asked for)
    const Tensor dzxc = da_pan ? dpan : need[3] ? dzx.reshape({K, 4 * H}).contiguous() : Tensor();
    const Tensor dzhc = da_pan ? dpan : need[4] ? dzh_.reshape({K, 4 * H}).contiguous() : Tensor();
    AGroup gx, gh;
    if (need[3]) {
      dwih = at::empty({4 * H, I}, opts);
      gx.M = I, gx.out = dwih.data_ptr<float>();
      gx.seg[0] = {xc.data_ptr<float>(), I, 0, K};
    }
    if (need[4]) {
      dwhh = at::empty({4 * H, R}, opts);
      gh.M = R, gh.out = dwhh.data_ptr<float>();
      if (with_len) {
        gh.seg[0] = {hsrc.data_ptr<float>(), R, 0, K};  // h_all rows 0 .. T-1
      } else {
        gh.seg[0] = {h0c.data_ptr<float>(), R, 0, B};  // h_{-1} = h0, then h_{t-1} = y[t-1]
        gh.seg[1] = {hsrc.data_ptr<float>(), R, B, K};
        gh.nseg = 2;
      }
    }
    if (need[3] && need[4] && dzxc.data_ptr() == dzhc.data_ptr()) {  // one pass over da
      weight_grad_gemm(dzxc.data_ptr<float>(), K, 4 * H, {gx, gh}, dw_nt, da_ks);
    } else {
      if (need[3]) weight_grad_gemm(dzxc.data_ptr<float>(), K, 4 * H, {gx}, dw_nt, da_ks);
      if (need[4]) weight_grad_gemm(dzhc.data_ptr<float>(), K, 4 * H, {gh}, dw_nt, da_ks);
    }
  }
  const bool joint = !own_dw && need[3] && need[4] && !with_ln && T > 0;
  if (joint) {
    // dW_ih and dW_hh as ONE GEMM, [x_t | h_{t-1}]^T @ da -> (I + R, 4H): da is packed once instead of
    // twice. This orientation with N = I + R (db comes from the time loop instead of a column of
    // ones) ran ~8 % faster than da^T @ [x | h | 1] (MKL, train-small, paired calls).
    const int64_t N = I + R;
    Tensor xh = pooled({T, B, N}, opts);
    const Tensor xc = x.contiguous(), h0c = h0.contiguous();
    const Tensor hsrc = with_len ? hall->contiguous() : y.contiguous();  // h_{t-1} rows: h0 then y (or h_all)
    AT_DISPATCH_FLOATING_TYPES(st, "lstmkit_xh", [&] {
      using T_ = scalar_t;
      const T_* xs = xc.data_ptr<T_>();
      const T_* hs = hsrc.data_ptr<T_>();
      const T_* h0s = h0c.data_ptr<T_>();
      T_* d = xh.data_ptr<T_>();
      // one pass over the rows (ATen's strided copies took ~2x as long)
      at::parallel_for(0, T * B, 256, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          T_* o = d + r * N;
          std::copy_n(xs + r * I, I, o);
          const T_* h = with_len ? hs + r * R : (r < B ? h0s + r * R : hs + (r - B) * R);
          std::copy_n(h, R, o + I);
        }
      });
    });
    const Tensor dwt = at::mm(xh.view({T * B, N}).t(), da2).contiguous();  // (I + R, 4H) = [dW_ih | dW_hh]^T
    dwih = at::empty({4 * H, I}, opts);
    dwhh = at::empty({4 * H, R}, opts);
    AT_DISPATCH_FLOATING_TYPES(st, "lstmkit_dw_split", [&] {
      using T_ = scalar_t;
      const T_* w = dwt.data_ptr<T_>();
      transpose_into<T_>(w, I, 4 * H, 4 * H, dwih.data_ptr<T_>(), I);
      transpose_into<T_>(w + I * 4 * H, R, 4 * H, 4 * H, dwhh.data_ptr<T_>(), R);
    });
  }
  if (need[3] && !joint && !own_dw) dwih = at::mm(dzx.t(), x.contiguous().reshape({T * B, I}));
  if (need[4] && !joint && !own_dw) {
    if (with_len) {
      dwhh = at::mm(dzh_.reshape({T * B, 4 * H}).t(), hall->narrow(0, 0, T).reshape({T * B, R}));
    } else {
      dwhh = at::mm(dzh_[0].t(), h0.contiguous());
      if (T > 1)
        dwhh.addmm_(dzh_.narrow(0, 1, T - 1).reshape({(T - 1) * B, 4 * H}).t(),
                    y.narrow(0, 0, T - 1).reshape({(T - 1) * B, R}));
    }
  }
  if (need[5]) db = db_thr.defined() ? db_thr.sum({0, 1}) : da2.sum(0);
  if (need[6] && P > 0) dwhr = at::mm(dht.reshape({T * B, P}).t(), hc->reshape({T * B, H}));
  std::vector<Tensor> out = {need[0] ? dx : none, need[1] ? dH : none, need[2] ? dC : none, dwih, dwhh, db, dwhr,
                            dpeep.defined() && need[7] ? dpeep : none};
  for (auto& t : dln) out.push_back(t);
  return out;
}

// ================================================================================================
// the differentiable layer: a C++ autograd node around fused_forward / fused_backward
// ================================================================================================
// The Python torch.autograd.Function it replaces cost 0.19-0.24 ms more per forward+backward at
// train-small (~2 %; median of 3000 paired calls): the Python node, its ctx and the GIL on the way
// into the backward. A C++ node runs its backward without Python.
// Arguments: the 15 differentiable slots x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, peep and the six
// layer-norm parameters (undefined where absent), then zoneout masks, lengths and the flags.
// Outputs: y, h_T, c_T, and with trace the gates (T, B, 4H) and c (T, B, H), not differentiable.
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int kDiffSlots = 15;

struct FusedLayerFn : public torch::autograd::Function<FusedLayerFn> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& h0, const Tensor& c0,
                               const Tensor& w_ih, const Tensor& w_hh, const optional<Tensor>& b_ih,
                               const optional<Tensor>& b_hh, const optional<Tensor>& w_hr,
                               const optional<Tensor>& peep, const optional<Tensor>& g_ih,
                               const optional<Tensor>& s_ih, const optional<Tensor>& g_hh,
                               const optional<Tensor>& s_hh, const optional<Tensor>& g_c,
                               const optional<Tensor>& s_c, const optional<Tensor>& zc,
                               const optional<Tensor>& zh, const optional<Tensor>& lengths, bool coupled,
                               bool trace, bool grad, int64_t num_threads) {
    std::vector<Tensor> ln;
    const int n_ln = has(g_ih) + has(s_ih) + has(g_hh) + has(s_hh) + has(g_c) + has(s_c);
    TORCH_CHECK(n_ln == 0 || n_ln == 6, "lstmkit fused kernel: give all 6 layer-norm tensors or none");
    if (n_ln == 6) ln = {*g_ih, *s_ih, *g_hh, *s_hh, *g_c, *s_c};
    auto res = fused_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, peep, zc, zh, lengths, ln, coupled,
                             grad || trace, num_threads);
    const Tensor& y = res[0];
    const Tensor& gates = res[3];
    const Tensor& call = res[4];
    if (grad) {
      // which of the 15 slots were given (an absent optional is not an input of the node, so the
      // node's input edges are numbered over the given slots only; a Tensor argument always is one)
      const optional<Tensor>* opt[kDiffSlots - 5] = {&b_ih, &b_hh, &w_hr, &peep, &g_ih,
                                                      &s_ih, &g_hh, &s_hh, &g_c, &s_c};
      std::vector<int64_t> edge(kDiffSlots, -1);
      int64_t e = 0;
      for (int k = 0; k < kDiffSlots; ++k) {
        const bool given = k < 5 || has(*opt[k - 5]);
        if (given) edge[k] = e++;
      }
      auto opt_or = [](const optional<Tensor>& t) { return has(t) ? *t : Tensor(); };
      const Tensor none;
      // h_all with lengths, c~ with zoneout of c, o * tanh(c~) with a projection (else undefined)
      std::vector<Tensor> save = {x, h0, w_ih, w_hh, opt_or(w_hr), opt_or(peep), opt_or(zc), opt_or(zh),
                                  opt_or(lengths), y, gates, call, has(lengths) ? res[5] : none,
                                  has(zc) ? res[6] : none, has(w_hr) ? res[7] : none};
      for (auto& t : ln) save.push_back(t);
      if (!ln.empty())
        for (int k = 8; k < 14; ++k) save.push_back(res[k]);
      ctx->save_for_backward(save);
      ctx->saved_data["edge"] = c10::IValue(edge);
      ctx->saved_data["coupled"] = coupled;
      ctx->saved_data["ln"] = !ln.empty();
      ctx->saved_data["nt"] = num_threads;
      ctx->set_materialize_grads(false);  // absent grads of h_T / c_T stay undefined (read as zeros)
    }
    if (!trace) return {y, res[1], res[2]};
    Tensor c_trace = call.narrow(0, 1, x.size(0));
    if (has(lengths)) {  // the trace is 0 past the end of a sequence (the state is carried)
      Tensor steps = at::arange(x.size(0), lengths->options()).unsqueeze(1);
      c_trace = c_trace * steps.lt(lengths->unsqueeze(0)).unsqueeze(2).to(call.scalar_type());
    }
    ctx->mark_non_differentiable({gates, c_trace});
    return {y, res[1], res[2], gates, c_trace};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // The gradients below are computed outside autograd: with create_graph=True they would come
    // back without a graph and second derivatives would silently miss this layer.
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "lstmkit: the fused LSTM kernels have no second derivative (backward with create_graph=True); "
                "run the layer with backend='reference' for higher-order gradients");
    const auto saved = ctx->get_saved_variables();
    const auto edge = ctx->saved_data["edge"].toIntVector();
    const bool with_ln = ctx->saved_data["ln"].toBool();
    bool n[kDiffSlots];
    for (int k = 0; k < kDiffSlots; ++k) n[k] = edge[k] >= 0 && ctx->needs_input_grad(edge[k]);
    auto opt = [](const Tensor& t) { return t.defined() ? optional<Tensor>(t) : optional<Tensor>(); };
    std::vector<Tensor> ln, ln_saved;
    if (with_ln) {
      ln.assign(saved.begin() + 15, saved.begin() + 21);
      ln_saved.assign(saved.begin() + 21, saved.begin() + 27);
    }
    const bool any_ln = n[9] || n[10] || n[11] || n[12] || n[13] || n[14];
    std::vector<bool> need = {n[0], n[1], n[2], n[3], n[4], n[5] || n[6], n[7], n[8], any_ln};
    auto r = fused_backward(saved[0], saved[1], saved[2], saved[3], opt(saved[4]), opt(saved[5]), opt(saved[6]),
                            opt(saved[7]), opt(saved[8]), ctx->saved_data["coupled"].toBool(), saved[9],
                            saved[10], saved[11], opt(saved[12]), opt(saved[13]), opt(saved[14]), opt(grads[0]),
                            opt(grads[1]), opt(grads[2]), ln, ln_saved, need, ctx->saved_data["nt"].toInt());
    variable_list out(kDiffSlots + 7);  // one per forward argument, undefined where no gradient
    const int from_res[9] = {0, 1, 2, 3, 4, 5, 5, 6, 7};  // slot -> fused_backward's result
    for (int k = 0; k < 9; ++k)
      if (n[k]) out[k] = r[from_res[k]];
    if (with_ln && any_ln)
      for (int k = 0; k < 6; ++k)
        if (n[9 + k]) out[9 + k] = r[8 + k];
    return out;
  }
};

// The differentiable layer as Python calls it: a plain forward when no gradient will be asked for.
std::vector<Tensor> fused_layer(const Tensor& x, const Tensor& h0, const Tensor& c0, const Tensor& w_ih,
                                const Tensor& w_hh, const optional<Tensor>& b_ih, const optional<Tensor>& b_hh,
                                const optional<Tensor>& w_hr, const optional<Tensor>& peep,
                                const std::vector<optional<Tensor>>& ln, const optional<Tensor>& zc,
                                const optional<Tensor>& zh, const optional<Tensor>& lengths, bool coupled,
                                bool trace, int64_t num_threads) {
  TORCH_CHECK(ln.size() == 6, "lstmkit fused kernel: ln must hold 6 entries (tensors or None)");
  bool grad = false;
  if (at::GradMode::is_enabled()) {
    for (const Tensor* t : {&x, &h0, &c0, &w_ih, &w_hh}) grad = grad || t->requires_grad();
    for (const optional<Tensor>* t : {&b_ih, &b_hh, &w_hr, &peep}) grad = grad || (has(*t) && (*t)->requires_grad());
    for (const auto& t : ln) grad = grad || (has(t) && t->requires_grad());
  }
  return FusedLayerFn::apply(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, peep, ln[0], ln[1], ln[2], ln[3], ln[4],
                             ln[5], zc, zh, lengths, coupled, trace, grad, num_threads);
}

// ================================================================================================
// streaming step: several stacked unidirectional layers, one time step per call
// ================================================================================================
template <typename T>
struct StreamLayer {
  int64_t I = 0, H = 0, P = 0, R = 0, K = 0, Hp = 0, NU = 0, NPP = 0;
  Tensor wc;    // (NU, K, 4L) with K = I + R: [W_ih | W_hh] per unit block, gates i, f, g, o interleaved
  Tensor bias;  // (4Hp,) b_ih + b_hh interleaved (zeros without biases)
  Tensor wr;    // (NPP, H, 2L) projection panels, or undefined
  Tensor xh;    // (B, K): [x_t | h_{t-1}] -- the h state of this layer lives in columns I..K
  Tensor c;     // (B, H) cell state
  Tensor pre;   // (B, 4Hp) pre-activations, interleaved
  Tensor hc;    // (B, H) o * tanh(c) before the projection, or undefined
  Tensor peep;  // (3, H) peephole weights p_i, p_f, p_o, or undefined
  Tensor ln;    // layer norm: (4, 4Hp) gains/shifts of x W_ih^T and h W_hh^T interleaved, or undefined
  Tensor lnc;   // layer norm of c: (2, H) gain, shift
  Tensor prex;  // layer norm: (B, 4Hp) x W_ih^T (pre holds h W_hh^T)
};

// y = x @ panel for one row (B = 1): two independent accumulator sets over even / odd k so the FMA
// latency is hidden; NV vectors wide.
template <typename T, int NV>
inline void gemv_panel(const T* __restrict x, const T* __restrict panel, int64_t K, Vec<T>* out) {
  using V = Vec<T>;
  constexpr int L = V::L;
  V a0[NV], a1[NV];
  for (int j = 0; j < NV; ++j) a0[j] = V::zero(), a1[j] = V::zero();
  int64_t k = 0;
  for (; k + 1 < K; k += 2) {
    const V x0 = V::set1(x[k]), x1 = V::set1(x[k + 1]);
    const T* p0 = panel + k * NV * L;
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) a0[j] = fmadd(x0, V::load(p0 + j * L), a0[j]);
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) a1[j] = fmadd(x1, V::load(p0 + NV * L + j * L), a1[j]);
  }
  if (k < K) {
    const V x0 = V::set1(x[k]);
    for (int j = 0; j < NV; ++j) a0[j] = fmadd(x0, V::load(panel + k * NV * L + j * L), a0[j]);
  }
  for (int j = 0; j < NV; ++j) out[j] = a0[j] + a1[j];
}

class FusedStreamCpp {
 public:
  FusedStreamCpp(const std::vector<Tensor>& w_ih, const std::vector<Tensor>& w_hh,
                 const std::vector<Tensor>& bias, const std::vector<Tensor>& w_hr, int64_t batch,
                 int64_t num_threads, const std::vector<Tensor>& peep, const std::vector<std::vector<Tensor>>& ln,
                 bool coupled, double zoneout_c, double zoneout_h)
      : B_(batch), coupled_(coupled), zc_(zoneout_c), zh_(zoneout_h) {
    TORCH_CHECK(peep.empty() || peep.size() == w_ih.size(), "lstmkit FusedStream: one peephole tensor per layer");
    TORCH_CHECK(ln.empty() || ln.size() == w_ih.size(), "lstmkit FusedStream: six layer-norm tensors per layer");
    TORCH_CHECK(!w_ih.empty() && w_ih.size() == w_hh.size() && w_ih.size() == bias.size() &&
                    w_ih.size() == w_hr.size(),
                "lstmkit FusedStream: one w_ih, w_hh, bias, w_hr per layer (bias/w_hr may be empty)");
    TORCH_CHECK(batch >= 1, "lstmkit FusedStream: batch_size must be >= 1");
    st_ = w_ih[0].scalar_type();
    TORCH_CHECK(st_ == at::kFloat || st_ == at::kDouble, "lstmkit FusedStream: float32 or float64 weights");
    const int64_t L = lanes_for(st_);
    auto opts = w_ih[0].options();
    int64_t wbytes = 0;
    bool with_ln = false;
    for (size_t k = 0; k < w_ih.size(); ++k) {
      Lyr l;
      l.H = w_hh[k].size(0) / 4;
      l.I = w_ih[k].size(1);
      l.P = w_hr[k].defined() && w_hr[k].numel() > 0 ? w_hr[k].size(0) : 0;
      l.R = l.P > 0 ? l.P : l.H;
      l.K = l.I + l.R;
      l.Hp = round_up(l.H, L);
      l.NU = l.Hp / L;
      TORCH_CHECK(w_ih[k].size(0) == 4 * l.H && w_hh[k].size(1) == l.R, "lstmkit FusedStream: layer ", k,
                  ": weight shapes do not match");
      if (k > 0) TORCH_CHECK(l.I == layers_.back().R, "lstmkit FusedStream: layer ", k, " input size");
      Tensor cat = at::cat({w_ih[k], w_hh[k]}, 1).contiguous();  // (4H, K)
      Tensor v = cat.reshape({4, l.H, l.K});
      if (l.Hp != l.H) v = at::constant_pad_nd(v, {0, 0, 0, l.Hp - l.H});
      l.wc = v.reshape({4, l.NU, L, l.K}).permute({1, 3, 0, 2}).contiguous();  // (NU, K, 4, L)
      l.bias = bias[k].defined() && bias[k].numel() > 0 ? interleave_vec(bias[k].contiguous(), l.H, L)
                                                        : at::zeros({4 * l.Hp}, opts);
      if (l.P > 0) {
        l.wr = pack_panels(w_hr[k].t(), L);
        l.NPP = l.wr.size(0);
        l.hc = at::zeros({B_, l.H}, opts);
      }
      l.xh = at::zeros({B_, l.K}, opts);
      l.c = at::zeros({B_, l.H}, opts);
      l.pre = at::zeros({B_, 4 * l.Hp}, opts);
      if (!peep.empty() && peep[k].defined() && peep[k].numel() > 0) {
        TORCH_CHECK(peep[k].numel() == 3 * l.H, "lstmkit FusedStream: peephole weights must be (3, H)");
        l.peep = peep[k].to(st_).contiguous().reshape({3, l.H});
      }
      if (!ln.empty() && !ln[k].empty()) {
        TORCH_CHECK(ln[k].size() == 6, "lstmkit FusedStream: layer norm takes 6 tensors per layer");
        std::vector<Tensor> v;
        for (int q = 0; q < 4; ++q) v.push_back(interleave_vec(ln[k][q].to(st_).contiguous(), l.H, L));
        l.ln = at::stack(v);
        l.lnc = at::stack({ln[k][4].to(st_).contiguous(), ln[k][5].to(st_).contiguous()});
        l.prex = at::zeros({B_, 4 * l.Hp}, opts);
        with_ln = true;
      }
      wbytes += l.wc.numel() * l.wc.element_size();
      layers_.push_back(std::move(l));
    }
    // Threads only pay off when the weights no longer fit in one core's L2 (stream-large).
    nt_ = num_threads > 0 ? (int)num_threads : at::get_num_threads();
    if (wbytes * B_ < (1 << 20)) nt_ = 1;
    if (num_threads < 0) nt_ = (int)-num_threads;
    if (with_ln) nt_ = 1;  // the norms reduce over all units: one thread, no extra barriers
  }

  Tensor step(const Tensor& x) {
    const Lyr& l0 = layers_.front();
    TORCH_CHECK(x.scalar_type() == st_ && x.device().is_cpu(), "lstmkit FusedStream.step: x must be a CPU ",
                st_, " tensor");
    const bool flat = x.dim() == 1;  // (I,) with batch_size 1 -> (R,)
    TORCH_CHECK((x.dim() == 2 && x.size(0) == B_ && x.size(1) == l0.I) || (flat && B_ == 1 && x.size(0) == l0.I),
                "lstmkit FusedStream.step: x must be (", B_, ", ", l0.I, ")", B_ == 1 ? " or (I,)" : "", ", got ",
                x.sizes());
    const Tensor& xc = x.is_contiguous() ? x : x.contiguous();
    Tensor out = flat ? at::empty({layers_.back().R}, xc.options()) : at::empty({B_, layers_.back().R}, xc.options());
    AT_DISPATCH_FLOATING_TYPES(st_, "lstmkit_stream_step", [&] {
      run<scalar_t>(xc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
    });
    return out;
  }

  void reset() {
    for (auto& l : layers_) {
      l.xh.zero_();
      l.c.zero_();
    }
  }

  std::vector<Tensor> get_state() const {
    std::vector<Tensor> hs, cs;
    for (const auto& l : layers_) {
      hs.push_back(l.xh.narrow(1, l.I, l.R));
      cs.push_back(l.c);
    }
    return {at::stack(hs), at::stack(cs)};
  }

  void set_state(const Tensor& h, const Tensor& c) {
    TORCH_CHECK(h.dim() == 3 && c.dim() == 3 && h.size(0) == (int64_t)layers_.size() &&
                    c.size(0) == (int64_t)layers_.size(),
                "lstmkit FusedStream.set_state: h and c must be (L, B, .)");
    for (size_t k = 0; k < layers_.size(); ++k) {
      layers_[k].xh.narrow(1, layers_[k].I, layers_[k].R).copy_(h[k]);
      layers_[k].c.copy_(c[k]);
    }
  }

  int64_t num_threads() const { return nt_; }

 private:
  using Lyr = StreamLayer<float>;  // the tensors are dtype-agnostic; the template only names a struct

  template <typename T>
  void run(const T* x, T* out) {
    using V = Vec<T>;
    constexpr int L = V::L;
    const int64_t B = B_;
    const Lyr& l0 = layers_[0];
    T* xh0 = l0.xh.data_ptr<T>();
    for (int64_t b = 0; b < B; ++b) copy_n(x + b * l0.I, xh0 + b * l0.K, l0.I);
    const bool reverse = (calls_++ & 1) != 0;
    parallel_region(nt_, [&](Team& team, int p) {
      int np = team.active();
      for (size_t li = 0; li < layers_.size(); ++li) {
        const Lyr& l = layers_[li];
        T* xh = l.xh.data_ptr<T>();
        T* pre = l.pre.data_ptr<T>();
        T* c = l.c.data_ptr<T>();
        const T* wc = l.wc.data_ptr<T>();
        const T* bias = l.bias.data_ptr<T>();
        int64_t u0, u1;
        split_range(l.NU, p, np, u0, u1);
        // pass 1: pre-activations of my unit blocks, in alternating order from call to call: when a
        // thread's weights are larger than its cache, the blocks it read last are still cached
        // when it starts the next call (the same order each time would miss on every block)
        for (int64_t ui = u0; ui < u1; ++ui) {
          const int64_t u = reverse ? u0 + u1 - 1 - ui : ui;
          const T* pan = wc + u * l.K * 4 * L;
          if (l.ln.defined()) {  // x W_ih^T and h W_hh^T apart: each has its own norm
            T* prex = l.prex.data_ptr<T>();
            for (int64_t b = 0; b < B; ++b) {
              V acc[4];
              gemv_panel<T, 4>(xh + b * l.K, pan, l.I, acc);
              for (int q = 0; q < 4; ++q) acc[q].store(prex + b * 4 * l.Hp + u * 4 * L + q * L);
              gemv_panel<T, 4>(xh + b * l.K + l.I, pan + l.I * 4 * L, l.R, acc);
              for (int q = 0; q < 4; ++q) acc[q].store(pre + b * 4 * l.Hp + u * 4 * L + q * L);
            }
          } else if (B == 1) {
            V acc[4];
            gemv_panel<T, 4>(xh, pan, l.K, acc);
            for (int q = 0; q < 4; ++q) acc[q].store(pre + u * 4 * L + q * L);
          } else {
            for_row_blocks<T, 3, 4>(xh, l.K, pan, l.K, B, [&](int64_t r0, auto& acc) {
              constexpr int mr = sizeof(acc.v) / sizeof(acc.v[0]);
              for (int m = 0; m < mr; ++m)
                for (int q = 0; q < 4; ++q) acc.v[m][q].store(pre + (r0 + m) * 4 * l.Hp + u * 4 * L + q * L);
            });
          }
        }
        if ((np = team.sync(p)) <= p) return;  // everyone has read h_{t-1} before it is overwritten
        // pass 2: pointwise, h written in place into xh[:, I:] (or hc with a projection)
        split_range(l.NU, p, np, u0, u1);
        if (!l.peep.defined() && !l.ln.defined() && !coupled_ && zc_ == 0.0 && zh_ == 0.0) {
          for (int64_t u = u0; u < u1; ++u) {
            const int64_t hu = u * L;
            const int n = (int)std::min<int64_t>(L, l.H - hu);
            const T* bb = bias + u * 4 * L;
            for (int64_t b = 0; b < B; ++b) {
              const T* pr = pre + b * 4 * l.Hp + u * 4 * L;
              const V i = sigmoid(V::load(pr) + V::load(bb));
              const V f = sigmoid(V::load(pr + L) + V::load(bb + L));
              const V g = tanh(V::load(pr + 2 * L) + V::load(bb + 2 * L));
              const V o = sigmoid(V::load(pr + 3 * L) + V::load(bb + 3 * L));
              T* cp = c + b * l.H + hu;
              const V cn = fmadd(f, ld(cp, n), i * g);
              st(cn, cp, n);
              const V h = o * tanh(cn);
              if (l.P > 0)
                st(h, l.hc.data_ptr<T>() + b * l.H + hu, n);
              else
                st(h, xh + b * l.K + l.I + hu, n);
            }
          }
        } else {
          pointwise_variants<T>(l, u0, u1);
        }
        if (l.P > 0) {
          if ((np = team.sync(p)) <= p) return;
          const T* hcp = l.hc.data_ptr<T>();
          const T* wr = l.wr.data_ptr<T>();
          int64_t q0, q1;
          split_range(l.NPP, p, np, q0, q1);
          for (int64_t q = q0; q < q1; ++q) {
            for (int64_t b = 0; b < B; ++b) {
              V acc[2];
              gemv_panel<T, 2>(hcp + b * l.H, wr + q * l.H * 2 * L, l.H, acc);
              for (int j = 0; j < 2; ++j) {
                const int64_t cidx = q * 2 * L + j * L;
                const int n = (int)std::max<int64_t>(0, std::min<int64_t>(L, l.P - cidx));
                T* hp = xh + b * l.K + l.I + cidx;
                if (n > 0) st(zh_ > 0.0 ? fmadd(V::set1((T)zh_), ld(hp, n) - acc[j], acc[j]) : acc[j], hp, n);
              }
            }
          }
        }
        if ((np = team.sync(p)) <= p) return;  // h_t of this layer complete
        // feed the next layer (or the output)
        if (p == 0) {
          T* dst = li + 1 < layers_.size() ? layers_[li + 1].xh.data_ptr<T>() : out;
          const int64_t dstride = li + 1 < layers_.size() ? layers_[li + 1].K : l.R;
          for (int64_t b = 0; b < B; ++b) copy_n(xh + b * l.K + l.I, dst + b * dstride, l.R);
        }
        if ((np = team.sync(p)) <= p) return;
      }
    });
  }

  // The pointwise pass with the variants (equations of lstmkit.core.functional.cell_step, zoneout
  // in evaluation: the expectation). Layer norm runs with one thread (p = 0 owns all units).
  template <typename T>
  void pointwise_variants(const Lyr& l, int64_t u0, int64_t u1) {
    using V = Vec<T>;
    constexpr int L = V::L;
    const int64_t B = B_, H = l.H, Hp = l.Hp;
    T* xh = l.xh.data_ptr<T>();
    T* pre = l.pre.data_ptr<T>();
    T* c = l.c.data_ptr<T>();
    const T* bias = l.bias.data_ptr<T>();
    const T* peep = l.peep.defined() ? l.peep.data_ptr<T>() : nullptr;
    const T zc = (T)zc_, zh = (T)zh_;
    for (int64_t b = 0; b < B; ++b) {
      T* pr = pre + b * 4 * Hp;
      if (l.ln.defined()) {  // a = LN(x W_ih^T) + LN(h W_hh^T) (+ biases below), over the 4H entries
        const T* lnp = l.ln.data_ptr<T>();
        T* px = l.prex.data_ptr<T>() + b * 4 * Hp;
        T* srcs[2] = {px, pr};
        T mean[2], rstd[2];
        for (int s2 = 0; s2 < 2; ++s2) {
          double sum = 0, sq = 0;
          for (int64_t k = 0; k < 4 * Hp; ++k) sum += srcs[s2][k];  // padded lanes are 0
          const double m = sum / (4.0 * H);
          for (int64_t u = 0; u < l.NU; ++u)
            for (int q = 0; q < 4; ++q)
              for (int j = 0; j < L && u * L + j < H; ++j) {
                const double d = srcs[s2][u * 4 * L + q * L + j] - m;
                sq += d * d;
              }
          mean[s2] = (T)m;
          rstd[s2] = (T)(1.0 / std::sqrt(sq / (4.0 * H) + 1e-5));
        }
        for (int64_t k = 0; k < 4 * Hp; ++k)
          pr[k] = ((px[k] - mean[0]) * rstd[0]) * lnp[k] + lnp[4 * Hp + k] +
                  ((pr[k] - mean[1]) * rstd[1]) * lnp[2 * 4 * Hp + k] + lnp[3 * 4 * Hp + k];
      }
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t hu = u * L;
        const int n = (int)std::min<int64_t>(L, H - hu);
        const T* bb = bias + u * 4 * L;
        T* g4 = pr + u * 4 * L;
        T* cp = c + b * H + hu;
        const V c_prev = ld(cp, n);
        V ai = V::load(g4) + V::load(bb), af = V::load(g4 + L) + V::load(bb + L);
        if (peep) {
          ai = fmadd(ld(peep + hu, n), c_prev, ai);
          af = fmadd(ld(peep + H + hu, n), c_prev, af);
        }
        const V i = sigmoid(ai);
        const V f = coupled_ ? V::set1(T(1)) - i : sigmoid(af);
        const V g = tanh(V::load(g4 + 2 * L) + V::load(bb + 2 * L));
        const V cn = fmadd(f, c_prev, i * g);
        V ao = V::load(g4 + 3 * L) + V::load(bb + 3 * L);
        if (peep) ao = fmadd(ld(peep + 2 * H + hu, n), cn, ao);
        const V o = sigmoid(ao);
        o.store(g4 + 3 * L);        // kept for the layer norm of c
        cn.store(g4 + 2 * L);       // c~ before zoneout
        st(zc > 0 ? fmadd(V::set1(zc), c_prev - cn, cn) : cn, cp, n);
      }
      T mc = 0, rc = 0;
      if (l.ln.defined()) {  // LN of c~ over H
        double sum = 0, sq = 0;
        for (int64_t u = 0; u < l.NU; ++u)
          for (int j = 0; j < L && u * L + j < H; ++j) sum += pr[u * 4 * L + 2 * L + j];
        const double m = sum / (double)H;
        for (int64_t u = 0; u < l.NU; ++u)
          for (int j = 0; j < L && u * L + j < H; ++j) {
            const double d = pr[u * 4 * L + 2 * L + j] - m;
            sq += d * d;
          }
        mc = (T)m;
        rc = (T)(1.0 / std::sqrt(sq / (double)H + 1e-5));
      }
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t hu = u * L;
        const int n = (int)std::min<int64_t>(L, H - hu);
        const T* g4 = pr + u * 4 * L;
        V cv = V::load(g4 + 2 * L);
        if (l.ln.defined()) {
          const T* lc = l.lnc.data_ptr<T>();
          cv = fmadd(ld(lc + hu, n), (cv - V::set1(mc)) * V::set1(rc), ld(lc + H + hu, n));
        }
        const V h = V::load(g4 + 3 * L) * tanh(cv);
        if (l.P > 0) {
          st(h, l.hc.data_ptr<T>() + b * H + hu, n);
        } else {
          T* hp = xh + b * l.K + l.I + hu;
          st(zh > 0 ? fmadd(V::set1(zh), ld(hp, n) - h, h) : h, hp, n);
        }
      }
    }
  }

  int64_t B_;
  bool coupled_ = false;
  double zc_ = 0.0, zh_ = 0.0;
  int nt_ = 1;
  uint64_t calls_ = 0;  // step calls so far (the weight blocks are read in alternating order)
  at::ScalarType st_;
  std::vector<Lyr> layers_;
};

}  // namespace lstmkit

#include "lstm_int8.h"

std::string build_info() {
  return std::string("avx2=") + (lstmkit::compiled_with_avx2() ? "1" : "0") +
         " avx512=" + (lstmkit::compiled_with_avx512() ? "1" : "0") +
#if defined(__AVX512VNNI__) && defined(__AVX512VL__) || defined(__AVXVNNI__)
         " vnni=1" +
#else
         " vnni=0" +
#endif
#ifdef _OPENMP
         " openmp=1"
#else
         " openmp=0"
#endif
         + " lanes_f32=" + std::to_string(lstmkit::Vec<float>::L);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  // The whole-sequence calls run for milliseconds: let other Python threads go meanwhile. The
  // streaming step (microseconds) keeps the GIL, which also serialises calls on one stream.
  m.def("forward", &lstmkit::fused_forward, "fused LSTM layer forward",
        pybind11::call_guard<pybind11::gil_scoped_release>());
  m.def("backward", &lstmkit::fused_backward, "fused LSTM layer backward",
        pybind11::call_guard<pybind11::gil_scoped_release>());
  m.def("fused_layer", &lstmkit::fused_layer, "fused LSTM layer, differentiable (a C++ autograd node)",
        pybind11::call_guard<pybind11::gil_scoped_release>());
  m.def("build_info", &build_info);
  m.def("contention_events", [] { return lstmkit::contention_events().load(); });
  m.def("release_buffers", [] { return lstmkit::BufferPool::instance().release(); });
  // C = A @ Bm (+ bias) with the kernels' own GEMM (float32; for tests and benchmarks)
  m.def("gemm_rows", [](const at::Tensor& A, const at::Tensor& Bm, const c10::optional<at::Tensor>& bias,
                        int64_t num_threads) {
    TORCH_CHECK(A.scalar_type() == at::kFloat && Bm.scalar_type() == at::kFloat && A.dim() == 2 && Bm.dim() == 2 &&
                    A.size(1) == Bm.size(0),
                "lstmkit gemm_rows: float32 A (M, K) and Bm (K, N)");
    const at::Tensor a = A.contiguous();
    const at::Tensor panels = lstmkit::pack_panels(Bm.contiguous(), lstmkit::Vec<float>::L);
    at::Tensor c = at::empty({A.size(0), Bm.size(1)}, A.options());
    at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
    TORCH_CHECK(!b.defined() || b.numel() == Bm.size(1), "lstmkit gemm_rows: bias must be (N,)");
    const int nt = lstmkit::gemm_threads(num_threads, A.size(0) * A.size(1) * Bm.size(1));
    lstmkit::gemm_rows(a.data_ptr<float>(), a.size(1), a.size(0), a.size(1), panels.data_ptr<float>(), Bm.size(1),
                       c.data_ptr<float>(), b.defined() ? b.data_ptr<float>() : nullptr, nt);
    return c;
  }, pybind11::call_guard<pybind11::gil_scoped_release>());
  // how the time loops' threads share the work: 0 auto, 1 unit blocks, 2 batch rows where legal
  m.def("set_thread_split", [](int64_t mode) {
    TORCH_CHECK(mode >= 0 && mode <= 2, "lstmkit set_thread_split: mode must be 0 (auto), 1 (units) or 2 (rows)");
    lstmkit::split_override().store((int)mode);
  });
  m.def("buffer_bytes", [] { return lstmkit::BufferPool::instance().bytes(); });
  pybind11::class_<lstmkit::FusedStreamCpp>(m, "FusedStream", pybind11::module_local())
      .def(pybind11::init<const std::vector<at::Tensor>&, const std::vector<at::Tensor>&,
                          const std::vector<at::Tensor>&, const std::vector<at::Tensor>&, int64_t, int64_t,
                          const std::vector<at::Tensor>&, const std::vector<std::vector<at::Tensor>>&, bool, double,
                          double>())
      .def("step", &lstmkit::FusedStreamCpp::step)
      .def("reset", &lstmkit::FusedStreamCpp::reset)
      .def("get_state", &lstmkit::FusedStreamCpp::get_state)
      .def("set_state", &lstmkit::FusedStreamCpp::set_state)
      .def("num_threads", &lstmkit::FusedStreamCpp::num_threads);
  pybind11::class_<lstmkit::Int8StreamCpp>(m, "Int8Stream", pybind11::module_local())
      .def(pybind11::init<const std::vector<at::Tensor>&, const std::vector<at::Tensor>&,
                          const std::vector<at::Tensor>&, const std::vector<at::Tensor>&,
                          const std::vector<at::Tensor>&, int64_t, int64_t>())
      .def("step", &lstmkit::Int8StreamCpp::step)
      .def("sequence", &lstmkit::Int8StreamCpp::sequence)
      .def("reset", &lstmkit::Int8StreamCpp::reset)
      .def("get_state", &lstmkit::Int8StreamCpp::get_state)
      .def("set_state", &lstmkit::Int8StreamCpp::set_state)
      .def("num_threads", &lstmkit::Int8StreamCpp::num_threads);
}
