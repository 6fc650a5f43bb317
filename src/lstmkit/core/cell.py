"""`lstmkit.LSTMCell`: one LSTM step, a drop-in for torch.nn.LSTMCell, with the variants of
:mod:`lstmkit.core.variants` and a gate trace.

Paths: ``"torch"`` (torch's own cell, plain configurations without a trace; what ``"auto"`` runs
for them) and ``"reference"`` (the equations of :mod:`lstmkit.core.functional`, everything else).
There is no fused single-step cell: :meth:`lstmkit.LSTM.stream` is the fast one-step path.
"""

from __future__ import annotations

from typing import Any, Literal, overload

import torch
from torch import Tensor, nn

from ..errors import InputError
from . import functional as Fn
from .checks import check_dtype_device, check_features, check_flag, check_int, check_state_pair
from .dispatch import Backend, check_backend
from .trace import Trace
from .variants import Variants, init_parameters, keep_attributes, layer_weights, variants_of, zoneout_masks


class LSTMCell(nn.Module):
    r"""One LSTM step, a drop-in for :class:`torch.nn.LSTMCell`, with the same variant keywords as
    :class:`~lstmkit.LSTM` (no projection, as in torch).

    ``h', c' = cell(x, (h, c))``; x (B, I) or unbatched (I,); h, c (B, H) or (H,); the state
    defaults to zeros. ``cell(x, hx, return_gates=True)`` returns ``(h', c'), trace`` with a
    :class:`Trace` of (B, H) tensors. Parameters: ``weight_ih`` (4H, I), ``weight_hh`` (4H, H),
    ``bias_ih``, ``bias_hh`` (4H), plus ``weight_peephole`` (3, H) and ``layer_norm_*`` as in LSTM.

    ``forget_bias`` is an opt-in as in :class:`~lstmkit.LSTM`: by default (``None``) the cell has
    torch.nn.LSTMCell's initialisation, so the same seed gives torch's parameters and random stream.
    ``chrono_init=T_max`` (Tallec & Ollivier 2018) is the chrono initialisation of the input and forget
    biases, as in :class:`~lstmkit.LSTM`.
    Saving and ``state_dict`` work as for :class:`~lstmkit.LSTM` (plain values in the saved state,
    torch.nn.LSTMCell's keys).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        forget_bias: float | None = None,
        chrono_init: float | None = None,
        peephole: bool = False,
        layer_norm: bool = False,
        coupled: bool = False,
        zoneout: float | tuple[float, float] = 0.0,
        weight_drop: float = 0.0,
        backend: Backend = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.input_size = check_int(owner, "input_size", input_size, 1)
        self.hidden_size = check_int(owner, "hidden_size", hidden_size, 1)
        self.bias = check_flag(owner, "bias", bias)
        self._v = Variants.parse(
            owner,
            bias=bias,
            forget_bias=forget_bias,
            chrono_init=chrono_init,
            peephole=peephole,
            layer_norm=layer_norm,
            coupled=coupled,
            zoneout=zoneout,
            weight_drop=weight_drop,
        )
        check_backend(owner, backend, self._v.names())
        if backend == "fused":
            raise InputError(f"{owner}: there is no fused single-step cell; use LSTM.stream() or backend='auto'")
        # the variant keywords as plain attributes: the saved state (the variants are rebuilt from them)
        self.forget_bias: float | None
        self.chrono_init: float | None
        self.peephole: bool
        self.layer_norm: bool
        self.coupled: bool
        self.zoneout: float | tuple[float, float]
        self.weight_drop: float
        keep_attributes(self, self._v, peephole=peephole, layer_norm=layer_norm, coupled=coupled)
        self.requested_backend: str = backend
        self.backend: str | None = None
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        H = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * H, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(4 * H, H, **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(4 * H, **factory))
            self.bias_hh = nn.Parameter(torch.empty(4 * H, **factory))
        if peephole:
            self.weight_peephole = nn.Parameter(torch.empty(3, H, **factory))
        if layer_norm:
            for part, size in (("ih", 4 * H), ("hh", 4 * H), ("c", H)):
                setattr(self, f"layer_norm_{part}_weight", nn.Parameter(torch.empty(size, **factory)))
                setattr(self, f"layer_norm_{part}_bias", nn.Parameter(torch.empty(size, **factory)))
        self.reset_parameters()

    @property
    def variants(self) -> Variants:
        """The validated variant options (read-only)."""
        return self._v

    def reset_parameters(self) -> None:
        """torch.nn.LSTMCell's init, then the variants' (see :func:`lstmkit.core.variants.init_parameters`)."""
        names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if self.bias else [])
        init_parameters(self, self.hidden_size, [""], self._v, bias=self.bias, torch_names=names)

    def __getstate__(self) -> dict[str, Any]:
        """Tensors and plain values only (see :meth:`lstmkit.LSTM.__getstate__`)."""
        state = dict(super().__getstate__())
        state.pop("_v", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "_v" not in state:
            self._v = variants_of(self)

    @classmethod
    def from_torch(cls, module: nn.LSTMCell, **variants: Any) -> LSTMCell:
        if not isinstance(module, nn.LSTMCell):
            raise TypeError(f"LSTMCell.from_torch: expected a torch.nn.LSTMCell, got {type(module).__name__}")
        p = next(module.parameters())
        variants.setdefault("forget_bias", None)
        new = cls(module.input_size, module.hidden_size, module.bias, device=p.device, dtype=p.dtype, **variants)
        new.load_state_dict(module.state_dict(), strict=False)
        return new

    def to_torch(self) -> nn.LSTMCell:
        if self._v.any_variant:
            raise InputError(
                f"LSTMCell.to_torch: torch.nn.LSTMCell cannot express {', '.join(self._v.names())}; "
                "only a plain cell converts"
            )
        p = next(self.parameters())
        m = nn.LSTMCell(self.input_size, self.hidden_size, self.bias, device=p.device, dtype=p.dtype)
        m.load_state_dict(self.state_dict())
        return m

    @overload
    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None, return_gates: Literal[False] = False
    ) -> tuple[Tensor, Tensor]: ...

    @overload
    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None, return_gates: Literal[True]
    ) -> tuple[tuple[Tensor, Tensor], Trace]: ...

    @overload
    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None, *, return_gates: Literal[True]
    ) -> tuple[tuple[Tensor, Tensor], Trace]: ...

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None, return_gates: bool = False
    ) -> tuple[Tensor, Tensor] | tuple[tuple[Tensor, Tensor], Trace]:
        """x (B, I) or (I,) -> (h', c'), each (B, H) or (H,); with ``return_gates`` also a :class:`Trace`."""
        owner = type(self).__name__
        p = self.weight_ih
        if not isinstance(input, Tensor):
            raise TypeError(f"{owner}: input must be a Tensor, got {type(input).__name__}")
        if input.dim() not in (1, 2):
            raise InputError(
                f"{owner}: expected input of 2 dimensions (B, I) or 1 (I,) unbatched, got {input.dim()} "
                f"dimensions of shape {tuple(input.shape)}"
            )
        check_features(owner, input, self.input_size)
        check_dtype_device(owner, "input", input, p.dtype, p.device)
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input
        B, H = x.shape[0], self.hidden_size
        if hx is None:
            h = c = torch.zeros(B, H, dtype=p.dtype, device=p.device)
        else:
            h, c = check_state_pair(owner, hx, "(h, c)")
            want = (H,) if unbatched else (B, H)
            for name, t in (("h", h), ("c", c)):
                if tuple(t.shape) != want:
                    raise InputError(f"{owner}: expected {name} of shape {want}, got {tuple(t.shape)}")
                check_dtype_device(owner, name, t, p.dtype, p.device)
            if unbatched:
                h, c = h.unsqueeze(0), c.unsqueeze(0)
        traced = bool(return_gates)
        if self.requested_backend == "torch" and traced:
            raise InputError(f"{owner}: backend='torch' cannot return gate traces; use backend='auto' or 'reference'")
        use_torch = self.requested_backend == "torch" or (
            self.requested_backend == "auto" and self._v.plain_now(self.training) and not traced
        )
        self.backend = "torch" if use_torch else "reference"
        trace: Trace | None
        if use_torch:
            b_ih = self.bias_ih if self.bias else None
            b_hh = self.bias_hh if self.bias else None
            h_new, c_new = torch._VF.lstm_cell(x, (h, c), self.weight_ih, self.weight_hh, b_ih, b_hh)  # type: ignore[attr-defined]
            trace = None
        else:
            w = layer_weights(self, "", bias=self.bias, proj=False, variants=self._v, training=self.training)
            xw = Fn.input_projection(x.unsqueeze(0), w, self._v.opts)[0]
            h_new, c_new, gates = Fn.cell_step(xw, h, c, w, self._v.opts)
            zc, zh = zoneout_masks(self._v, (1, B, H), (1, B, H), x, self.training)
            if zc is not None:
                c_new = zc[0] * c + (1.0 - zc[0]) * c_new
            if zh is not None:
                h_new = zh[0] * h + (1.0 - zh[0]) * h_new
            i, f, g, o = gates.chunk(4, dim=-1)
            trace = Trace(i, f, g, o, c_new, h_new)
        if unbatched:
            h_new, c_new = h_new.squeeze(0), c_new.squeeze(0)
            if trace is not None:
                trace = Trace(*(t.squeeze(0) for t in trace))
        if traced:
            assert trace is not None
            return (h_new, c_new), trace
        return h_new, c_new

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        if self.forget_bias is not None:
            s += f", forget_bias={self.forget_bias}"
        if getattr(self, "chrono_init", None) is not None:
            s += f", chrono_init={self.chrono_init:g}"
        for n in self._v.names():
            s += f", {n}={getattr(self, n)}"
        return s
