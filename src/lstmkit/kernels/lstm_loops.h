// lstmkit fused kernels: the time loops of one LSTM layer, forward and backward (no torch here).
//
// Conventions (T steps, B batch, I input, H hidden, P projection, R = P if P > 0 else H; all
// buffers row-major and contiguous; "(T, B, H)" means index (t * B + b) * H + j):
//   L        lanes of Vec<T> (16 floats with AVX-512, 8 with AVX2, 4 doubles)
//   Hp       H rounded up to a multiple of L;  NU = Hp / L "unit blocks" of L hidden units
//   panel    K x 2L block of a right-hand matrix, k-major (see lstm_gemm.h); NV = 2 vectors wide
//
// Packed weights (built by lstm_fused.cpp from torch's layout, read-only here):
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
// Threads: the caller runs the loops inside one `omp parallel` region for the whole sequence.
// Each thread owns a range of hidden units (and of projection columns, or of batch rows in the
// row-wise layer-norm passes); ranges only change at a barrier (see Team), and every element is
// computed by the same arithmetic whatever the split, so 1 and 2 threads agree bit for bit in the
// time loops. Barriers per step: plain forward 1, backward 1; +1 each with a projection; the
// layer-norm variant needs 2 forward and 2 backward (row statistics need whole rows).
// Row split (`by_rows`, plain loops without projection or layer norm): each thread instead owns a
// range of batch rows and all units. Rows never read each other's state, so the threads meet no
// barrier at all until the end of the sequence; each multiplies its rows by the whole of W_hh
// (chosen by choose_rows in lstm_fused.cpp). The threads never wait for each other inside the
// loop, so Team's oversubscription fallback (which watches barrier waits) does not apply there: a
// descheduled thread delays only the end of the call, by at most its own rows' share, instead of
// stalling its partner at every step. With `wx` (either split, chosen by choose_proj_in_loop) the
// input projection is part of each step's product and the biases are added in the pointwise pass:
// the same sums in another order, so there 1 and 2 threads agree to rounding, not bit for bit.
//
// Per step (forward): the recurrent product of the thread's unit blocks goes to a small per-thread
// scratch (hot in L1/L2), then one pointwise pass row by row reads xp and writes gates, c, h in
// memory order. (Computing the pointwise pass directly on the accumulators, unit block by unit
// block across rows, measured ~25% slower: it walks xp/gates with a 4H stride and misses cache.)
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <thread>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "lstm_gemm.h"

namespace lstmkit {

// --------------------------------------------------------------------------------------------
// Team: the threads of one kernel call and their per-step barrier.
//
// A spin barrier (pause, then sched_yield) that also watches for oversubscription: on a machine
// where other processes compete for the cores, a thread of ours is regularly descheduled and its
// partner spins a whole time slice at every barrier, which can make 2 threads many times slower
// than 1. The barrier measures the time threads spend waiting; if, over a window of 64 barriers, it
// exceeds half the elapsed time, or if one wait alone exceeds 20 ms, and more threads are runnable
// than there are CPUs (the partner was descheduled in favour of another process), the team shrinks
// to thread 0 at the next barrier (no work is lost: ranges are recomputed from `active` after every
// sync, and every element is computed by the same arithmetic whatever the split), and the process
// runs single-threaded for the next half second before trying two threads again. Long waits with
// no other runnable thread are the hypervisor pausing a virtual CPU (a shared VM does that now and
// then, for tens of milliseconds): one thread would not have been faster, so the team stays.
// --------------------------------------------------------------------------------------------
// More threads runnable right now than CPUs online (Linux: /proc/loadavg); true where unknown.
inline bool cpus_oversubscribed_now() {
  std::FILE* f = std::fopen("/proc/loadavg", "r");
  if (!f) return true;
  double a, b, c;
  int running = 0, total = 0;
  const int n = std::fscanf(f, "%lf %lf %lf %d/%d", &a, &b, &c, &running, &total);
  std::fclose(f);
  if (n != 5) return true;
  const unsigned ncpu = std::thread::hardware_concurrency();
  return ncpu == 0 || running > (int)ncpu;
}

inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Oversubscribed persistently: every one of 4 readings over ~1.5 ms says so. A single reading was
// fooled now and then by a short-lived extra thread (measured on this project's 2-CPU VM: one false
// "oversubscribed" per few seconds of training, each costing 0.5 s of single-threaded running).
inline bool cpus_oversubscribed() {
  for (int k = 0; k < 4; ++k) {
    if (k > 0) {
      const int64_t until = now_ns() + 500000;
      while (now_ns() < until) std::this_thread::yield();
    }
    if (!cpus_oversubscribed_now()) return false;
  }
  return true;
}

inline std::atomic<int64_t>& single_thread_until_ns() {
  static std::atomic<int64_t> until{0};
  return until;
}

// How many times a team shrank to one thread because the cores were oversubscribed.
inline std::atomic<int64_t>& contention_events() {
  static std::atomic<int64_t> n{0};
  return n;
}

inline void cpu_relax() {
#if LSTMKIT_HAVE_AVX2
  _mm_pause();
#endif
}

class Team {
 public:
  static constexpr int kMaxThreads = 64;
  static constexpr int kWindow = 64;          // barriers per contention check
  static constexpr double kMaxWaitShare = 0.5;
  // A single wait this long (a stall, not the 1 ms hiccups a shared VM's vCPU has now and then:
  // treating those as oversubscription made quiet two-thread runs single-threaded most of the time).
  static constexpr int64_t kLongWaitNs = 20000000;
  static constexpr int64_t kSingleForNs = 500000000LL;

  explicit Team(int np) : np_(std::max(1, std::min(np, kMaxThreads))), active_(np_) {
    for (auto& w : wait_) w.ns = 0;
    window_start_ = now_ns();
  }
  int size() const { return np_; }
  int active() const { return active_.load(std::memory_order_acquire); }
  void force_single() { active_.store(1, std::memory_order_release); }

  // Called by every active thread; returns the number of active threads after the barrier
  // (threads p >= the result must stop).
  int sync(int p) {
    const int n = active_.load(std::memory_order_acquire);
    if (n <= 1) return 1;
    const int64_t t0 = now_ns();
    const int gen = gen_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == n - 1) {
      bool shrink = long_wait_.load(std::memory_order_relaxed);
      if (++syncs_ % kWindow == 0) {
        int64_t waited = 0;
        for (int k = 0; k < n; ++k) waited += wait_[k].ns, wait_[k].ns = 0;
        const int64_t elapsed = t0 - window_start_;
        window_start_ = t0;
        if ((double)waited > kMaxWaitShare * (double)elapsed * (double)(n - 1) && cpus_oversubscribed()) shrink = true;
      }
      if (shrink) {
        active_.store(1, std::memory_order_release);
        single_thread_until_ns().store(t0 + kSingleForNs, std::memory_order_relaxed);
        contention_events().fetch_add(1, std::memory_order_relaxed);
      }
      arrived_.store(0, std::memory_order_relaxed);
      gen_.fetch_add(1, std::memory_order_acq_rel);
    } else {
      for (int i = 0; gen_.load(std::memory_order_acquire) == gen; ++i) {
        if (i < 2000)
          cpu_relax();
        else
          std::this_thread::yield();
      }
      const int64_t t1 = now_ns(), w = t1 - t0;
      wait_[p].ns += w;
      if (w > kLongWaitNs && cpus_oversubscribed()) {
        long_wait_.store(true, std::memory_order_relaxed);  // shrink at the next barrier ...
        single_thread_until_ns().store(t1 + kSingleForNs, std::memory_order_relaxed);  // ... and next calls
      }
    }
    return active_.load(std::memory_order_acquire);
  }

 private:
  struct alignas(64) Slot {
    int64_t ns;
  };
  int np_;
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<int> gen_{0};
  alignas(64) std::atomic<int> active_;
  std::atomic<bool> long_wait_{false};
  int64_t syncs_ = 0;         // touched by the releasing thread only
  int64_t window_start_ = 0;  // idem
  Slot wait_[kMaxThreads];
};

inline void split_range(int64_t n, int p, int np, int64_t& b, int64_t& e) {
  b = n * p / np;
  e = n * (p + 1) / np;
}

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

// ============================================================================================
// Forward
// ============================================================================================
template <typename T>
struct FwdLoop {
  using V = Vec<T>;
  static constexpr int L = V::L;
  static constexpr int NV = 2;
  static constexpr int MRMAX = kMRMax<T>;

  int64_t T_ = 0, B = 0, H = 0, R = 0, P = 0, Hp = 0, NU = 0, NPP = 0;
  bool coupled = false;
  // inputs
  const T* xp = nullptr;     // (T, B, 4H) input projections + both biases (with layer_norm: LN'd, + b);
                             // with wx just the summed biases (4H), xp_rs = 0
  int64_t xp_rs = 0;         // row stride of xp: 4H, or 0 with wx
  const T* wx = nullptr;     // plain loops: W_ih packed like wf (NU, 2, I, 2L); the input projection
                             // then happens in the loop, step by step, on xin
  const T* xin = nullptr;    // (T, B, I) the input, with wx
  int64_t I = 0;
  const T* wf = nullptr;     // packed, see above
  const T* wr = nullptr;     // packed, or null without projection
  const T* h0 = nullptr;     // (B, R)
  const T* peep = nullptr;   // (3, H) rows p_i, p_f, p_o, or null
  const T* zc = nullptr;     // (T, B, H) zoneout keep-mask of c, or null
  const T* zh = nullptr;     // (T, B, R) zoneout keep-mask of h, or null
  const int64_t* len = nullptr;  // (B,) or null
  // outputs
  T* y = nullptr;     // (T, B, R). Without lengths it is also the h state history: h_t = y[t].
  T* hall = nullptr;  // (T+1, B, R) h states, only with lengths (y is 0 past a sequence's end, h is not)
  T* call = nullptr;  // (T+1, B, H) c states after zoneout; call[0] = c0 (filled by the caller); with
                      // c_pingpong (inference without a trace: nobody reads the history) (2, B, H)
  bool c_pingpong = false;
  T* ctil = nullptr;  // (T, B, H) c before zoneout, only with zoneout_c (and saved for backward), else null
  T* gates = nullptr; // (T, B, 4H) activations i, f, g, o in torch's gate order, or null (inference)
  bool stream_gates = false;  // write gates with streaming stores (nobody reads them in this call;
                              // needs vector-aligned rows: H % L == 0 and an aligned buffer)
  T* hc = nullptr;    // (T, B, H) o * tanh(c) before the projection, only with a projection
  T* scratch = nullptr;  // (nthreads, B, 4Hp) per-thread recurrent pre-activations, [u][gate][lane]
  bool by_rows = false;  // row split (P == 0, no layer norm): see the top of this file
  // layer_norm only (null otherwise). xp then holds LN(x W_ih^T) + b_ih + b_hh.
  const T* ln_ghh = nullptr;  // (4H) gain of LN(h W_hh^T)
  const T* ln_bhh = nullptr;  // (4H) shift of LN(h W_hh^T)
  const T* ln_gc = nullptr;   // (H) gain of LN(c~)
  const T* ln_bc = nullptr;   // (H) shift of LN(c~)
  T* zhat = nullptr;    // (T, B, 4H) h_{t-1} W_hh^T, normalised in place (saved for backward)
  T* rstd_h = nullptr;  // (T, B) 1 / std of each zhat row
  T* stat_c = nullptr;  // (T, B, 2) mean and 1 / std of c~ (over H)
  T* rowbuf = nullptr;  // (nthreads, 5H) per-thread row scratch: gates and c~ when they are not stored
  T eps = T(1e-5);

  inline bool valid(int64_t t, int64_t b) const { return len == nullptr || t < len[b]; }
  // the (B, H) cell state before step t (after step t: cst(t + 1))
  inline T* cst(int64_t t) const { return call + (c_pingpong ? (t & 1) : t) * B * H; }
  inline const T* hprev(int64_t t) const {
    if (hall) return hall + t * B * R;
    return t == 0 ? h0 : y + (t - 1) * B * R;
  }
  inline T* hnext(int64_t t) const { return hall ? hall + (t + 1) * B * R : y + t * B * R; }

  // Past the end of sequence b: the state is carried, the trace and y are 0 (units hu..hu+n).
  inline void carry(int64_t t, int64_t b, int64_t hu, int64_t n) const {
    const int64_t tb = t * B + b;
    copy_n(cst(t) + b * H + hu, cst(t + 1) + b * H + hu, n);
    if (ctil) copy_n(cst(t) + b * H + hu, ctil + tb * H + hu, n);
    if (gates)
      for (int q = 0; q < 4; ++q) fill_n(gates + tb * 4 * H + q * H + hu, n, T(0));
    if (P > 0) {
      fill_n(hc + tb * H + hu, n, T(0));
    } else {
      copy_n(hprev(t) + b * R + hu, hnext(t) + b * R + hu, n);
      if (hall) fill_n(y + tb * R + hu, n, T(0));
    }
  }

  // The pointwise pass of row b at step t for the C unit blocks u .. u+C-1 (row b valid). pre
  // holds their recurrent pre-activations, interleaved [block][gate][lane]. The C blocks are
  // computed statement by statement side by side: the activations are long dependency chains
  // (exp, division), and two independent chains next to each other keep the core busy.
  template <int C>
  inline void cells(int64_t t, int64_t b, int64_t u, const T* pre) const {
    const int64_t tb = t * B + b;
    const V one = V::set1(T(1));
    const T* x = xp + tb * xp_rs;
    const T* cp = cst(t) + b * H;
    int64_t hu[C];
    int n[C];
    V ai[C], af[C], ag[C], ao[C], c_prev[C], i[C], f[C], g[C], ct[C], o[C], h[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      hu[c] = (u + c) * L;
      n[c] = (int)std::min<int64_t>(L, H - hu[c]);
      const T* d = pre + c * 4 * L;
      ai[c] = V::load(d) + ld(x + hu[c], n[c]);
      af[c] = V::load(d + L) + ld(x + H + hu[c], n[c]);
      ag[c] = V::load(d + 2 * L) + ld(x + 2 * H + hu[c], n[c]);
      ao[c] = V::load(d + 3 * L) + ld(x + 3 * H + hu[c], n[c]);
      c_prev[c] = ld(cp + hu[c], n[c]);
    }
    if (peep) {
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) {
        ai[c] = fmadd(ld(peep + hu[c], n[c]), c_prev[c], ai[c]);
        af[c] = fmadd(ld(peep + H + hu[c], n[c]), c_prev[c], af[c]);
      }
    }
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) i[c] = fast_sigmoid(ai[c]);
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) f[c] = coupled ? one - i[c] : fast_sigmoid(af[c]);
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) g[c] = fast_tanh(ag[c]);
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) ct[c] = fmadd(f[c], c_prev[c], i[c] * g[c]);
    if (peep) {
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) ao[c] = fmadd(ld(peep + 2 * H + hu[c], n[c]), ct[c], ao[c]);
    }
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) o[c] = fast_sigmoid(ao[c]);
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) h[c] = o[c] * fast_tanh(ct[c]);
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      T* cn = cst(t + 1) + b * H + hu[c];
      if (zc) {
        const V m = ld(zc + tb * H + hu[c], n[c]);
        st(fmadd(m, c_prev[c] - ct[c], ct[c]), cn, n[c]);  // m c_prev + (1 - m) ct
        if (ctil) st(ct[c], ctil + tb * H + hu[c], n[c]);
      } else {
        st(ct[c], cn, n[c]);
      }
      if (gates) {
        T* gp = gates + tb * 4 * H + hu[c];
        if (stream_gates) {  // n[c] == L here (H % L == 0)
          i[c].stream(gp);
          f[c].stream(gp + H);
          g[c].stream(gp + 2 * H);
          o[c].stream(gp + 3 * H);
        } else {
          st(i[c], gp, n[c]);
          st(f[c], gp + H, n[c]);
          st(g[c], gp + 2 * H, n[c]);
          st(o[c], gp + 3 * H, n[c]);
        }
      }
      if (P > 0) {
        st(h[c], hc + tb * H + hu[c], n[c]);
        continue;
      }
      V hn = h[c];
      if (zh) hn = fmadd(ld(zh + tb * R + hu[c], n[c]), ld(hprev(t) + b * R + hu[c], n[c]) - hn, hn);
      st(hn, hnext(t) + b * R + hu[c], n[c]);
      if (hall) st(hn, y + tb * R + hu[c], n[c]);
    }
  }

  // Prefetch what the pointwise pass of step t over unit blocks [u0, u1) and rows [b0, b1) reads
  // (xp) and writes (gates, when not streamed). ~3 % on the train-small forward when it was added;
  // the same in the backward measured nothing.
  inline void prefetch_step(int64_t t, int64_t u0, int64_t u1, int64_t b0, int64_t b1) const {
    const int64_t h0_ = u0 * L, n = std::min<int64_t>(H, u1 * L) - h0_;
    if (n <= 0 || (xp_rs == 0 && (!gates || stream_gates))) return;  // nothing to prefetch
    for (int64_t b = b0; b < b1; ++b)
      for (int q = 0; q < 4; ++q) {
        if (xp_rs != 0) prefetch_n<0>(xp + (t * B + b) * xp_rs + q * H + h0_, n);
        if (gates && !stream_gates) prefetch_n<1>(gates + (t * B + b) * 4 * H + q * H + h0_, n);  // (a streamed line needs no read)
      }
  }

  // The pointwise pass of row b for unit blocks [u0, u1) (pre: this row's scratch).
  inline void row_cells(int64_t t, int64_t b, int64_t u0, int64_t u1, const T* pre) const {
    if (!valid(t, b)) {
      const int64_t h0_ = u0 * L, h1_ = std::min<int64_t>(H, u1 * L);
      if (h1_ > h0_) carry(t, b, h0_, h1_ - h0_);
      return;
    }
    int64_t u = u0;
    for (; u + 2 <= u1; u += 2) cells<2>(t, b, u, pre + u * 4 * L);
    if (u < u1) cells<1>(t, b, u, pre + u * 4 * L);
  }

  // The projection of row b, columns [c0, c0 + 2L) at step t.
  template <typename A>
  inline void proj_row(int64_t t, int64_t b, int64_t c0, const A& acc, int m) const {
    const int64_t tb = t * B + b;
    const T* hp = hprev(t) + b * R;
    T* hn = hnext(t) + b * R;
    const bool ok = valid(t, b);
    for (int j = 0; j < NV; ++j) {
      const int64_t c = c0 + j * L;
      const int n = (int)std::max<int64_t>(0, std::min<int64_t>(L, P - c));
      if (n == 0) break;
      if (!ok) {
        copy_n(hp + c, hn + c, n);
        fill_n(y + tb * R + c, n, T(0));
        continue;
      }
      V v = acc.v[m][j];
      if (zh) v = fmadd(ld(zh + tb * R + c, n), ld(hp + c, n) - v, v);
      st(v, hn + c, n);
      if (hall) st(v, y + tb * R + c, n);
    }
  }

  // layer_norm: the whole pointwise pass of row b at step t (zhat[t, b] holds the raw h W_hh^T).
  void ln_row(int64_t t, int64_t b, T* rb) const {
    const int64_t tb = t * B + b;
    if (!valid(t, b)) {
      carry(t, b, 0, H);
      rstd_h[tb] = T(0);
      stat_c[2 * tb] = stat_c[2 * tb + 1] = T(0);
      return;
    }
    const int64_t H4 = 4 * H;
    T* z = zhat + tb * H4;
    const T mz = row_sum(z, H4) / T(H4);
    const T rz = T(1) / std::sqrt(row_sqdev(z, mz, H4) / T(H4) + eps);
    rstd_h[tb] = rz;
    {
      const V mv = V::set1(mz), rv = V::set1(rz);
      int64_t k = 0;
      for (; k + L <= H4; k += L) ((V::load(z + k) - mv) * rv).store(z + k);
      for (; k < H4; ++k) z[k] = (z[k] - mz) * rz;
    }
    T* gp = gates ? gates + tb * H4 : rb;                               // (4H) activations
    T* cb = ctil ? ctil + tb * H : (zc ? rb + H4 : cst(t + 1) + b * H);  // (H) c~
    const T* cpr = cst(t) + b * H;
    const T* x = xp + tb * H4;
    for (int64_t u = 0; u < NU; ++u) {
      const int64_t hu = u * L;
      const int n = (int)std::min<int64_t>(L, H - hu);
      V a[4];
      for (int q = 0; q < 4; ++q) {
        const int64_t o = q * H + hu;
        a[q] = fmadd(ld(ln_ghh + o, n), ld(z + o, n), ld(ln_bhh + o, n)) + ld(x + o, n);
      }
      const V c_prev = ld(cpr + hu, n);
      if (peep) {
        a[0] = fmadd(ld(peep + hu, n), c_prev, a[0]);
        a[1] = fmadd(ld(peep + H + hu, n), c_prev, a[1]);
      }
      const V i = sigmoid(a[0]);
      const V f = coupled ? V::set1(T(1)) - i : sigmoid(a[1]);
      const V g = tanh(a[2]);
      const V ct = fmadd(f, c_prev, i * g);
      if (peep) a[3] = fmadd(ld(peep + 2 * H + hu, n), ct, a[3]);
      const V o = sigmoid(a[3]);
      st(i, gp + hu, n);
      st(f, gp + H + hu, n);
      st(g, gp + 2 * H + hu, n);
      st(o, gp + 3 * H + hu, n);
      st(ct, cb + hu, n);
    }
    const T mc = row_sum(cb, H) / T(H);
    const T rc = T(1) / std::sqrt(row_sqdev(cb, mc, H) / T(H) + eps);
    stat_c[2 * tb] = mc;
    stat_c[2 * tb + 1] = rc;
    const V mcv = V::set1(mc), rcv = V::set1(rc);
    for (int64_t u = 0; u < NU; ++u) {
      const int64_t hu = u * L;
      const int n = (int)std::min<int64_t>(L, H - hu);
      const V ct = ld(cb + hu, n);
      const V yv = fmadd(ld(ln_gc + hu, n), (ct - mcv) * rcv, ld(ln_bc + hu, n));
      const V h = ld(gp + 3 * H + hu, n) * tanh(yv);
      if (zc) st(fmadd(ld(zc + tb * H + hu, n), ld(cpr + hu, n) - ct, ct), cst(t + 1) + b * H + hu, n);
      if (P > 0) {
        st(h, hc + tb * H + hu, n);
        continue;
      }
      V hn = h;
      if (zh) hn = fmadd(ld(zh + tb * R + hu, n), ld(hprev(t) + b * R + hu, n) - h, h);
      st(hn, hnext(t) + b * R + hu, n);
      if (hall) st(hn, y + tb * R + hu, n);
    }
  }

  void proj_phase(int64_t t, int64_t q0, int64_t q1) const {
    const T* a = hc + t * B * H;
    for (int64_t q = q0; q < q1; ++q) {
      for_row_blocks<T, MRMAX, NV>(a, H, wr + q * H * 2 * L, H, B, [&](int64_t r0, auto& acc) {
        constexpr int mr = sizeof(acc.v) / sizeof(acc.v[0]);
        for (int m = 0; m < mr; ++m) proj_row(t, r0 + m, q * 2 * L, acc, m);
      });
    }
  }

  void run_ln(Team& team, int p) const {
    int np = team.active();
    T* rb = rowbuf + (int64_t)p * 5 * H;
    for (int64_t t = 0; t < T_; ++t) {
      int64_t u0, u1, q0, q1, b0, b1;
      split_range(NU, p, np, u0, u1);
      const T* hp = hprev(t);
      T* zt = zhat + t * B * 4 * H;
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t hu = u * L;
        const int n = (int)std::min<int64_t>(L, H - hu);
        for (int half = 0; half < 2; ++half) {
          for_row_blocks<T, MRMAX, NV>(hp, R, wf + (u * 2 + half) * R * 2 * L, R, B, [&](int64_t r0, auto& acc) {
            constexpr int mr = sizeof(acc.v) / sizeof(acc.v[0]);
            for (int m = 0; m < mr; ++m)
              for (int j = 0; j < NV; ++j) st(acc.v[m][j], zt + (r0 + m) * 4 * H + (2 * half + j) * H + hu, n);
          });
        }
      }
      if ((np = team.sync(p)) <= p) return;  // zhat[t] rows complete
      split_range(B, p, np, b0, b1);
      for (int64_t b = b0; b < b1; ++b) ln_row(t, b, rb);
      if (P > 0) {
        if ((np = team.sync(p)) <= p) return;
        split_range(NPP, p, np, q0, q1);
        proj_phase(t, q0, q1);
      }
      if ((np = team.sync(p)) <= p) return;
    }
  }

  void run(Team& team, int p) const {
    if (ln_ghh) {
      run_ln(team, p);
      return;
    }
    run_plain(team, p);
    if (stream_gates) stream_fence();  // this thread's streamed gates visible before the region ends
  }

  void run_plain(Team& team, int p) const {
    if (by_rows) {
      run_rows(team, p);
      return;
    }
    int np = team.active();
    T* pre = scratch + (int64_t)p * B * 4 * Hp;  // (B, 4Hp) interleaved; my unit blocks only
    for (int64_t t = 0; t < T_; ++t) {
      int64_t u0, u1, q0, q1;
      split_range(NU, p, np, u0, u1);
      const T* hp = hprev(t);
      prefetch_step(t, u0, u1, 0, B);
      // the recurrent product of my unit blocks (each panel stays in L1 across the row blocks) ...
      product(hp, wx ? xin + t * B * I : nullptr, B, u0, u1, pre);
      // ... then the pointwise pass row by row: xp, gates, c, h are read and written in order,
      // which the prefetchers follow (a row-inner order here costs ~2x in cache misses).
      for (int64_t b = 0; b < B; ++b) row_cells(t, b, u0, u1, pre + b * 4 * Hp);
      if (P > 0) {
        if ((np = team.sync(p)) <= p) return;  // hc[t] complete
        split_range(NPP, p, np, q0, q1);
        proj_phase(t, q0, q1);
      }
      if ((np = team.sync(p)) <= p) return;  // h_t complete before anyone reads it
    }
  }

  // pre (rows, 4Hp) <- [h | x] (rows of hp, and of xa with wx) @ the 2L-wide panels of unit blocks [u0, u1)
  void product(const T* hp, const T* xa, int64_t rows, int64_t u0, int64_t u1, T* pre) const {
    for (int64_t u = u0; u < u1; ++u)
      for (int half = 0; half < 2; ++half)
        for_row_blocks2<T, MRMAX, NV>(hp, R, wf + (u * 2 + half) * R * 2 * L, R, xa, I,
                                      wx ? wx + (u * 2 + half) * I * 2 * L : nullptr, I, rows,
                                      [&](int64_t r0, auto& acc) {
          constexpr int mr = sizeof(acc.v) / sizeof(acc.v[0]);
          for (int m = 0; m < mr; ++m) {
            T* d = pre + (r0 + m) * 4 * Hp + u * 4 * L + half * 2 * L;
            acc.v[m][0].store(d);
            acc.v[m][1].store(d + L);
          }
        });
  }

  // Row split: my rows [b0, b1), all unit blocks, no barrier (no thread reads another's rows).
  void run_rows(Team& team, int p) const {
    int64_t b0, b1;
    split_range(B, p, team.active(), b0, b1);
    if (b0 >= b1) return;
    T* pre = scratch + (int64_t)p * B * 4 * Hp;
    for (int64_t t = 0; t < T_; ++t) {
      const T* hp = hprev(t) + b0 * R;
      const T* xa = wx ? xin + (t * B + b0) * I : nullptr;  // [h_{t-1} | x_t] @ [W_hh; W_ih]^T with wx
      prefetch_step(t, 0, NU, b0, b1);
      if constexpr (kRowNV<T> == 4) {  // wf, wx hold panels (NU, K, 4L) here: gates i, f, g, o at once
        for (int64_t u = 0; u < NU; ++u)
          for_row_blocks2<T, 6, 4>(hp, R, wf + u * R * 4 * L, R, xa, I, wx ? wx + u * I * 4 * L : nullptr, I,
                                   b1 - b0, [&](int64_t r0, auto& acc) {
            constexpr int mr = sizeof(acc.v) / sizeof(acc.v[0]);
            for (int m = 0; m < mr; ++m)
              for (int j = 0; j < 4; ++j) acc.v[m][j].store(pre + (r0 + m) * 4 * Hp + u * 4 * L + j * L);
          });
      } else {
        product(hp, xa, b1 - b0, 0, NU, pre);
      }
      for (int64_t b = b0; b < b1; ++b) row_cells(t, b, 0, NU, pre + (b - b0) * 4 * Hp);
    }
  }
};

// ============================================================================================
// Backward
// ============================================================================================
template <typename T>
struct BwdLoop {
  using V = Vec<T>;
  static constexpr int L = V::L;
  static constexpr int NV = 2;
  static constexpr int MRMAX = kMRMax<T>;

  int64_t T_ = 0, B = 0, H = 0, R = 0, P = 0, NU = 0, NPH = 0, NPR = 0;
  bool coupled = false;
  // saved by the forward
  const T* gates = nullptr;  // (T, B, 4H)
  const T* call = nullptr;   // (T+1, B, H)
  const T* ctil = nullptr;   // (T, B, H) or null (then c~_t = call[t+1])
  const T* peep = nullptr;   // (3, H) or null
  const T* zc = nullptr;     // (T, B, H) or null
  const T* zh = nullptr;     // (T, B, R) or null
  const int64_t* len = nullptr;
  const T* wb = nullptr;     // packed (NPR, 4H, 2L)
  const T* wrb = nullptr;    // packed (NPH, P, 2L), projection only
  const T* dy = nullptr;     // (T, B, R), or one row (R) broadcast over all steps and rows (dy_rs == 0)
  int64_t dy_rs = 0;         // row stride of dy: R, or 0 when broadcast
  // outputs / working buffers
  T* da = nullptr;     // (T, B, 4H) gradient of the gate pre-activations (torch's gate order)
  T* dpan = nullptr;   // row split only, or null: da again, streamed into panel layout for the weight-
  int64_t dpan_ks = 0; // gradient GEMM: element (tb, c) at dpan[(c / 2L) * dpan_ks + tb * 2L + c % 2L]
  T* dH = nullptr;     // (B, R): on entry grad of h_T + dy[T-1]; updated in place to grad of h_{t-1}
  T* dC = nullptr;     // (B, H): on entry grad of c_T; updated in place to grad of c_{t-1}
  T* dht = nullptr;    // (T, B, P) projection only: grad of the projected h~_t (before zoneout);
                       //           dht[T-1] filled by the caller
  T* dhc = nullptr;    // (B, H) projection only: grad of o * tanh(c~) at the current step
  T* dpeep = nullptr;  // (3, H) peephole gradients, accumulated (zeroed by the caller), or null
  // layer_norm only
  const T* ln_ghh = nullptr;  // (4H)
  const T* ln_gc = nullptr;   // (H)
  const T* ln_bc = nullptr;   // (H)
  const T* zhat = nullptr;    // (T, B, 4H) normalised h W_hh^T
  const T* rstd_h = nullptr;  // (T, B)
  const T* stat_c = nullptr;  // (T, B, 2)
  T* dzh = nullptr;           // (T, B, 4H) grad of h_{t-1} W_hh^T (the recurrent product's left side)
  T* acc_thr = nullptr;       // (nthreads, 5H) zeroed: per-thread grads of ln gain_c, shift_c, peephole
  T* rowbuf = nullptr;        // (nthreads, H) scratch
  bool by_rows = false;       // row split (P == 0, no layer norm, no peephole: dpeep sums over rows)
  T* db_thr = nullptr;        // (nthreads, 2, 4H) zeroed, or null: per-thread sums of da (the bias
                              // gradient), [running sum | sum of the current 64 steps] (two levels:
                              // a float32 sum over T*B rows in one row would lose ~T*B ulp)

  // The inner sum accumulates in cells(); every 64 steps it is added to the running one.
  inline T* db_inner(int p) const { return db_thr ? db_thr + (int64_t)p * 8 * H + 4 * H : nullptr; }
  inline void db_fold(int p, int64_t t) const {
    if (!db_thr || (T_ - 1 - t) % 64 != 63) return;
    T* o = db_thr + (int64_t)p * 8 * H;
    for (int64_t k = 0; k < 4 * H; ++k) o[k] += o[4 * H + k], o[4 * H + k] = T(0);
  }

  inline bool valid(int64_t t, int64_t b) const { return len == nullptr || t < len[b]; }
  inline T* pan_at(int64_t tb, int64_t c) const { return dpan + (c / (2 * L)) * dpan_ks + tb * 2 * L + c % (2 * L); }

  // layer_norm: the pointwise backward of row b at step t (row-wise: LN needs whole rows).
  void ln_cell(int64_t t, int64_t b, int p) const {
    const int64_t tb = t * B + b, H4 = 4 * H;
    T* dap = da + tb * H4;
    T* dz = dzh + tb * H4;
    if (!valid(t, b)) {
      fill_n(dap, H4, T(0));
      fill_n(dz, H4, T(0));
      return;
    }
    const V one = V::set1(T(1));
    T* acc = acc_thr + (int64_t)p * 5 * H;  // [dgain_c | dshift_c | dpeep (3H)]
    T* dch = rowbuf + (int64_t)p * H;       // grad of the normalised c~
    const T* gp = gates + tb * H4;
    const T* cb = ctil ? ctil + tb * H : call + (tb + B) * H;
    const T* cpr = call + tb * H;
    const V mcv = V::set1(stat_c[2 * tb]), rcv = V::set1(stat_c[2 * tb + 1]);
    V s1 = V::zero(), s2 = V::zero();
    for (int64_t u = 0; u < NU; ++u) {
      const int64_t hu = u * L;
      const int n = (int)std::min<int64_t>(L, H - hu);
      const V o = ld(gp + 3 * H + hu, n);
      const V chat = (ld(cb + hu, n) - mcv) * rcv;
      const V gc = ld(ln_gc + hu, n);
      const V ty = tanh(fmadd(gc, chat, ld(ln_bc + hu, n)));
      V dh;
      if (P > 0) {
        dh = ld(dhc + b * H + hu, n);
      } else {
        dh = ld(dH + b * R + hu, n);
        if (zh) dh = (one - ld(zh + tb * R + hu, n)) * dh;
      }
      st(dh * ty * o * (one - o), dap + 3 * H + hu, n);
      const V dyv = dh * o * (one - ty * ty);  // 0 in the tail lanes (dh loaded as 0 there)
      st(fmadd(dyv, chat, ld(acc + hu, n)), acc + hu, n);
      st(dyv + ld(acc + H + hu, n), acc + H + hu, n);
      const V dc = dyv * gc;
      st(dc, dch + hu, n);
      s1 = s1 + dc;
      s2 = fmadd(dc, chat, s2);
    }
    const V m1 = V::set1(s1.hsum() / T(H)), m2 = V::set1(s2.hsum() / T(H));
    for (int64_t u = 0; u < NU; ++u) {
      const int64_t hu = u * L;
      const int n = (int)std::min<int64_t>(L, H - hu);
      const V i = ld(gp + hu, n), f = ld(gp + H + hu, n), g = ld(gp + 2 * H + hu, n);
      const V c_prev = ld(cpr + hu, n);
      const V chat = (ld(cb + hu, n) - mcv) * rcv;
      const V dc_in = ld(dC + b * H + hu, n);
      V mc = V::zero();
      if (zc) mc = ld(zc + tb * H + hu, n);
      V dct = fmadd((ld(dch + hu, n) - m1 - chat * m2), rcv, (one - mc) * dc_in);
      const V dao = ld(dap + 3 * H + hu, n);
      if (peep) dct = fmadd(dao, ld(peep + 2 * H + hu, n), dct);
      const V dag = dct * i * (one - g * g);
      V dai, daf;
      if (coupled) {
        dai = dct * (g - c_prev) * i * (one - i);
        daf = V::zero();
      } else {
        dai = dct * g * i * (one - i);
        daf = dct * c_prev * f * (one - f);
      }
      V dcp = fmadd(dct, f, mc * dc_in);
      if (peep) {
        dcp = fmadd(dai, ld(peep + hu, n), dcp);
        dcp = fmadd(daf, ld(peep + H + hu, n), dcp);
        T* dp = acc + 2 * H + hu;
        st(fmadd(dai, c_prev, ld(dp, n)), dp, n);
        st(fmadd(daf, c_prev, ld(dp + H, n)), dp + H, n);
        st(fmadd(dao, ld(cb + hu, n), ld(dp + 2 * H, n)), dp + 2 * H, n);
      }
      st(dai, dap + hu, n);
      st(daf, dap + H + hu, n);
      st(dag, dap + 2 * H + hu, n);
      st(dcp, dC + b * H + hu, n);
    }
    // through LN(h W_hh^T): dz = rstd (dzhat - mean(dzhat) - zhat mean(dzhat zhat)), dzhat = da * gain
    const T* zh_ = zhat + tb * H4;
    T t1 = 0, t2 = 0;
    {
      V v1 = V::zero(), v2 = V::zero();
      int64_t k = 0;
      for (; k + L <= H4; k += L) {
        const V d = V::load(dap + k) * V::load(ln_ghh + k);
        v1 = v1 + d;
        v2 = fmadd(d, V::load(zh_ + k), v2);
      }
      t1 = v1.hsum(), t2 = v2.hsum();
      for (; k < H4; ++k) {
        const T d = dap[k] * ln_ghh[k];
        t1 += d;
        t2 += d * zh_[k];
      }
    }
    const T r = rstd_h[tb], m1s = t1 / T(H4), m2s = t2 / T(H4);
    {
      const V rv = V::set1(r), a1 = V::set1(m1s), a2 = V::set1(m2s);
      int64_t k = 0;
      for (; k + L <= H4; k += L)
        ((V::load(dap + k) * V::load(ln_ghh + k) - a1 - V::load(zh_ + k) * a2) * rv).store(dz + k);
      for (; k < H4; ++k) dz[k] = (dap[k] * ln_ghh[k] - m1s - zh_[k] * m2s) * r;
    }
  }

  // The pointwise backward of row b (valid at step t) for unit blocks u .. u+C-1, side by side
  // (see FwdLoop::cells).
  template <int C>
  inline void cells(int64_t t, int64_t b, int64_t u, T* dbp) const {
    const int64_t tb = t * B + b;
    const V one = V::set1(T(1));
    const T* gp = gates + tb * 4 * H;
    const T* cp = call + tb * H;
    const T* ctp = ctil ? ctil + tb * H : call + (tb + B) * H;
    int64_t hu[C];
    int n[C];
    V i[C], f[C], g[C], o[C], c_prev[C], ct[C], dh[C], dc_in[C], mc[C], tc[C], dao[C], dct[C];
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      hu[c] = (u + c) * L;
      n[c] = (int)std::min<int64_t>(L, H - hu[c]);
      i[c] = ld(gp + hu[c], n[c]);
      f[c] = ld(gp + H + hu[c], n[c]);
      g[c] = ld(gp + 2 * H + hu[c], n[c]);
      o[c] = ld(gp + 3 * H + hu[c], n[c]);
      c_prev[c] = ld(cp + hu[c], n[c]);
      ct[c] = ld(ctp + hu[c], n[c]);
      if (P > 0) {
        dh[c] = ld(dhc + b * H + hu[c], n[c]);
      } else {
        dh[c] = ld(dH + b * R + hu[c], n[c]);
        if (zh) dh[c] = (one - ld(zh + tb * R + hu[c], n[c])) * dh[c];
      }
      dc_in[c] = ld(dC + b * H + hu[c], n[c]);
      mc[c] = zc ? ld(zc + tb * H + hu[c], n[c]) : V::zero();
    }
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) tc[c] = fast_tanh(ct[c]);
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      dao[c] = dh[c] * tc[c] * o[c] * (one - o[c]);
      dct[c] = fmadd(dh[c] * o[c], one - tc[c] * tc[c], (one - mc[c]) * dc_in[c]);
      if (peep) dct[c] = fmadd(dao[c], ld(peep + 2 * H + hu[c], n[c]), dct[c]);
    }
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      const V dag = dct[c] * i[c] * (one - g[c] * g[c]);
      V dai, daf;
      if (coupled) {
        dai = dct[c] * (g[c] - c_prev[c]) * i[c] * (one - i[c]);
        daf = V::zero();
      } else {
        dai = dct[c] * g[c] * i[c] * (one - i[c]);
        daf = dct[c] * c_prev[c] * f[c] * (one - f[c]);
      }
      V dcp = fmadd(dct[c], f[c], mc[c] * dc_in[c]);
      if (peep) {
        dcp = fmadd(dai, ld(peep + hu[c], n[c]), dcp);
        dcp = fmadd(daf, ld(peep + H + hu[c], n[c]), dcp);
        T* dp = dpeep + hu[c];
        st(fmadd(dai, c_prev[c], ld(dp, n[c])), dp, n[c]);
        st(fmadd(daf, c_prev[c], ld(dp + H, n[c])), dp + H, n[c]);
        st(fmadd(dao[c], ct[c], ld(dp + 2 * H, n[c])), dp + 2 * H, n[c]);
      }
      T* dap = da + tb * 4 * H + hu[c];
      st(dai, dap, n[c]);
      st(daf, dap + H, n[c]);
      st(dag, dap + 2 * H, n[c]);
      st(dao[c], dap + 3 * H, n[c]);
      if (dpan) {  // n[c] == L (H % L == 0); nothing reads these in the loop: no cache line fetched
        dai.stream(pan_at(tb, hu[c]));
        daf.stream(pan_at(tb, H + hu[c]));
        dag.stream(pan_at(tb, 2 * H + hu[c]));
        dao[c].stream(pan_at(tb, 3 * H + hu[c]));
      }
      st(dcp, dC + b * H + hu[c], n[c]);
      if (dbp) {  // the bias gradient: sum of da over steps and rows (0 in the tail lanes)
        T* d = dbp + hu[c];
        st(ld(d, n[c]) + dai, d, n[c]);
        st(ld(d + H, n[c]) + daf, d + H, n[c]);
        st(ld(d + 2 * H, n[c]) + dag, d + 2 * H, n[c]);
        st(ld(d + 3 * H, n[c]) + dao[c], d + 3 * H, n[c]);
      }
    }
  }

  inline void row_cells(int64_t t, int64_t b, int64_t u0, int64_t u1, T* dbp) const {
    if (!valid(t, b)) {  // da = 0; dC, dH pass through unchanged
      const int64_t h0_ = u0 * L, h1_ = std::min<int64_t>(H, u1 * L);
      T* dap = da + (t * B + b) * 4 * H;
      if (h1_ > h0_)
        for (int q = 0; q < 4; ++q) fill_n(dap + q * H + h0_, h1_ - h0_, T(0));
      if (dpan)
        for (int q = 0; q < 4; ++q)
          for (int64_t hu = h0_; hu < h1_; hu += L) V::zero().stream(pan_at(t * B + b, q * H + hu));
      return;
    }
    int64_t u = u0;
    for (; u + 2 <= u1; u += 2) cells<2>(t, b, u, dbp);
    if (u < u1) cells<1>(t, b, u, dbp);
  }

  // dH[b, c0:c0+2L] <- da[t, b] @ W_hh[:, cols] + coef * dH + dy[t-1]   (grad of h_{t-1})
  template <typename A>
  inline void dh_row(int64_t t, int64_t b, int64_t c0, const A& acc, int m) const {
    const int64_t tb = t * B + b;
    const bool ok = valid(t, b);
    const bool prev_ok = t > 0 && valid(t - 1, b);
    constexpr int nv = sizeof(acc.v[0]) / sizeof(acc.v[0][0]);  // 2, or kRowNV in the row split
    for (int j = 0; j < nv; ++j) {
      const int64_t c = c0 + j * L;
      const int n = (int)std::max<int64_t>(0, std::min<int64_t>(L, R - c));
      if (n == 0) break;
      T* d = dH + b * R + c;
      const V old = ld(d, n);
      V v;
      if (!ok)
        v = acc.v[m][j] + old;  // the state passed through unchanged
      else if (zh)
        v = fmadd(ld(zh + tb * R + c, n), old, acc.v[m][j]);
      else
        v = acc.v[m][j];
      if (prev_ok) v = v + ld(dy + (tb - B) * dy_rs + c, n);
      st(v, d, n);
      if (P > 0 && t > 0) {
        T* o = dht + (tb - B) * P + c;
        if (!prev_ok)
          fill_n(o, n, T(0));
        else if (zh)
          st((V::set1(T(1)) - ld(zh + (tb - B) * R + c, n)) * v, o, n);
        else
          st(v, o, n);
      }
    }
  }

  void dhc_phase(int64_t t, int64_t ph0, int64_t ph1) const {
    // grad of o * tanh(c~) for my units: dht[t] @ W_hr
    const T* a = dht + t * B * P;
    for (int64_t q = ph0; q < ph1; ++q) {
      for_row_blocks<T, MRMAX, NV>(a, P, wrb + q * P * 2 * L, P, B, [&](int64_t r0, auto& acc) {
        constexpr int mr = sizeof(acc.v) / sizeof(acc.v[0]);
        for (int m = 0; m < mr; ++m)
          for (int j = 0; j < NV; ++j) {
            const int64_t c = q * 2 * L + j * L;
            const int n = (int)std::max<int64_t>(0, std::min<int64_t>(L, H - c));
            if (n > 0) st(acc.v[m][j], dhc + (r0 + m) * H + c, n);
          }
      });
    }
  }

  void dh_phase(int64_t t, const T* left, int64_t pr0, int64_t pr1) const {
    const int64_t K4 = 4 * H;
    const T* a = left + t * B * K4;
    for (int64_t q = pr0; q < pr1; ++q) {
      for_row_blocks<T, MRMAX, NV>(a, K4, wb + q * K4 * 2 * L, K4, B, [&](int64_t r0, auto& acc) {
        constexpr int mr = sizeof(acc.v) / sizeof(acc.v[0]);
        for (int m = 0; m < mr; ++m) dh_row(t, r0 + m, q * 2 * L, acc, m);
      });
    }
  }

  void run_ln(Team& team, int p) const {
    int np = team.active();
    for (int64_t t = T_ - 1; t >= 0; --t) {
      int64_t ph0, ph1, pr0, pr1, b0, b1;
      if (P > 0) {
        split_range(NPH, p, np, ph0, ph1);
        dhc_phase(t, ph0, ph1);
        if ((np = team.sync(p)) <= p) return;  // dhc rows complete
      }
      split_range(B, p, np, b0, b1);
      for (int64_t b = b0; b < b1; ++b) ln_cell(t, b, p);
      if ((np = team.sync(p)) <= p) return;  // dzh[t] complete
      split_range(NPR, p, np, pr0, pr1);
      dh_phase(t, dzh, pr0, pr1);
      if ((np = team.sync(p)) <= p) return;  // dH (and dht[t-1]) rows complete
    }
  }

  // Row split: my rows [b0, b1), all units and all columns of dH, no barrier.
  void run_rows(Team& team, int p) const {
    T* dbp = db_inner(p);
    int64_t b0, b1;
    split_range(B, p, team.active(), b0, b1);
    if (b0 >= b1) return;
    const int64_t K4 = 4 * H;
    for (int64_t t = T_ - 1; t >= 0; --t) {
      for (int64_t b = b0; b < b1; ++b) row_cells(t, b, 0, NU, dbp);
      db_fold(p, t);
      const T* a = da + (t * B + b0) * K4;
      constexpr int RNV = kRowNV<T>, W = RNV * L;  // wb holds panels W wide here (see lstm_fused.cpp)
      for (int64_t q = 0; q < (R + W - 1) / W; ++q)
        for_row_blocks<T, (RNV > 2 ? 6 : MRMAX), RNV>(a, K4, wb + q * K4 * W, K4, b1 - b0, [&](int64_t r0, auto& acc) {
          constexpr int mr = sizeof(acc.v) / sizeof(acc.v[0]);
          for (int m = 0; m < mr; ++m) dh_row(t, b0 + r0 + m, q * W, acc, m);
        });
    }
  }

  void run(Team& team, int p) const {
    if (ln_ghh) {
      run_ln(team, p);
      return;
    }
    if (by_rows) {
      run_rows(team, p);
      if (dpan) stream_fence();  // this thread's streamed da visible before the region ends
      return;
    }
    T* dbp = db_inner(p);
    int np = team.active();
    for (int64_t t = T_ - 1; t >= 0; --t) {
      int64_t ph0, ph1, pr0, pr1;
      // Without a projection R == H and a thread's product columns are its own units, so the
      // product of step t and the pointwise pass of step t-1 need no barrier between them.
      split_range(NPH, p, np, ph0, ph1);
      const int64_t u0 = std::min<int64_t>(NU, ph0 * 2), u1 = std::min<int64_t>(NU, ph1 * 2);
      if (P > 0) dhc_phase(t, ph0, ph1);
      for (int64_t b = 0; b < B; ++b) row_cells(t, b, u0, u1, dbp);  // rows outer: in memory order
      db_fold(p, t);
      if ((np = team.sync(p)) <= p) return;  // da[t] complete
      if (P > 0) {
        split_range(NPR, p, np, pr0, pr1);
      } else {
        split_range(NPH, p, np, pr0, pr1);
      }
      dh_phase(t, da, pr0, pr1);
      if (P > 0 && (np = team.sync(p)) <= p) return;  // dht[t-1] complete before the next step reads whole rows
    }
  }
};

}  // namespace lstmkit
