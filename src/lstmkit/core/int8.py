"""The int8 inference path of :class:`~lstmkit.LSTM` (:meth:`LSTM.use_int8`).

The weights are coded as :mod:`lstmkit.compress` codes them (int8 with one scale per output row,
:func:`lstmkit.runtime.quant.quantize_rows`); the inputs of the two matrix products per step are
coded on the fly by the kernel (:class:`lstmkit.kernels.Int8Stream`); gates and cell stay float32.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .. import kernels
from ..runtime.quant import quantize_rows
from .functional import LayerWeights
from .variants import Variants


def unsupported(
    v: Variants, *, proj_size: int, bidirectional: bool, dtype: torch.dtype, device: torch.device
) -> str | None:
    """Why the int8 kernel cannot run this LSTM, or None when it can."""
    if v.step_variant:
        return f"the int8 kernel runs only the plain cell, but {', '.join(v.names())} is set"
    if proj_size > 0:
        return "the int8 kernel has no projection (proj_size > 0)"
    if bidirectional:
        return "the int8 kernel runs one direction; this LSTM is bidirectional"
    if dtype != torch.float32 or device.type != "cpu":
        return f"the int8 kernel runs on CPU float32 parameters, these are {dtype} on {device.type}"
    if not kernels.available():
        return kernels.unavailable_reason() or "the compiled kernels are unavailable"
    return None


def eligible(x: Tensor, *, training: bool, traced: bool, packed: bool, needs_grad: bool) -> bool:
    """Whether a call with this input may run the int8 path (inference on CPU float32, no traces)."""
    if training or traced or packed or needs_grad:
        return False
    return x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")


class Int8Path:
    """The codes of a stack of plain layers, redone when a weight changed since they were made, and
    one compiled runner per batch size (at most 4, with their packed weights) kept between calls."""

    def __init__(self) -> None:
        self._versions: list[int] | None = None
        self._codes: list[dict[str, Tensor]] = []
        self._runners: dict[int, kernels.Int8Stream] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_runners"] = {}  # compiled runners are rebuilt on demand (they cannot be copied)
        return state

    def codes(self, weights: list[LayerWeights]) -> list[dict[str, Tensor]]:
        """Per layer 'q_ih', 's_ih', 'q_hh', 's_hh' and, with a bias, 'bias' = b_ih + b_hh."""
        tensors = [t for w in weights for t in (w.w_ih, w.w_hh, w.b_ih, w.b_hh) if t is not None]
        versions = [t._version for t in tensors]
        if self._versions != versions:
            codes = []
            with torch.no_grad():
                for w in weights:
                    d: dict[str, Tensor] = {}
                    for part, t in (("ih", w.w_ih), ("hh", w.w_hh)):
                        q, sc = quantize_rows(t.detach().cpu().float().numpy(), 8)
                        d[f"q_{part}"], d[f"s_{part}"] = torch.from_numpy(q), torch.from_numpy(sc)
                    if w.b_ih is not None and w.b_hh is not None:
                        d["bias"] = (w.b_ih + w.b_hh).detach().clone()
                    codes.append(d)
            self._codes, self._versions = codes, versions
            self._runners = {}
        return self._codes

    def stream(self, weights: list[LayerWeights], batch_size: int) -> kernels.Int8Stream:
        """A new int8 stream of the current weights."""
        return kernels.Int8Stream(self.codes(weights), batch_size)

    def run(self, weights: list[LayerWeights], x: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (T, B, I), h0 and c0 (L, B, H) -> y (T, B, H), h_n, c_n."""
        codes = self.codes(weights)
        batch = int(x.shape[1])
        if batch not in self._runners:
            if len(self._runners) >= 4:
                self._runners.pop(next(iter(self._runners)))
            self._runners[batch] = kernels.Int8Stream(codes, batch)
        runner = self._runners[batch]
        runner.set_state(h0, c0)
        y = runner.sequence(x)
        h_n, c_n = runner.state
        return y, h_n, c_n
