"""The fused layer as a real PyTorch operator, ``torch.ops.lstmkit.fused_layer``, for ``torch.compile``.

:func:`lstmkit.kernels.fused_layer` is a C++ call that builds its own autograd node; graph capture
(``torch.compile(model, fullgraph=True)``) cannot trace into it. Registered with
:mod:`torch.library` it becomes one opaque node of the graph:

* ``lstmkit::fused_layer``: the layer's outputs (y, h_T, c_T, and the trace's gates and c, empty
  tensors without a trace) plus a one-byte ``handle``; its fake implementation gives the shapes
  (symbolic batch and time), so the compiler never runs the kernels while tracing.
* ``lstmkit::fused_layer_backward``: the gradients, through ``register_autograd``.

The backward reuses what the kernels' forward saved (no recomputation): when gradients are wanted,
the forward runs the kernels' C++ autograd node on detached inputs and keeps that small graph in a
table under the handle's address; the backward op runs it (``torch.autograd.grad``). The entry goes
when the handle is freed, i.e. when the caller's autograd graph (which saves the handle) is freed,
after its backward or when it is dropped unused. ``needs`` is a bit mask over the 15 differentiable
inputs (in the order of the op's arguments, x first): which ones want a gradient.

Eager calls keep calling the kernels directly (the C++ node has no Python in its backward); the
layer uses these ops only while ``torch.compile`` traces it (:mod:`lstmkit.core.graph`).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .. import kernels
from .functional import CellOptions, LayerWeights

N_DIFF = 15  # x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, peephole, 6 layer-norm tensors

_lock = threading.Lock()
_graphs: dict[int, tuple[list[Tensor], list[Tensor]]] = {}  # handle address -> (outputs, leaves)


def _forget(key: int) -> None:
    with _lock:
        _graphs.pop(key, None)


def _empty(like: Tensor) -> Tensor:
    return like.new_empty((0,))


@torch.library.custom_op("lstmkit::fused_layer", mutates_args=())
def fused_layer(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    w_hr: Tensor | None,
    peephole: Tensor | None,
    g_ih: Tensor | None,
    s_ih: Tensor | None,
    g_hh: Tensor | None,
    s_hh: Tensor | None,
    g_c: Tensor | None,
    s_c: Tensor | None,
    zoneout_c: Tensor | None,
    zoneout_h: Tensor | None,
    lengths: Tensor | None,
    coupled: bool,
    trace: bool,
    needs: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """One layer on the fused kernels (see :func:`lstmkit.kernels.fused_layer`); returns
    (y, h_T, c_T, gates, c, handle); gates and c are empty without ``trace``."""
    diff = [x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, peephole, g_ih, s_ih, g_hh, s_hh, g_c, s_c]
    handle = torch.zeros(1, dtype=torch.uint8)
    leaves: list[Any] = []
    for k, t in enumerate(diff):
        if t is None:
            leaves.append(None)
        else:
            leaves.append(t.detach().requires_grad_(bool(needs >> k & 1)))
    ln = None if g_ih is None else tuple(leaves[9:15])
    with torch.set_grad_enabled(needs != 0):
        y, h_t, c_t, tr = kernels.fused_layer(
            leaves[0], leaves[1], leaves[2], leaves[3], leaves[4], leaves[5], leaves[6],
            w_hr=leaves[7], peephole=leaves[8], ln=ln, coupled=coupled, zoneout_c=zoneout_c,
            zoneout_h=zoneout_h, lengths=lengths, trace=trace,
        )  # fmt: skip
    if needs:
        key = handle.data_ptr()
        with _lock:
            _graphs[key] = ([y, h_t, c_t], [t for k, t in enumerate(leaves) if needs >> k & 1])
        weakref.finalize(handle, _forget, key)
    gates, c_all = tr if tr is not None else (_empty(x), _empty(x))
    outs = [_plain(y), _plain(h_t), _plain(c_t), _plain(gates), _plain(c_all)]
    seen: set[int] = set()
    for k, t in enumerate(outs):  # the graph wants outputs that share no memory (none did so far)
        ptr = _storage_start(t)
        if t.numel() and ptr in seen:
            outs[k] = t.clone()
        seen.add(ptr)
    return outs[0], outs[1], outs[2], outs[3], outs[4], handle


def _storage_start(t: Tensor) -> int:
    """The address where t's storage starts, without ``t.untyped_storage()``: that call gives the
    storage a Python object that keeps it referenced for as long as it lives, and the kernels'
    buffer pool reuses a buffer only when nothing else references it (measured: every compiled call
    then took fresh buffers, 0.8-1.6 MB a step at train-small, and ran slower than eager)."""
    return int(t.data_ptr() - t.storage_offset() * t.element_size())


def _plain(t: Tensor) -> Tensor:
    """t detached, contiguous from its storage's start, as the fake implementation says (the kernels
    return views of their buffers, the trace's c one step into its buffer): a copy only if needed."""
    t = t.detach()
    return t if t.is_contiguous() and t.storage_offset() == 0 else t.clone(memory_format=torch.contiguous_format)


@fused_layer.register_fake
def _(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, peephole, g_ih, s_ih, g_hh, s_hh, g_c, s_c, zoneout_c, zoneout_h,
      lengths, coupled, trace, needs):  # fmt: skip
    T, B = x.shape[0], x.shape[1]
    H = c0.shape[-1]
    R = h0.shape[-1]
    y = x.new_empty((T, B, R))
    gates = x.new_empty((T, B, 4 * H)) if trace else x.new_empty((0,))
    c_all = x.new_empty((T, B, H)) if trace else x.new_empty((0,))
    return y, h0.new_empty((B, R)), c0.new_empty((B, H)), gates, c_all, x.new_empty((1,), dtype=torch.uint8)


@torch.library.custom_op("lstmkit::fused_layer_backward", mutates_args=())
def fused_layer_backward(
    handle: Tensor, dy: Tensor | None, dh: Tensor | None, dc: Tensor | None, inputs: Sequence[Tensor | None], needs: int
) -> list[Tensor]:
    """The gradients of the inputs that ``needs`` marks (in argument order), from the saved graph."""
    with _lock:
        entry = _graphs.get(handle.data_ptr())
    if entry is None:
        raise RuntimeError(
            "lstmkit::fused_layer_backward: the forward's saved state is gone (a second backward through "
            "a freed graph, or the handle was copied); run the forward again"
        )
    outs, leaves = entry
    pairs = [(o, g) for o, g in zip(outs, (dy, dh, dc)) if g is not None]
    got = torch.autograd.grad(
        [o for o, _ in pairs], leaves, [g for _, g in pairs], retain_graph=True, allow_unused=True
    )
    out: list[Tensor] = []
    seen = {_storage_start(g) for g in (dy, dh, dc) if g is not None}
    for g, t in zip(got, leaves):
        if g is None:
            g = torch.zeros_like(t)
        elif _storage_start(g) in seen:  # the kernels give b_ih and b_hh one gradient
            g = g.clone()
        seen.add(_storage_start(g))
        out.append(g)
    return out


@fused_layer_backward.register_fake
def _(handle, dy, dh, dc, inputs, needs):
    return [torch.empty_like(t) for k, t in enumerate(inputs) if t is not None and needs >> k & 1]


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    ctx.needs = inputs[-1]
    ctx.save_for_backward(output[5], *[t if t is not None else None for t in inputs[:N_DIFF]])
    ctx.mark_non_differentiable(output[3], output[4], output[5])


def _backward(ctx: Any, dy: Tensor, dh: Tensor, dc: Tensor, *_: Any) -> tuple[Any, ...]:
    handle, *inputs = ctx.saved_tensors
    needs = ctx.needs
    grads = [None] * (N_DIFF + 6)
    if needs:
        got = iter(fused_layer_backward(handle, dy, dh, dc, inputs, needs))
        for k in range(N_DIFF):
            if needs >> k & 1:
                grads[k] = next(got)
    return tuple(grads)


fused_layer.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("lstmkit::zeros", mutates_args=())
def zeros(like: Tensor, shape: Sequence[int]) -> Tensor:
    """Zeros of ``shape`` with like's dtype and device: the initial state under torch.compile. An
    opaque operator that reads no tensor's values, so that inductor makes no OpenMP kernel of it
    right before the fused layer's (measured: train-small inference on 2 threads, 2.3x slower
    with that kernel before it)."""
    return like.new_zeros(shape)


@zeros.register_fake
def _(like, shape):
    return like.new_empty(shape)


def run_op_layer(
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
    """:func:`lstmkit.core.paths.run_fused_layer` through ``torch.ops.lstmkit.fused_layer`` (same
    arguments and results), so that ``torch.compile`` sees one operator per layer and direction."""
    ln: Sequence[Tensor | None] = w.ln if w.ln is not None else (None,) * 6
    diff = [x, h0, c0, w.w_ih, w.w_hh, w.b_ih, w.b_hh, w.w_hr, w.peephole, *ln]
    needs = 0
    if torch.is_grad_enabled():
        for k, t in enumerate(diff):
            if t is not None and t.requires_grad:
                needs |= 1 << k
    zc = None if zoneout_c is None else zoneout_c.detach().to(x.dtype).contiguous()
    zh = None if zoneout_h is None else zoneout_h.detach().to(x.dtype).contiguous()
    lens = None if lengths is None else lengths.to(device="cpu", dtype=torch.int64)
    y, h_t, c_t, gates, c_all, _ = torch.ops.lstmkit.fused_layer(
        x.contiguous(), h0.contiguous(), c0.contiguous(), w.w_ih, w.w_hh, w.b_ih, w.b_hh, w.w_hr, w.peephole,
        *ln, zc, zh, lens, opts.coupled, trace, needs,
    )  # fmt: skip
    return y, h_t, c_t, ((gates, c_all) if trace else None)


__all__ = ["fused_layer", "fused_layer_backward", "run_op_layer", "zeros"]
