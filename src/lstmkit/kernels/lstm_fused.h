// lstmkit fused kernels: the time loops of one LSTM layer, forward and backward (no torch here).
//
// Conventions (T steps, B batch, I input, H hidden, P projection, R = P if P > 0 else H; all
// buffers row-major and contiguous; "(T, B, H)" means index (t * B + b) * H + j):
//   L        lanes of Vec<T> (8 floats with AVX2, 4 doubles)
//   Hp       H rounded up to a multiple of L;  NU = Hp / L "unit blocks" of L hidden units
//   panel    K x 2L block of a right-hand matrix, k-major (see lstm_gemm.h); NV = 2 vectors wide
//
// Packed weights (built by lstm_fused.cpp from torch's layout, read-only here):
//   wf   (NU, 2, R, 2L)   forward recurrent panels: wf[u][half][k][j*L + l] = W_hh[(2*half + j)*H + u*L + l][k]
//                          (half 0 holds gates i, f; half 1 holds g, o; units >= H are 0)
//   wr   (NPP, H, 2L)     forward projection panels, NPP = ceil(P / 2L): wr[p][k][c] = W_hr[p*2L + c][k]
//   wb   (NPR, 4H, 2L)    backward recurrent panels, NPR = ceil(R / 2L): wb[p][k][c] = W_hh[k][p*2L + c]
//   wrb  (NPH, P, 2L)     backward projection panels, NPH = ceil(H / 2L): wrb[p][k][c] = W_hr[k][p*2L + c]
//
// Threads: the caller runs the loops inside one `omp parallel` region. Every thread owns a fixed
// range of hidden units (and of projection columns) for the whole sequence, so each element is
// computed by the same arithmetic whatever the thread count (1 and 2 threads agree bit for bit),
// and the threads meet at one barrier per step (two with a projection).
#pragma once

#include <algorithm>
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "lstm_gemm.h"

namespace lstmkit {

inline void thread_barrier() {
#ifdef _OPENMP
#pragma omp barrier
#endif
}

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

// ============================================================================================
// Forward
// ============================================================================================
template <typename T>
struct FwdLoop {
  using V = Vec<T>;
  static constexpr int L = V::L;
  static constexpr int NV = 2;
  static constexpr int MRMAX = 6;

  int64_t T_ = 0, B = 0, H = 0, R = 0, P = 0, Hp = 0, NU = 0, NPP = 0;
  bool coupled = false;
  // inputs
  const T* xp = nullptr;     // (T, B, 4Hp) input projections + both biases, interleaved: [u][gate][lane]
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
  T* call = nullptr;  // (T+1, B, H) c states after zoneout; call[0] = c0 (filled by the caller)
  T* ctil = nullptr;  // (T, B, H) c before zoneout, only with zoneout_c (and saved for backward), else null
  T* gates = nullptr; // (T, B, 4H) activations i, f, g, o in torch's gate order, or null (inference)
  T* hc = nullptr;    // (T, B, H) o * tanh(c) before the projection, only with a projection
  T* scratch = nullptr;  // (nthreads, B, 2L) per-thread i/f pre-activations of one unit block

  inline bool valid(int64_t t, int64_t b) const { return len == nullptr || t < len[b]; }
  inline const T* hprev(int64_t t) const {
    if (hall) return hall + t * B * R;
    return t == 0 ? h0 : y + (t - 1) * B * R;
  }
  inline T* hnext(int64_t t) const { return hall ? hall + (t + 1) * B * R : y + t * B * R; }

  // The pointwise pass for row b, unit block u, step t; pre_if holds the i, f recurrent
  // pre-activations (2L), ag / ao the g, o ones.
  inline void cell(int64_t t, int64_t b, int64_t u, const T* pre_if, V ag, V ao) const {
    const int64_t hu = u * L;
    const int n = (int)std::min<int64_t>(L, H - hu);
    const int64_t tb = t * B + b;
    const T* cp = call + tb * H + hu;
    T* cn = call + (tb + B) * H + hu;
    if (!valid(t, b)) {
      copy_n(cp, cn, n);
      if (ctil) copy_n(cp, ctil + tb * H + hu, n);
      if (gates)
        for (int q = 0; q < 4; ++q) fill_n(gates + tb * 4 * H + q * H + hu, n, T(0));
      if (P > 0) {
        fill_n(hc + tb * H + hu, n, T(0));
      } else {
        copy_n(hprev(t) + b * R + hu, hnext(t) + b * R + hu, n);
        if (hall) fill_n(y + tb * R + hu, n, T(0));
      }
      return;
    }
    const T* x = xp + tb * 4 * Hp + u * 4 * L;
    V ai = V::load(pre_if) + V::load(x);
    V af = V::load(pre_if + L) + V::load(x + L);
    ag = ag + V::load(x + 2 * L);
    ao = ao + V::load(x + 3 * L);
    const V c_prev = ld(cp, n);
    if (peep) {
      ai = fmadd(ld(peep + hu, n), c_prev, ai);
      af = fmadd(ld(peep + H + hu, n), c_prev, af);
    }
    const V one = V::set1(T(1));
    const V i = sigmoid(ai);
    const V f = coupled ? one - i : sigmoid(af);
    const V g = tanh(ag);
    const V ct = fmadd(f, c_prev, i * g);
    if (peep) ao = fmadd(ld(peep + 2 * H + hu, n), ct, ao);
    const V o = sigmoid(ao);
    const V h = o * tanh(ct);
    if (zc) {
      const V m = ld(zc + tb * H + hu, n);
      st(fmadd(m, c_prev - ct, ct), cn, n);  // m c_prev + (1 - m) ct
      if (ctil) st(ct, ctil + tb * H + hu, n);
    } else {
      st(ct, cn, n);
    }
    if (gates) {
      T* gp = gates + tb * 4 * H + hu;
      st(i, gp, n);
      st(f, gp + H, n);
      st(g, gp + 2 * H, n);
      st(o, gp + 3 * H, n);
    }
    if (P > 0) {
      st(h, hc + tb * H + hu, n);
      return;
    }
    V hn = h;
    if (zh) hn = fmadd(ld(zh + tb * R + hu, n), ld(hprev(t) + b * R + hu, n) - h, h);
    st(hn, hnext(t) + b * R + hu, n);
    if (hall) st(hn, y + tb * R + hu, n);
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

  void run(int p, int np) const {
    int64_t u0, u1, q0, q1;
    split_range(NU, p, np, u0, u1);
    split_range(NPP, p, np, q0, q1);
    T* tmp = scratch + (int64_t)p * B * 2 * L;
    for (int64_t t = 0; t < T_; ++t) {
      const T* hp = hprev(t);
      for (int64_t u = u0; u < u1; ++u) {
        const T* pan_if = wf + (u * 2 + 0) * R * 2 * L;
        const T* pan_go = wf + (u * 2 + 1) * R * 2 * L;
        // i, f pre-activations of all rows first (one panel stays in L1 across row blocks) ...
        for_row_blocks<T, MRMAX, NV>(hp, R, pan_if, R, B, [&](int64_t r0, auto& acc) {
          constexpr int mr = sizeof(acc.v) / sizeof(acc.v[0]);
          for (int m = 0; m < mr; ++m) {
            acc.v[m][0].store(tmp + (r0 + m) * 2 * L);
            acc.v[m][1].store(tmp + (r0 + m) * 2 * L + L);
          }
        });
        // ... then g, o with the pointwise pass on the accumulators.
        for_row_blocks<T, MRMAX, NV>(hp, R, pan_go, R, B, [&](int64_t r0, auto& acc) {
          constexpr int mr = sizeof(acc.v) / sizeof(acc.v[0]);
          for (int m = 0; m < mr; ++m)
            cell(t, r0 + m, u, tmp + (r0 + m) * 2 * L, acc.v[m][0], acc.v[m][1]);
        });
      }
      if (P > 0) {
        thread_barrier();  // hc[t] complete
        const T* a = hc + t * B * H;
        for (int64_t q = q0; q < q1; ++q) {
          for_row_blocks<T, MRMAX, NV>(a, H, wr + q * H * 2 * L, H, B, [&](int64_t r0, auto& acc) {
            constexpr int mr = sizeof(acc.v) / sizeof(acc.v[0]);
            for (int m = 0; m < mr; ++m) proj_row(t, r0 + m, q * 2 * L, acc, m);
          });
        }
      }
      thread_barrier();  // h_t complete before anyone reads it
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
  static constexpr int MRMAX = 6;

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
  const T* dy = nullptr;     // (T, B, R)
  // outputs / working buffers
  T* da = nullptr;     // (T, B, 4H) gradient of the gate pre-activations (torch's gate order)
  T* dH = nullptr;     // (B, R): on entry grad of h_T + dy[T-1]; updated in place to grad of h_{t-1}
  T* dC = nullptr;     // (B, H): on entry grad of c_T; updated in place to grad of c_{t-1}
  T* dht = nullptr;    // (T, B, P) projection only: grad of the projected h~_t (before zoneout);
                       //           dht[T-1] filled by the caller
  T* dhc = nullptr;    // (B, H) projection only: grad of o * tanh(c~) at the current step
  T* dpeep = nullptr;  // (3, H) peephole gradients, accumulated (zeroed by the caller), or null

  inline bool valid(int64_t t, int64_t b) const { return len == nullptr || t < len[b]; }

  inline void cell(int64_t t, int64_t b, int64_t u) const {
    const int64_t hu = u * L;
    const int n = (int)std::min<int64_t>(L, H - hu);
    const int64_t tb = t * B + b;
    T* dap = da + tb * 4 * H + hu;
    if (!valid(t, b)) {
      for (int q = 0; q < 4; ++q) fill_n(dap + q * H, n, T(0));
      return;  // dC, dH pass through unchanged
    }
    const V one = V::set1(T(1));
    const T* gp = gates + tb * 4 * H + hu;
    const V i = ld(gp, n), f = ld(gp + H, n), g = ld(gp + 2 * H, n), o = ld(gp + 3 * H, n);
    const V c_prev = ld(call + tb * H + hu, n);
    const V ct = ld(ctil ? ctil + tb * H + hu : call + (tb + B) * H + hu, n);
    V dh;
    if (P > 0) {
      dh = ld(dhc + b * H + hu, n);
    } else {
      dh = ld(dH + b * R + hu, n);
      if (zh) dh = (one - ld(zh + tb * R + hu, n)) * dh;
    }
    const V dc_in = ld(dC + b * H + hu, n);
    V mc = V::zero();
    if (zc) mc = ld(zc + tb * H + hu, n);
    const V tc = tanh(ct);
    const V dao = dh * tc * o * (one - o);
    V dct = fmadd(dh * o, one - tc * tc, (one - mc) * dc_in);
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
      T* dp = dpeep + hu;
      st(fmadd(dai, c_prev, ld(dp, n)), dp, n);
      st(fmadd(daf, c_prev, ld(dp + H, n)), dp + H, n);
      st(fmadd(dao, ct, ld(dp + 2 * H, n)), dp + 2 * H, n);
    }
    st(dai, dap, n);
    st(daf, dap + H, n);
    st(dag, dap + 2 * H, n);
    st(dao, dap + 3 * H, n);
    st(dcp, dC + b * H + hu, n);
  }

  // dH[b, c0:c0+2L] <- da[t, b] @ W_hh[:, cols] + coef * dH + dy[t-1]   (grad of h_{t-1})
  template <typename A>
  inline void dh_row(int64_t t, int64_t b, int64_t c0, const A& acc, int m) const {
    const int64_t tb = t * B + b;
    const bool ok = valid(t, b);
    const bool prev_ok = t > 0 && valid(t - 1, b);
    for (int j = 0; j < NV; ++j) {
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
      if (prev_ok) v = v + ld(dy + (tb - B) * R + c, n);
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

  void run(int p, int np) const {
    int64_t ph0, ph1, pr0, pr1;
    split_range(NPH, p, np, ph0, ph1);
    if (P > 0)
      split_range(NPR, p, np, pr0, pr1);
    else
      pr0 = ph0, pr1 = ph1;  // R == H: the same columns as the units, no second barrier needed
    const int64_t u0 = std::min<int64_t>(NU, ph0 * 2), u1 = std::min<int64_t>(NU, ph1 * 2);
    const int64_t K4 = 4 * H;
    for (int64_t t = T_ - 1; t >= 0; --t) {
      if (P > 0) {
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
      for (int64_t u = u0; u < u1; ++u)
        for (int64_t b = 0; b < B; ++b) cell(t, b, u);
      thread_barrier();  // da[t] complete
      const T* a = da + t * B * K4;
      for (int64_t q = pr0; q < pr1; ++q) {
        for_row_blocks<T, MRMAX, NV>(a, K4, wb + q * K4 * 2 * L, K4, B, [&](int64_t r0, auto& acc) {
          constexpr int mr = sizeof(acc.v) / sizeof(acc.v[0]);
          for (int m = 0; m < mr; ++m) dh_row(t, r0 + m, q * 2 * L, acc, m);
        });
      }
      if (P > 0) thread_barrier();  // dht[t-1] complete before the next step reads whole rows
    }
  }
};

}  // namespace lstmkit
