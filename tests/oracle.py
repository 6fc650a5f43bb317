"""An independent oracle: the published LSTM equations written out gate by gate, one sequence at a
time, with no code shared with lstmkit. Slow and obvious on purpose."""

from __future__ import annotations

import torch
from torch import Tensor


def _ln(v: Tensor, gamma: Tensor, beta: Tensor, eps: float = 1e-5) -> Tensor:
    mu = v.mean(-1, keepdim=True)
    var = ((v - mu) ** 2).mean(-1, keepdim=True)
    return (v - mu) / torch.sqrt(var + eps) * gamma + beta


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
    """x (I,), h (P|H,), c (H,) for one sequence; returns h_t, c_t and the gates."""
    W = p[f"weight_ih{sfx}"]
    U = p[f"weight_hh{sfx}"]
    rows = {k: slice(n * H, (n + 1) * H) for n, k in enumerate("ifgo")}
    bias = f"bias_ih{sfx}" in p
    if layer_norm:
        wx = _ln(W @ x, p[f"layer_norm_ih_weight{sfx}"], p[f"layer_norm_ih_bias{sfx}"])
        uh = _ln(U @ h, p[f"layer_norm_hh_weight{sfx}"], p[f"layer_norm_hh_bias{sfx}"])
    else:
        wx, uh = W @ x, U @ h
    pre = {}
    for k, r in rows.items():
        pre[k] = wx[r] + uh[r]
        if bias:
            pre[k] = pre[k] + p[f"bias_ih{sfx}"][r] + p[f"bias_hh{sfx}"][r]
    if peephole:
        pp = p[f"weight_peephole{sfx}"]
        pre["i"] = pre["i"] + pp[0] * c
        pre["f"] = pre["f"] + pp[1] * c
    i = 1 / (1 + torch.exp(-pre["i"]))
    f = 1 - i if coupled else 1 / (1 + torch.exp(-pre["f"]))
    g = torch.tanh(pre["g"])
    c_new = f * c + i * g
    if peephole:
        pre["o"] = pre["o"] + p[f"weight_peephole{sfx}"][2] * c_new
    o = 1 / (1 + torch.exp(-pre["o"]))
    cc = _ln(c_new, p[f"layer_norm_c_weight{sfx}"], p[f"layer_norm_c_bias{sfx}"]) if layer_norm else c_new
    h_new = o * torch.tanh(cc)
    if f"weight_hr{sfx}" in p:
        h_new = p[f"weight_hr{sfx}"] @ h_new
    if zc is not None:
        c_new = zc * c + (1 - zc) * c_new
    if zh is not None:
        h_new = zh * h + (1 - zh) * h_new
    return h_new, c_new, {"i": i, "f": f, "g": g, "o": o}


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
