// lstmkit fused kernels: the forward time loop of one LSTM layer, one direction (FwdLoop; no torch
// here). Buffer layouts and the thread splits: lstm_loops.h. Filled in by fused_forward
// (lstm_layer.cpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "lstm_loops.h"

namespace lstmkit {

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


}  // namespace lstmkit
