// lstmkit fused kernels: the backward time loop of one LSTM layer, one direction (BwdLoop; no torch
// here): the pointwise backward and the recurrent product of every step, the bias gradient summed
// as it goes. Buffer layouts and the thread splits: lstm_loops.h. Filled in by fused_backward
// (lstm_layer.cpp).
#pragma once

#include <algorithm>
#include <cstdint>

#include "lstm_loops.h"

namespace lstmkit {

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
      constexpr int RNV = kRowNV<T>, W = RNV * L;  // wb holds panels W wide here (fused_backward)
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
