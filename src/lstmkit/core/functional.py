"""The reference LSTM: the published equations written step by step in plain PyTorch.

This is the oracle every faster path is tested against, and the path that runs whatever no
fused kernel supports (variants, gate traces, float64, any device). It is differentiable by
autograd. Gate order is i, f, g, o, as in torch.nn.LSTM and cuDNN; state is (h, c).

    a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh                  # (B, 4H) pre-activations
    i_t = σ(a_i)      input gate: what new information is worth remembering
    f_t = σ(a_f)      forget gate: what old memory may fade
    g_t = tanh(a_g)   candidate memory
    o_t = σ(a_o)      output gate: what memory is used now
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    h_t = o_t ⊙ tanh(c_t)            (then h_t = W_hr h_t with a projection)

Variants (each an option of the same step, see :class:`CellOptions`):

* peephole (Gers & Schmidhuber 2000): a_i += p_i ⊙ c_{t-1}, a_f += p_f ⊙ c_{t-1}, and
  a_o += p_o ⊙ c_t, so the gates see the memory they control.
* layer_norm (Ba et al. 2016): a_t = LN(W_ih x_t; γ_ih, β_ih) + LN(W_hh h_{t-1}; γ_hh, β_hh) + b,
  each LN over the whole 4H vector, and h_t = o_t ⊙ tanh(LN(c_t; γ_c, β_c)).
* coupled (Greff et al. 2017, "CIFG"): f_t = 1 − i_t; the forget rows of the weights are unused.
* zoneout (Krueger et al. 2016): c_t = m_c ⊙ c_{t-1} + (1 − m_c) ⊙ c̃_t and likewise for h, with
  m ~ Bernoulli(z) per unit and step in training and m = z (its expectation) in evaluation.
* weight_drop (DropConnect on W_hh, Merity et al. 2017) is applied to the weight before the loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

LN_EPS = 1e-5


@dataclass(frozen=True)
class CellOptions:
    """Static switches of the step (which variant equations apply)."""

    peephole: bool = False
    layer_norm: bool = False
    coupled: bool = False


@dataclass
class LayerWeights:
    """The weights of one layer and one direction, in torch.nn.LSTM's layout.

    w_ih (4H, I), w_hh (4H, P or H), b_ih / b_hh (4H,) or None, w_hr (P, H) or None,
    peephole (3, H) rows p_i, p_f, p_o or None, ln: (γ_ih, β_ih, γ_hh, β_hh, γ_c, β_c) with
    shapes (4H,)×4 and (H,)×2, or None.
    """

    w_ih: Tensor
    w_hh: Tensor
    b_ih: Tensor | None = None
    b_hh: Tensor | None = None
    w_hr: Tensor | None = None
    peephole: Tensor | None = None
    ln: tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor] | None = None


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """LN over the last dimension (Ba et al. 2016), eps 1e-5, biased variance."""
    # the gain's size, x's last: a constant for the TorchScript exporter, where x's size is traced
    return F.layer_norm(x, weight.shape, weight, bias, LN_EPS)


def input_projection(x: Tensor, w: LayerWeights, opts: CellOptions) -> Tensor:
    """W_ih x_t for all steps at once: (T, B, I) -> (T, B, 4H), with b_ih folded in when not LN."""
    xw = torch.matmul(x, w.w_ih.t())
    if opts.layer_norm:
        assert w.ln is not None
        xw = layer_norm(xw, w.ln[0], w.ln[1])
    if w.b_ih is not None:
        xw = xw + w.b_ih
    return xw


def cell_step(
    xw_t: Tensor,
    h: Tensor,
    c: Tensor,
    w: LayerWeights,
    opts: CellOptions,
) -> tuple[Tensor, Tensor, Tensor]:
    """One step from the projected input.

    xw_t (B, 4H) from :func:`input_projection`; h (B, P|H); c (B, H).
    Returns (h̃, c̃, gates) before zoneout: h̃ (B, P|H), c̃ (B, H), gates (B, 4H) = [i, f, g, o].
    """
    hw = torch.matmul(h, w.w_hh.t())
    if opts.layer_norm:
        assert w.ln is not None
        hw = layer_norm(hw, w.ln[2], w.ln[3])
    a = xw_t + hw
    if w.b_hh is not None:
        a = a + w.b_hh
    a_i, a_f, a_g, a_o = a.chunk(4, dim=-1)
    if opts.peephole:
        assert w.peephole is not None
        a_i = a_i + w.peephole[0] * c
        a_f = a_f + w.peephole[1] * c
    i = torch.sigmoid(a_i)
    f = 1.0 - i if opts.coupled else torch.sigmoid(a_f)
    g = torch.tanh(a_g)
    c_new = f * c + i * g
    if opts.peephole:
        assert w.peephole is not None
        a_o = a_o + w.peephole[2] * c_new
    o = torch.sigmoid(a_o)
    if opts.layer_norm:
        assert w.ln is not None
        h_new = o * torch.tanh(layer_norm(c_new, w.ln[4], w.ln[5]))
    else:
        h_new = o * torch.tanh(c_new)
    if w.w_hr is not None:
        h_new = torch.matmul(h_new, w.w_hr.t())
    return h_new, c_new, torch.cat([i, f, g, o], dim=-1)


def run_layer(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    w: LayerWeights,
    opts: CellOptions,
    *,
    zoneout_c: Tensor | None = None,
    zoneout_h: Tensor | None = None,
    lengths: Tensor | None = None,
    trace: bool = False,
) -> tuple[Tensor, Tensor, Tensor, tuple[Tensor, Tensor] | None]:
    """One layer, one direction, forward in time (the caller reverses for the other direction).

    x (T, B, I); h0 (B, P|H); c0 (B, H); zoneout masks (T, B, H) / (T, B, P|H) with 1 = keep the
    old value (in evaluation the caller passes the rate z); lengths (B,) int64: for t ≥ lengths[b]
    the state of sequence b stays, its output and trace are 0.
    Returns y (T, B, P|H), h_T, c_T and, when trace, (gates (T, B, 4H), c (T, B, H)).
    """
    T = x.shape[0]
    xw = input_projection(x, w, opts)
    h, c = h0, c0
    ys: list[Tensor] = []
    gates_t: list[Tensor] = []
    cs: list[Tensor] = []
    valid_all = None
    if lengths is not None:
        steps = torch.arange(T, device=x.device).unsqueeze(1)
        valid_all = (steps < lengths.to(x.device).unsqueeze(0)).unsqueeze(-1)  # (T, B, 1)
    for t in range(T):
        h_new, c_new, gates = cell_step(xw[t], h, c, w, opts)
        if zoneout_c is not None:
            c_new = zoneout_c[t] * c + (1.0 - zoneout_c[t]) * c_new
        if zoneout_h is not None:
            h_new = zoneout_h[t] * h + (1.0 - zoneout_h[t]) * h_new
        if valid_all is not None:
            v = valid_all[t]
            h = torch.where(v, h_new, h)
            c = torch.where(v, c_new, c)
            ys.append(torch.where(v, h_new, torch.zeros_like(h_new)))
            if trace:
                gates_t.append(torch.where(v, gates, torch.zeros_like(gates)))
                cs.append(torch.where(v, c_new, torch.zeros_like(c_new)))
        else:
            h, c = h_new, c_new
            ys.append(h)
            if trace:
                gates_t.append(gates)
                cs.append(c)
    y = torch.stack(ys) if ys else x.new_zeros((0, x.shape[1], h0.shape[-1]))
    tr = None
    if trace:
        if gates_t:
            tr = (torch.stack(gates_t), torch.stack(cs))
        else:
            tr = (x.new_zeros((0, x.shape[1], c0.shape[-1] * 4)), x.new_zeros((0, x.shape[1], c0.shape[-1])))
    return y, h, c, tr


def reverse_index(T: int, lengths: Tensor | None, batch: int, device: torch.device) -> Tensor | None:
    """Index (T, B) that reverses each sequence within its own length (an involution).

    None when every sequence has length T (then plain flipping along time does it).
    """
    if lengths is None:
        return None
    steps = torch.arange(T, device=device).unsqueeze(1).expand(T, batch)
    lens = lengths.to(device).unsqueeze(0).expand(T, batch)
    return torch.where(steps < lens, lens - 1 - steps, steps)


def time_reverse(x: Tensor, index: Tensor | None) -> Tensor:
    """Reverse (T, B, ...) along time, each sequence within its length when index is given."""
    if index is None:
        return x.flip(0)
    idx = index.view(index.shape + (1,) * (x.dim() - 2)).expand_as(x)
    return torch.gather(x, 0, idx)
