"""The one test oracle: the published LSTM equations written out gate by gate, with no code shared
with lstmkit. Slow and obvious on purpose.

- :func:`cell`: one step of the cell with every variant, for one sequence (x (I,)) or a batch of rows
  (x (B, I)); everything else here calls it.
- :func:`oracle_step`: one step with torch.nn.LSTM's parameter names (``weight_ih_l0``, …).
- :func:`oracle_lstm`: whole sequences, stacked layers, both directions, one sequence at a time.
- :func:`oracle_layer`: one layer and direction over a batch, state held past each sequence's length,
  with zoneout masks per step (the fused kernels' arguments, tests/test_kernels.py).

Gradients come from autograd through these plain torch operations.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _ln(v: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5) -> Tensor:
    mu = v.mean(-1, keepdim=True)
    var = ((v - mu) ** 2).mean(-1, keepdim=True)
    return (v - mu) / torch.sqrt(var + eps) * gamma + beta


def cell(
    x: Tensor,
    h: Tensor,
    c: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    *,
    w_hr: Tensor | None = None,
    peephole: Tensor | None = None,
    coupled: bool = False,
    ln: tuple[Tensor, ...] | None = None,
    zc: Tensor | float | None = None,
    zh: Tensor | float | None = None,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """x (…, I), h (…, P|H), c (…, H); W_ih (4H, I), W_hh (4H, P|H) with rows i, f, g, o;
    peephole (3, H) for i, f, o; ln the gains and shifts (γ_ih, β_ih, γ_hh, β_hh, γ_c, β_c); zc, zh
    the zoneout mixing weights (a 0/1 mask in training, the rate in evaluation). Returns h_t, c_t and
    the gates {i, f, g, o} (…, H)."""
    wx, uh = x @ w_ih.T, h @ w_hh.T
    if ln is not None:
        wx, uh = _ln(wx, ln[0], ln[1]), _ln(uh, ln[2], ln[3])
    a = wx + uh
    if b_ih is not None:
        a = a + b_ih
    if b_hh is not None:
        a = a + b_hh
    ai, af, ag, ao = a.chunk(4, dim=-1)
    if peephole is not None:
        ai = ai + peephole[0] * c
        af = af + peephole[1] * c
    i = torch.sigmoid(ai)
    f = 1 - i if coupled else torch.sigmoid(af)
    g = torch.tanh(ag)
    c_new = f * c + i * g
    if peephole is not None:
        ao = ao + peephole[2] * c_new
    o = torch.sigmoid(ao)
    h_new = o * torch.tanh(_ln(c_new, ln[4], ln[5]) if ln is not None else c_new)
    if w_hr is not None:
        h_new = h_new @ w_hr.T
    if zc is not None:
        c_new = zc * c + (1 - zc) * c_new
    if zh is not None:
        h_new = zh * h + (1 - zh) * h_new
    return h_new, c_new, {"i": i, "f": f, "g": g, "o": o}


def oracle_step(
    x: Tensor,
    h: Tensor,
    c: Tensor,
    p: dict[str, Tensor],
    sfx: str,
    H: int,
    *,
    peephole: bool = False,
    layer_norm: bool = False,
    coupled: bool = False,
    zc: Tensor | float | None = None,
    zh: Tensor | float | None = None,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """x (I,), h (P|H,), c (H,) for one sequence, the weights by torch.nn.LSTM's names with suffix
    ``sfx`` (e.g. ``"_l0"``); returns h_t, c_t and the gates."""
    ln = None
    if layer_norm:
        ln = tuple(p[f"layer_norm_{m}_{w}{sfx}"] for m in ("ih", "hh", "c") for w in ("weight", "bias"))
    h_new, c_new, gates = cell(
        x, h, c, p[f"weight_ih{sfx}"], p[f"weight_hh{sfx}"], p.get(f"bias_ih{sfx}"), p.get(f"bias_hh{sfx}"),
        w_hr=p.get(f"weight_hr{sfx}"), peephole=p[f"weight_peephole{sfx}"] if peephole else None,
        coupled=coupled, ln=ln, zc=zc, zh=zh,
    )  # fmt: skip
    assert gates["i"].shape[-1] == H
    return h_new, c_new, gates


def oracle_lstm(
    x: Tensor,
    params: dict[str, Tensor],
    *,
    H: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    proj_size: int = 0,
    lengths: list[int] | None = None,
    h0: Tensor | None = None,
    c0: Tensor | None = None,
    **variants: object,
) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
    """x (T, B, I). Each sequence b runs alone over its first lengths[b] steps. Returns out (T, B, D·P),
    h_n, c_n (L·D, B, ·) and traces {i,f,g,o,c,h} of shape (L·D, T, B, ·) with zeros past the length."""
    T, B, _ = x.shape
    D = 2 if bidirectional else 1
    R = proj_size or H
    lengths = lengths or [T] * B
    out = torch.zeros(T, B, D * R, dtype=x.dtype)
    h_n = torch.zeros(num_layers * D, B, R, dtype=x.dtype)
    c_n = torch.zeros(num_layers * D, B, H, dtype=x.dtype)
    tr = {k: torch.zeros(num_layers * D, T, B, R if k == "h" else H, dtype=x.dtype) for k in "ifgoch"}
    for b in range(B):
        n = lengths[b]
        seq = x[:n, b]
        for layer in range(num_layers):
            outs = []
            for d in range(D):
                k = layer * D + d
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                h = h0[k, b] if h0 is not None else torch.zeros(R, dtype=x.dtype)
                c = c0[k, b] if c0 is not None else torch.zeros(H, dtype=x.dtype)
                ys = [torch.zeros(R, dtype=x.dtype)] * n
                order = range(n) if d == 0 else range(n - 1, -1, -1)
                for t in order:
                    h, c, gates = oracle_step(seq[t], h, c, params, sfx, H, **variants)  # type: ignore[arg-type]
                    ys[t] = h
                    for g in "ifgo":
                        tr[g][k, t, b] = gates[g]
                    tr["c"][k, t, b] = c
                    tr["h"][k, t, b] = h
                h_n[k, b], c_n[k, b] = h, c
                outs.append(torch.stack(ys) if n else torch.zeros(0, R, dtype=x.dtype))
            seq = torch.cat(outs, -1)
        out[:n, b] = seq
    return out, h_n, c_n, tr


def oracle_layer(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    w_hr: Tensor | None = None,
    peephole: Tensor | None = None,
    coupled: bool = False,
    zoneout_c: Tensor | None = None,
    zoneout_h: Tensor | None = None,
    lengths: Tensor | None = None,
    ln: tuple[Tensor, ...] | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One layer, one direction, a batch: x (T, B, I), h0 (B, P|H), c0 (B, H); zoneout masks (T, B, ·);
    lengths (B,): past its length a sequence keeps its state and outputs zeros. Returns y (T, B, P|H),
    h_T, c_T, the gates (T, B, 4H) in the order i, f, g, o and the cell states (T, B, H), zeros past
    each length."""
    h, c = h0, c0
    ys, gs, cs = [], [], []
    for t in range(x.shape[0]):
        hn, cn, gate = cell(
            x[t], h, c, w_ih, w_hh, b_ih, b_hh, w_hr=w_hr, peephole=peephole, coupled=coupled, ln=ln,
            zc=zoneout_c[t] if zoneout_c is not None else None, zh=zoneout_h[t] if zoneout_h is not None else None,
        )  # fmt: skip
        gates = torch.cat([gate["i"], gate["f"], gate["g"], gate["o"]], dim=1)
        if lengths is not None:
            ok = (t < lengths).unsqueeze(1)
            cn = torch.where(ok, cn, c)
            hn = torch.where(ok, hn, h)
            ys.append(torch.where(ok, hn, torch.zeros_like(hn)))
            gs.append(torch.where(ok, gates, torch.zeros_like(gates)))
        else:
            ys.append(hn)
            gs.append(gates)
        h, c = hn, cn
        cs.append(torch.where((t < lengths).unsqueeze(1), c, torch.zeros_like(c)) if lengths is not None else c)
    T, B = x.shape[0], x.shape[1]
    empty = x.new_zeros(T, B, 0)
    return (
        torch.stack(ys) if ys else empty,
        h,
        c,
        torch.stack(gs) if gs else empty,
        torch.stack(cs) if cs else empty,
    )
