"""The fused layer as a real PyTorch operator, ``torch.ops.lstmkit.fused_layer``, for ``torch.compile``.

:func:`lstmkit.kernels.fused_layer` is a C++ call that builds its own autograd node; graph capture
(``torch.compile(model, fullgraph=True)``) cannot trace into it. As registered operators the layer
is one opaque node of the graph:

* ``lstmkit::fused_layer``: the layer's outputs (y, h_T, c_T, and the trace's gates and c, empty
  tensors without a trace) plus a one-byte ``handle`` that owns what the backward needs; its fake
  implementation gives the shapes (symbolic batch and time), so the compiler never runs the kernels
  while tracing. ``needs`` is a bit mask over the 15 differentiable inputs (in the order of the op's
  arguments, x first): which ones want a gradient (0: nothing is saved).
* ``lstmkit::fused_layer_backward``: the gradients of the inputs ``needs`` marks, from the handle.
* ``lstmkit::zeros``: the zero initial state (see :func:`_zeros_fake`).

The schemas and the fake implementations are here, so that the operators exist whether or not the
kernels are built; the CPU kernels and the autograd kernel that joins the two layer operators are
C++ (the end of ``kernels/lstm_autograd.cpp``), registered when the kernels load. Nothing but C++
runs between a compiled graph and the kernels: the Python operators this replaced cost 0.4-1.4 ms a
call at train-small (BENCHMARKS.md, "Speed: torch.compile"). The backward reuses what the forward
saved (no recomputation); the saved state is freed with the handle, i.e. when the caller's autograd
graph (which saves it) is freed, after its backward or when it is dropped unused.

Eager calls keep calling the kernels directly (the C++ node of :func:`lstmkit.kernels.fused_layer`);
the layer uses these ops only while ``torch.compile`` traces it (:mod:`lstmkit.core.graph`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .functional import CellOptions, LayerWeights

_lib = torch.library.Library("lstmkit", "FRAGMENT")  # kept: the registrations live as long as it does
_lib.define(
    "fused_layer(Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
    "Tensor? w_hr, Tensor? peephole, Tensor? g_ih, Tensor? s_ih, Tensor? g_hh, Tensor? s_hh, Tensor? g_c, "
    "Tensor? s_c, Tensor? zoneout_c, Tensor? zoneout_h, Tensor? lengths, bool coupled, bool trace, int needs) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)"
)
_lib.define(
    "fused_layer_backward(Tensor handle, Tensor? dy, Tensor? dh, Tensor? dc, Tensor?[] inputs, int needs) -> Tensor[]"
)
_lib.define("zeros(Tensor like, SymInt[] shape) -> Tensor")


def _unloaded(name: str) -> Any:
    """The CPU kernel of operator `name` until the kernels load (their C++ CPU kernels then take
    over): an error that says why and how to fix it, instead of torch's "could not run ... with
    arguments from the 'CPU' backend". The layer calls the operators only after loading the kernels."""

    def call(*args: Any) -> Any:
        from .. import kernels

        why = kernels.unavailable_reason() or "not loaded: call lstmkit.kernels.available() first (it builds them)"
        raise RuntimeError(f"lstmkit::{name}: the fused kernels are unavailable here: {why}")

    return call


for _name in ("fused_layer", "fused_layer_backward", "zeros"):
    _lib.impl(_name, _unloaded(_name), "CompositeExplicitAutograd")


@torch.library.register_fake("lstmkit::fused_layer", lib=_lib)
def _fused_layer_fake(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, peephole, g_ih, s_ih, g_hh, s_hh, g_c, s_c,
                      zoneout_c, zoneout_h, lengths, coupled, trace, needs):  # fmt: skip
    T, B = x.shape[0], x.shape[1]
    H = c0.shape[-1]
    R = h0.shape[-1]
    y = x.new_empty((T, B, R))
    gates = x.new_empty((T, B, 4 * H)) if trace else x.new_empty((0,))
    c_all = x.new_empty((T, B, H)) if trace else x.new_empty((0,))
    return y, h0.new_empty((B, R)), c0.new_empty((B, H)), gates, c_all, x.new_empty((1,), dtype=torch.uint8)


@torch.library.register_fake("lstmkit::fused_layer_backward", lib=_lib)
def _fused_layer_backward_fake(handle, dy, dh, dc, inputs, needs):
    return [torch.empty_like(t) for k, t in enumerate(inputs) if t is not None and needs >> k & 1]


@torch.library.register_fake("lstmkit::zeros", lib=_lib)
def _zeros_fake(like, shape):
    """Zeros of ``shape`` with like's dtype and device: the initial state under torch.compile. An
    opaque operator that reads no tensor's values, so that inductor makes no OpenMP kernel of it
    right before the fused layer's (measured: train-small inference on 2 threads, 2.3x slower
    with that kernel before it)."""
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


__all__ = ["run_op_layer"]
