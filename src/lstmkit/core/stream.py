"""Streaming: one step per call with the state carried, for online inference.

:class:`Stream` is what every stream offers: the reference and the compiled streams here
(:class:`ReferenceStream`, :class:`lstmkit.kernels.FusedStream`, :class:`lstmkit.kernels.Int8Stream`,
on tensors) and the NumPy runtime's (``lstmkit.runtime``, on arrays) satisfy it.
:func:`make_stream` gives the compiled stream where the kernels run the dtype and device, else a
:class:`ReferenceStream` with the same interface; :meth:`lstmkit.LSTM.stream` calls it with the
layer's weights and variant options. A stream is for inference: it never adds dropout or zoneout
noise (zoneout uses its expectation), and it does not track gradients.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor

from .. import kernels
from ..errors import InputError
from . import functional as Fn
from .dispatch import FUSED_DTYPES
from .functional import LayerWeights
from .variants import Variants

A = TypeVar("A")


@runtime_checkable
class Stream(Protocol[A]):
    """One step per call, the state carried between calls (``A``: Tensor, or NumPy's ndarray).

    ``y_t = stream.step(x_t)``: x_t (B, I), or (I,) when the batch size is 1, -> the last layer's
    h_t (B, R) or (R,) (R = P with a projection, else H); ``stream.reset()`` sets the state to zeros;
    ``stream.state`` is (h (L, B, R), c (L, B, H)).
    """

    @property
    def batch_size(self) -> int: ...

    def step(self, x_t: A) -> A: ...

    def reset(self) -> None: ...

    @property
    def state(self) -> tuple[A, A]: ...


class ReferenceStream:
    """The stream on the reference equations (:mod:`lstmkit.core.functional`), any dtype and device.

    ``layers[k]`` are the weights of layer k (one direction); ``variants`` the layer's options.
    The weights are read at each step (later changes to the parameters are seen).
    """

    backend = "reference"

    def __init__(self, layers: list[LayerWeights], variants: Variants, batch_size: int) -> None:
        if not layers:
            raise InputError("ReferenceStream: expected at least one layer, got none")
        self._layers = layers
        self._v = variants
        self.batch_size = batch_size
        w0 = layers[0]
        self.input_size = int(w0.w_ih.shape[1])
        H, R = int(w0.w_hh.shape[0]) // 4, int(w0.w_hh.shape[1])
        self._dtype = w0.w_ih.dtype
        self._h = torch.zeros(len(layers), batch_size, R, dtype=self._dtype, device=w0.w_ih.device)
        self._c = torch.zeros(len(layers), batch_size, H, dtype=self._dtype, device=w0.w_ih.device)

    def reset(self) -> None:
        self._h.zero_()
        self._c.zero_()

    @property
    def state(self) -> tuple[Tensor, Tensor]:
        return self._h, self._c

    @torch.no_grad()
    def step(self, x_t: Tensor) -> Tensor:
        x, unbatched = self._check(x_t)
        zc, zh = self._v.zoneout_c, self._v.zoneout_h
        opts = self._v.opts
        inp = x
        for k, w in enumerate(self._layers):
            xw = Fn.input_projection(inp.unsqueeze(0), w, opts)[0]
            h_prev, c_prev = self._h[k], self._c[k]
            h_new, c_new, _ = Fn.cell_step(xw, h_prev, c_prev, w, opts)
            if zc > 0:
                c_new = zc * c_prev + (1.0 - zc) * c_new
            if zh > 0:
                h_new = zh * h_prev + (1.0 - zh) * h_new
            self._h[k].copy_(h_new)
            self._c[k].copy_(c_new)
            inp = h_new
        return inp.squeeze(0) if unbatched else inp

    def _check(self, x_t: Any) -> tuple[Tensor, bool]:
        if not isinstance(x_t, Tensor):
            raise TypeError(f"LSTM.stream: step() takes a Tensor, got {type(x_t).__name__}")
        unbatched = x_t.dim() == 1
        x = x_t.unsqueeze(0) if unbatched else x_t
        if x.dim() != 2 or x.shape != (self.batch_size, self.input_size):
            raise InputError(
                f"LSTM.stream: expected x_t of shape ({self.batch_size}, {self.input_size})"
                + (f" or ({self.input_size},)" if self.batch_size == 1 else "")
                + f", got {tuple(x_t.shape)}"
            )
        if x.dtype != self._dtype:
            raise TypeError(f"LSTM.stream: x_t has dtype {x.dtype} but the parameters are {self._dtype}")
        return x, unbatched


def check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"LSTM.stream: batch_size must be a positive int, got {batch_size!r}")
    return batch_size


def make_stream(
    layers: list[LayerWeights], variants: Variants, batch_size: int, *, compiled: bool = True
) -> Stream[Tensor]:
    """The compiled :class:`~lstmkit.kernels.FusedStream` (it runs every variant; weight drop is off in
    inference) where ``compiled`` and the kernels run the weights' dtype and device, else a
    :class:`ReferenceStream`. ``layers`` are per layer, one direction, in inference (no weight drop)."""
    check_batch_size(batch_size)
    w0 = layers[0].w_ih
    if not (compiled and w0.device.type == "cpu" and w0.dtype in FUSED_DTYPES and kernels.available()):
        return ReferenceStream(layers, variants, batch_size)
    dicts = []
    for w in layers:
        d: dict[str, Any] = {"w_ih": w.w_ih.detach(), "w_hh": w.w_hh.detach()}
        for name, t in (("b_ih", w.b_ih), ("b_hh", w.b_hh), ("w_hr", w.w_hr), ("peephole", w.peephole)):
            if t is not None:
                d[name] = t.detach()
        if w.ln is not None:
            d["ln"] = w.ln
        dicts.append(d)
    v = variants
    return kernels.FusedStream(
        dicts,
        batch_size,
        proj=layers[0].w_hr is not None,
        coupled=v.opts.coupled,
        zoneout_c=v.zoneout_c,
        zoneout_h=v.zoneout_h,
    )
