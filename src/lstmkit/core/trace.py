"""Gate traces: every gate's value at every step, as :class:`LSTM` and :class:`LSTMCell` return them
with ``return_gates=True``."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class Trace(NamedTuple):
    """Every gate's value at every step.

    Each field has shape (L·D, T, B, H) for :class:`LSTM` (L layers, D directions, index
    ``layer * D + direction`` as in h_n; T and B in that order whatever ``batch_first`` is; the B
    dimension is absent for unbatched input), and (B, H) for :class:`LSTMCell`.
    ``h`` is the layer's output h_t, of size P instead of H when ``proj_size`` > 0. ``c`` and ``h``
    are the states actually carried (after zoneout). Steps past a sequence's length are 0.
    With one layer and one direction the gates and ``c`` are views of the buffers the layer saved for
    its backward (no copy): changing them in place makes that backward raise; change a ``clone()``.
    """

    i: Tensor
    f: Tensor
    g: Tensor
    o: Tensor
    c: Tensor
    h: Tensor


def stack_views(ts: list[Tensor]) -> Tensor:
    """torch.stack, but a single tensor becomes a view with a new leading dimension (no copy)."""
    return ts[0].unsqueeze(0) if len(ts) == 1 else torch.stack(ts)


def trace_of(gates: list[Tensor], cs: list[Tensor], hs: list[Tensor]) -> Trace:
    """The Trace of a stack from each layer and direction's gates (T, B, 4H), c (T, B, H), h (T, B, R)."""
    # (LD, T, B, 4H); one layer and direction: a view of the kernel's buffer, no copy (a copy of
    # train-large's 52 MB of gates made the traced call ~1.3x the untraced one)
    i, f, g, o = stack_views(gates).chunk(4, dim=-1)
    # h is copied: the layer's output is returned too and must not alias it
    return Trace(i, f, g, o, stack_views(cs), torch.stack(hs))
