// lstmkit fused kernels: the threads of one kernel call (Team, its per-step barrier and the
// oversubscription fallback) and the OpenMP region that runs a time loop on them. No torch here.
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

#include "lstm_simd.h"

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

}  // namespace lstmkit
