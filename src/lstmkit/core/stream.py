"""Streaming: one step per call with the state carried, for online inference.

:func:`make_stream` returns the compiled :class:`lstmkit.kernels.FusedStream` where the kernels
support the configuration, else a :class:`ReferenceStream` with the same interface.
A stream is for inference: it never adds dropout or zoneout noise (zoneout uses its expectation),
and it does not track gradients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from . import functional as Fn

if TYPE_CHECKING:
    from .lstm import LSTM


class ReferenceStream:
    """``y_t = stream.step(x_t)`` with x_t (B, I) or (I,) and y_t (B, P|H) or (P|H,)."""

    backend = "reference"

    def __init__(self, lstm: LSTM, batch_size: int) -> None:
        from .lstm import layer_weights

        self._lstm = lstm
        self.batch_size = batch_size
        self._v = lstm._v
        self._weights = [
            layer_weights(lstm, f"_l{k}", lstm.bias, lstm.proj_size > 0, lstm._v, training=False)
            for k in range(lstm.num_layers)
        ]
        p = next(lstm.parameters())
        H, P = lstm.hidden_size, lstm.proj_size
        self._h = torch.zeros(lstm.num_layers, batch_size, P if P > 0 else H, dtype=p.dtype, device=p.device)
        self._c = torch.zeros(lstm.num_layers, batch_size, H, dtype=p.dtype, device=p.device)

    def reset(self) -> None:
        self._h.zero_()
        self._c.zero_()

    @property
    def state(self) -> tuple[Tensor, Tensor]:
        return self._h, self._c

    @torch.no_grad()
    def step(self, x_t: Tensor) -> Tensor:
        x, unbatched = _check_step_input(self._lstm, x_t, self.batch_size)
        zc, zh = self._v.zoneout_c, self._v.zoneout_h
        inp = x
        for k, w in enumerate(self._weights):
            xw = Fn.input_projection(inp.unsqueeze(0), w, self._v.opts)[0]
            h_prev, c_prev = self._h[k], self._c[k]
            h_new, c_new, _ = Fn.cell_step(xw, h_prev, c_prev, w, self._v.opts)
            if zc > 0:
                c_new = zc * c_prev + (1.0 - zc) * c_new
            if zh > 0:
                h_new = zh * h_prev + (1.0 - zh) * h_new
            self._h[k].copy_(h_new)
            self._c[k].copy_(c_new)
            inp = h_new
        return inp.squeeze(0) if unbatched else inp


def _check_step_input(lstm: LSTM, x_t: Any, batch_size: int) -> tuple[Tensor, bool]:
    if not isinstance(x_t, Tensor):
        raise TypeError(f"LSTM.stream: step() takes a Tensor, got {type(x_t).__name__}")
    unbatched = x_t.dim() == 1
    x = x_t.unsqueeze(0) if unbatched else x_t
    if x.dim() != 2 or x.shape != (batch_size, lstm.input_size):
        raise ValueError(
            f"LSTM.stream: expected x_t of shape ({batch_size}, {lstm.input_size})"
            + (f" or ({lstm.input_size},)" if batch_size == 1 else "")
            + f", got {tuple(x_t.shape)}"
        )
    p = next(lstm.parameters())
    if x.dtype != p.dtype:
        raise TypeError(f"LSTM.stream: x_t has dtype {x.dtype} but the parameters are {p.dtype}")
    return x, unbatched


def make_stream(lstm: LSTM, batch_size: int) -> Any:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"LSTM.stream: batch_size must be a positive int, got {batch_size!r}")
    if lstm.bidirectional:
        raise ValueError("LSTM.stream: a bidirectional LSTM needs the whole sequence; streaming is one direction only")
    if lstm.int8_enabled:
        from .. import kernels

        return kernels.Int8Stream(lstm._int8_layers(), batch_size)
    fused = _fused_stream(lstm, batch_size)
    return fused if fused is not None else ReferenceStream(lstm, batch_size)


def _fused_stream(lstm: LSTM, batch_size: int) -> Any:
    """The compiled stream where the kernels cover this configuration (weight drop needs no
    support: a stream is inference, where it is off), else None."""
    p = next(lstm.parameters())
    if lstm.requested_backend == "reference" or p.device.type != "cpu":
        return None
    try:
        from .. import kernels
    except ImportError:
        return None
    o = lstm._v.opts
    if (
        not kernels.stream_supports(
            dtype=p.dtype, peephole=o.peephole, layer_norm=o.layer_norm, coupled=o.coupled, zoneout=lstm._v.has_zoneout
        )
        or not kernels.available()
    ):
        return None
    layers = []
    for k in range(lstm.num_layers):
        d: dict[str, Any] = {
            "w_ih": getattr(lstm, f"weight_ih_l{k}").detach(),
            "w_hh": getattr(lstm, f"weight_hh_l{k}").detach(),
        }
        if lstm.bias:
            d["b_ih"] = getattr(lstm, f"bias_ih_l{k}").detach()
            d["b_hh"] = getattr(lstm, f"bias_hh_l{k}").detach()
        if lstm.proj_size > 0:
            d["w_hr"] = getattr(lstm, f"weight_hr_l{k}").detach()
        w = lstm._layer_weights(k, 0, training=False)
        if o.peephole and w.peephole is not None:
            d["peephole"] = w.peephole
        if o.layer_norm and w.ln is not None:
            d["ln"] = w.ln
        layers.append(d)
    v = lstm._v
    return kernels.FusedStream(
        layers, batch_size, proj=lstm.proj_size > 0, coupled=o.coupled, zoneout_c=v.zoneout_c, zoneout_h=v.zoneout_h
    )
