"""How the layer runs its paths: torch's own LSTM for a whole stack; a stack of layers and directions
one at a time on the fused kernels or the reference equations (:func:`run_stack`, with
:func:`run_fused_layer`, the compiled twin of :func:`lstmkit.core.functional.run_layer`); and the
packing of a padded output back into a PackedSequence."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from .. import kernels
from . import functional as Fn
from .functional import CellOptions, LayerWeights
from .trace import Trace, trace_of
from .variants import Variants, zoneout_masks

LayerFn = Callable[..., tuple[Tensor, Tensor, Tensor, "tuple[Tensor, Tensor] | None"]]


def run_torch(
    input: Tensor | PackedSequence,
    h0: Tensor,
    c0: Tensor,
    weights: list[Tensor],
    *,
    bias: bool,
    num_layers: int,
    dropout: float,
    training: bool,
    bidirectional: bool,
    batch_first: bool,
    unbatched: bool,
) -> tuple[Tensor | PackedSequence, tuple[Tensor, Tensor]]:
    """The whole stack on torch's own LSTM (``torch._VF.lstm``, as torch.nn.LSTM calls it); ``weights``
    in torch.nn.LSTM's flat order; h0 / c0 (L·D, B, ·) with the batch dimension also for unbatched input."""
    if isinstance(input, PackedSequence):
        if input.sorted_indices is not None:
            h0 = h0.index_select(1, input.sorted_indices)
            c0 = c0.index_select(1, input.sorted_indices)
        res = torch._VF.lstm(  # type: ignore[attr-defined]
            input.data,
            input.batch_sizes,
            (h0, c0),
            weights,
            bias,
            num_layers,
            dropout,
            training,
            bidirectional,
        )
        out, h_n, c_n = res[0], res[1], res[2]
        if input.unsorted_indices is not None:
            h_n = h_n.index_select(1, input.unsorted_indices)
            c_n = c_n.index_select(1, input.unsorted_indices)
        return PackedSequence(out, input.batch_sizes, input.sorted_indices, input.unsorted_indices), (h_n, c_n)
    x = input.unsqueeze(1) if unbatched else input
    res = torch._VF.lstm(  # type: ignore[attr-defined]
        x,
        (h0, c0),
        weights,
        bias,
        num_layers,
        dropout,
        training,
        bidirectional,
        batch_first and not unbatched,
    )
    out, h_n, c_n = res[0], res[1], res[2]
    if unbatched:
        return out.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
    return out, (h_n, c_n)


def run_fused_layer(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    w: LayerWeights,
    opts: CellOptions,
    *,
    zoneout_c: Tensor | None,
    zoneout_h: Tensor | None,
    lengths: Tensor | None,
    trace: bool,
) -> tuple[Tensor, Tensor, Tensor, tuple[Tensor, Tensor] | None]:
    """One layer and direction on the fused kernels, with :func:`lstmkit.core.functional.run_layer`'s
    arguments and results (its compiled twin)."""
    y, h_t, c_t, tr = kernels.fused_layer(
        x.contiguous(),
        h0.contiguous(),
        c0.contiguous(),
        w.w_ih,
        w.w_hh,
        w.b_ih,
        w.b_hh,
        w_hr=w.w_hr,
        peephole=w.peephole,
        ln=w.ln,
        coupled=opts.coupled,
        zoneout_c=None if zoneout_c is None else zoneout_c.contiguous(),
        zoneout_h=None if zoneout_h is None else zoneout_h.contiguous(),
        lengths=lengths,
        trace=trace,
    )
    return y, h_t, c_t, tr


def run_stack(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weights: Callable[[int, int], LayerWeights],
    v: Variants,
    *,
    layer_fn: LayerFn,
    num_layers: int,
    directions: int,
    hidden_size: int,
    proj_size: int,
    dropout: float,
    lengths: Tensor | None,
    traced: bool,
    training: bool,
) -> tuple[Tensor, Tensor, Tensor, Trace | None]:
    """A stack of layers and directions on x (T, B, I), one layer and direction at a time by ``layer_fn``
    (:func:`run_fused_layer` or :func:`lstmkit.core.functional.run_layer`); h0, c0 (L·D, B, ·).
    ``weights(layer, direction)`` gives the weights when their turn comes (weight drop, zoneout masks
    and dropout draw their random numbers in this order); ``training``: those three apply.
    Returns (output (T, B, D·R), h_n, c_n, trace or None)."""
    T, B = x.shape[0], x.shape[1]
    H, P, D = hidden_size, proj_size, directions
    rev = Fn.reverse_index(T, lengths, B, x.device) if D == 2 else None
    hs: list[Tensor] = []
    cs: list[Tensor] = []
    tr: list[tuple[Tensor, Tensor, Tensor]] = []
    layer_in = x
    for layer in range(num_layers):
        outs = []
        for d in range(D):
            k = layer * D + d
            w = weights(layer, d)
            xin = layer_in if d == 0 else Fn.time_reverse(layer_in, rev)
            zc, zh = zoneout_masks(v, (T, B, H), (T, B, P if P > 0 else H), x, training)
            y, h_t, c_t, gates_c = layer_fn(
                xin, h0[k], c0[k], w, v.opts, zoneout_c=zc, zoneout_h=zh, lengths=lengths, trace=traced
            )
            if d == 1:
                y = Fn.time_reverse(y, rev)
                if gates_c is not None:
                    gates_c = (Fn.time_reverse(gates_c[0], rev), Fn.time_reverse(gates_c[1], rev))
            outs.append(y)
            hs.append(h_t)
            cs.append(c_t)
            if gates_c is not None:
                tr.append((gates_c[0], gates_c[1], y))
        layer_out = outs[0] if D == 1 else torch.cat(outs, dim=-1)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_out = F.dropout(layer_out, dropout, training=True)
        layer_in = layer_out
    trace = trace_of([g for g, _, _ in tr], [c for _, c, _ in tr], [h for _, _, h in tr]) if traced else None
    return layer_in, torch.stack(hs), torch.stack(cs), trace


def repack(out: Tensor, lengths: Tensor, like: PackedSequence) -> PackedSequence:
    """(T, B, F) padded, original batch order -> PackedSequence laid out as ``like``."""
    if like.sorted_indices is not None:
        out = out.index_select(1, like.sorted_indices.to(out.device))
        lengths = lengths.index_select(0, like.sorted_indices.cpu())
    T = out.shape[0]
    valid = torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)  # (T, B): time-major, sorted batch
    data = out[valid.to(out.device)]
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)
