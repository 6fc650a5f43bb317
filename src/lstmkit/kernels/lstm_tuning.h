// lstmkit fused kernels: the tuning rules, in one place. Each decides how a call runs (threads, how
// they split the work, what runs inside the time loop), never what it computes beyond rounding
// (see lstm_loops.h). Rules that depend on the machine follow the cache size the code reads
// (l2_bytes); the numbers behind each constant were measured on this project's two machines
// (BENCHMARKS.md): the AMD EPYC (Zen 3) VM, AVX2, 512 KB of L2 per core, and the Intel Xeon VM,
// AVX-512, 2 MB of L2 per core. On the EPYC VM every rule below decides as the fixed sizes it
// replaces did (384 KB = 3/4 of its L2, 1 MB = 2 L2, 512 KB = 1 L2, 256 KB = L2 / 2).
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#if __has_include(<unistd.h>)
#include <unistd.h>
#endif

#include "lstm_simd.h"

namespace lstmkit {

// A core's L2 in bytes (glibc's sysconf; 512 KB, the EPYC VM's, where unknown).
inline int64_t l2_bytes() {
  static const int64_t v = [] {
    long s = 0;
#ifdef _SC_LEVEL2_CACHE_SIZE
    s = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    return s > 0 ? (int64_t)s : (int64_t)512 * 1024;
  }();
  return v;
}

// Threads of a time loop. requested > 0: at most that many threads; < 0: exactly -requested
// threads (tests); 0: torch's setting. Below ~32k multiply-adds per step (B * R * 4H) a barrier
// costs more than the second core saves (a compute size, not a cache one: the same on both VMs).
inline int choose_threads(int64_t requested, int64_t B, int64_t R, int64_t H) {
  if (requested < 0) return (int)-requested;
  int nt = requested > 0 ? (int)requested : at::get_num_threads();
  if (B * R * 4 * H < 32768) nt = 1;
  return std::max(1, nt);
}

// Threads for one gemm_rows call: as requested (torch's setting by default), one below ~1M
// multiply-adds (a compute size: a parallel region's start costs about that much).
inline int gemm_threads(int64_t requested, int64_t macs) {
  if (requested < 0) return (int)-requested;
  const int nt = requested > 0 ? (int)requested : at::get_num_threads();
  return macs < (1 << 20) ? 1 : std::max(1, nt);
}

// How the threads of a time loop share the work: 0 chosen by the rules (auto), 1 unit blocks,
// 2 batch rows where legal (tests and benchmarks force each way through set_thread_split).
inline std::atomic<int>& split_override() {
  static std::atomic<int> v{0};
  return v;
}

// Row split of the plain time loops (see lstm_loops.h): legal without a projection and layer norm
// (and, backward, without peepholes, whose gradient sums over rows). Each thread then multiplies
// its rows by the whole of W_hh instead of by its columns, and the barrier of every step goes. It
// needs rows enough per thread for the micro-kernel (a block of 1-3 rows runs at a fraction of its
// speed). Measured on the EPYC VM (AVX2; forward+backward time, 2 threads, rows / units):
// B 8 H 128 (train-small) 0.85-0.99, B 32 H 256 0.97, B 64 H 512 0.92, B 8 H 512 0.98; but
// B 4 H 128 1.10, B 6 H 128 1.06: rows from 4 per thread.
// With 16 float lanes (AVX-512) each core multiplies twice as fast, and rows pay only while every
// thread reading all of W_hh each step reads it from its L2: Xeon VM, B 8 H 128 0.82,
// B 32 H 256 0.94, but B 64 H 512 (4 MB of W_hh, 2x its L2) 1.02 forward+backward and 1.04-1.09
// inference, B 8 H 512 1.65 inference. With 8 lanes the product stays compute-bound even from L3
// (EPYC, B 64 H 512: 4 MB of W_hh, 8x its L2, rows 0.92), so there W_hh's size does not enter.
inline bool choose_rows(int nt, int64_t B, int64_t whh_bytes, bool legal) {
  if (!legal || nt < 2) return false;
  const int o = split_override().load(std::memory_order_relaxed);
  if (o != 0) return o == 2;
  if (Vec<float>::L == 16 && whh_bytes > l2_bytes()) return false;
  return B >= 4 * nt;
}

// The input projection inside the time loop ([x_t | h_{t-1}] @ [W_ih | W_hh]^T, plain layers
// without a projection or layer norm): the (T, B, 4H) projections then never go through memory.
//  * Row split: while [W_ih | W_hh], which each core reads every step, takes <= 3/4 of a core's L2
//    (EPYC VM, 384 KB: train-small inference ~4 % faster, training within noise; Xeon VM, 1.5 MB:
//    train-mid inference 4 % faster, training even).
//  * Unit split, with 16 float lanes only (AVX-512): from 32 rows, where a thread's share of the
//    weights is used by many rows per read. Xeon VM, with / without: B 64 H 512 0.90 inference,
//    0.96 forward+backward; B 64 I 1024 H 512 0.90; but B 16 H 512 1.02, B 8 H 512 1.20. (With 8
//    lanes, not measured a gain: off.)
inline bool choose_proj_in_loop(bool by_rows, int64_t B, int64_t w_bytes, bool legal) {
  if (!legal) return false;
  if (by_rows) return w_bytes * 4 <= l2_bytes() * 3;
  return Vec<float>::L == 16 && B >= 32;
}

// The small-layer weight gradients run on the kernels' own GEMM (weight_grad_gemm, lstm_matmul.h)
// while its tiles per thread fit in half of a core's L2 (room for the panels of da and the rows of
// x and h next to them), else on ATen (MKL). EPYC VM, 256 KB: train-small (200 KB of tiles) ran
// at ~75 multiply-adds/ns against MKL's ~60; train-mid (0.8 MB) even; train-large (3 MB) made the
// whole forward+backward ~5 % slower than MKL.
inline bool own_weight_grad_fits(int64_t tile_bytes) { return tile_bytes * 2 <= l2_bytes(); }

// Threads of the float streaming step: they only pay off when the weights no longer fit in one
// core's L2. One thread while weights x batch rows < 2 L2 (EPYC VM, 1 MB: stream-small, 393 KB of
// float32 weights, runs on one; stream-large, 6.3 MB, on all). requested as in choose_threads.
inline int stream_threads(int64_t requested, int64_t weight_bytes, int64_t B) {
  int nt = requested > 0 ? (int)requested : at::get_num_threads();
  if (weight_bytes * B < 2 * l2_bytes()) nt = 1;
  if (requested < 0) nt = (int)-requested;
  return nt;
}

// Threads of the int8 step: one while its int8 weights x batch rows < 1 L2 (EPYC VM, 512 KB: the
// step-small layer, 98 KB of codes, fits many times over and threads cost more; step-large, 1.5 MB,
// uses them). requested as in choose_threads.
inline int int8_stream_threads(int64_t requested, int64_t weight_bytes, int64_t B) {
  int nt = requested > 0 ? (int)requested : at::get_num_threads();
  if (weight_bytes * B < l2_bytes()) nt = 1;
  if (requested < 0) nt = (int)-requested;
  return nt;
}

}  // namespace lstmkit
