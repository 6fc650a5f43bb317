"""`lstmkit.LSTM` and `lstmkit.LSTMCell`: drop-ins for torch.nn.LSTM / LSTMCell with variants,
per-step gate traces and one dispatch point that picks the path that runs.

Paths ("backends"):

* ``"torch"``: torch's own fused LSTM (oneDNN on CPU, cuDNN on GPU). Only the plain cell, no traces.
* ``"fused"``: lstmkit's compiled CPU kernels (:mod:`lstmkit.kernels`), where they support the case.
* ``"reference"``: the published equations step by step in PyTorch (:mod:`lstmkit.core.functional`);
  runs everything, on any device and dtype, and is the oracle of the tests.

``backend="auto"`` (the default) runs, for a plain configuration without traces, the faster of
``"torch"`` and ``"fused"`` as measured once on this machine (:mod:`lstmkit.core.dispatch`; with
``LSTMKIT_DISPATCH=torch``, always ``"torch"``), so it is never slower than nn.LSTM; otherwise
``"fused"`` where the kernels support the case, else ``"reference"``. After
:meth:`LSTM.use_int8`, eligible inference calls run ``"int8"``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from . import functional as Fn
from .functional import CellOptions, LayerWeights

Backend = Literal["auto", "torch", "fused", "reference"]
BACKENDS = ("auto", "torch", "fused", "reference")


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


def _stack(ts: list[Tensor]) -> Tensor:
    """torch.stack, but a single tensor becomes a view with a new leading dimension (no copy)."""
    return ts[0].unsqueeze(0) if len(ts) == 1 else torch.stack(ts)


def _check_int(owner: str, name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{owner}: {name} must be >= {minimum}, got {value}")
    return value


def _check_rate(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}: {name} must be a number in [0, 1), got {value!r}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{owner}: {name} must be in [0, 1), got {value}")
    return float(value)


class _Variants:
    """The variant keywords shared by LSTM and LSTMCell, validated once."""

    def __init__(
        self,
        owner: str,
        bias: bool,
        forget_bias: float | None,
        peephole: bool,
        layer_norm: bool,
        coupled: bool,
        zoneout: float | tuple[float, float],
        weight_drop: float,
        backend: str,
    ) -> None:
        if forget_bias is not None:
            if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float)):
                raise TypeError(f"{owner}: forget_bias must be a number, got {forget_bias!r}")
            if not math.isfinite(forget_bias):
                raise ValueError(f"{owner}: forget_bias must be finite, got {forget_bias}")
            if not bias and forget_bias != 0:
                raise ValueError(
                    f"{owner}: forget_bias={forget_bias} needs bias=True (there is no bias to initialise); "
                    "drop forget_bias or set bias=True"
                )
            if coupled and forget_bias != 0:
                raise ValueError(
                    f"{owner}: forget_bias={forget_bias} has no effect with coupled=True (f = 1 - i has no "
                    "forget bias); drop one of them"
                )
        self.forget_bias = float(forget_bias) if forget_bias is not None else (1.0 if bias and not coupled else 0.0)
        for name, flag in (("peephole", peephole), ("layer_norm", layer_norm), ("coupled", coupled)):
            if not isinstance(flag, bool):
                raise TypeError(f"{owner}: {name} must be True or False, got {flag!r}")
        self.opts = CellOptions(peephole=peephole, layer_norm=layer_norm, coupled=coupled)
        if isinstance(zoneout, (tuple, list)):
            if len(zoneout) != 2:
                raise ValueError(f"{owner}: zoneout must be a rate or a pair (z_c, z_h), got {zoneout!r}")
            self.zoneout_c = _check_rate(owner, "zoneout (cell rate)", zoneout[0])
            self.zoneout_h = _check_rate(owner, "zoneout (hidden rate)", zoneout[1])
        else:
            self.zoneout_c = self.zoneout_h = _check_rate(owner, "zoneout", zoneout)
        self.weight_drop = _check_rate(owner, "weight_drop", weight_drop)
        if backend not in BACKENDS:
            raise ValueError(f"{owner}: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.requested: str = backend
        if backend == "torch" and self.any_variant:
            raise ValueError(
                f"{owner}: backend='torch' runs only the plain cell, but {', '.join(self.names())} "
                "is set; use backend='auto' or 'reference'"
            )

    @property
    def has_zoneout(self) -> bool:
        return self.zoneout_c > 0 or self.zoneout_h > 0

    def names(self) -> list[str]:
        out = [n for n in ("peephole", "layer_norm", "coupled") if getattr(self.opts, n)]
        if self.has_zoneout:
            out.append("zoneout")
        if self.weight_drop > 0:
            out.append("weight_drop")
        return out

    @property
    def any_variant(self) -> bool:
        return bool(self.names())

    def plain_now(self, training: bool) -> bool:
        """True when the step is exactly torch's (no variant equation applies in this mode)."""
        o = self.opts
        if o.peephole or o.layer_norm or o.coupled or self.has_zoneout:
            return False
        return not (training and self.weight_drop > 0)


class LSTM(nn.Module):
    r"""A multi-layer LSTM, a drop-in for :class:`torch.nn.LSTM`, with variants and gate traces.

    Per layer and step, gate order i, f, g, o::

        i_t = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)     input gate: what is worth remembering
        f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf)     forget gate: what old memory may fade
        g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)  candidate memory
        o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho)     output gate: what memory is used now
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        h_t = o_t ⊙ tanh(c_t)                               (h_t = W_hr h_t when proj_size > 0)

    Arguments and parameters are torch.nn.LSTM's (``weight_ih_l0``, ``bias_hh_l1_reverse``, …).
    Shapes: input (T, B, I) or (B, T, I) with ``batch_first``, or unbatched (T, I), or a
    :class:`~torch.nn.utils.rnn.PackedSequence`; h_0 (L·D, B, P or H); c_0 (L·D, B, H);
    output (T, B, D·(P or H)).

    Variant keywords (see :mod:`lstmkit.core.functional` for each paper's equations):

    * ``forget_bias`` (default 1.0 with a bias, Jozefowicz et al. 2015): the initial forget-gate
      bias, put in ``bias_ih``'s forget rows (``bias_hh``'s are 0). Initialisation only.
    * ``peephole`` (Gers & Schmidhuber 2000): adds ``weight_peephole_l{k}`` (3, H), rows p_i, p_f, p_o.
    * ``layer_norm`` (Ba et al. 2016): adds ``layer_norm_{ih,hh,c}_{weight,bias}_l{k}``.
    * ``coupled``: f = 1 − i. The forget rows of the weights stay in the torch layout but are unused
      (initialised to 0, they get zero gradient).
    * ``zoneout`` (Krueger et al. 2016): rate z, or a pair (z_c, z_h). In training each unit keeps
      its previous value with probability z at each step; in evaluation the expectation is used,
      c_t = z·c_{t-1} + (1−z)·c̃_t, as in the paper.
    * ``weight_drop`` (DropConnect on W_hh, Merity et al. 2017): in training a fresh dropout mask
      on the recurrent weights for each forward call, shared by all steps.

    ``lstm(x, hx, return_gates=True)`` also returns a :class:`Trace`. ``lstm.backend`` is the path
    that ran last (``"torch"``, ``"fused"``, ``"reference"``); ``backend=`` forces one.
    On CUDA, plain configurations run cuDNN through the torch path; variants and traces run the
    reference path (the fused kernels are CPU-only).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        *,
        forget_bias: float | None = None,
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
        self.input_size = _check_int(owner, "input_size", input_size, 1)
        self.hidden_size = _check_int(owner, "hidden_size", hidden_size, 1)
        self.num_layers = _check_int(owner, "num_layers", num_layers, 1)
        self.proj_size = _check_int(owner, "proj_size", proj_size, 0)
        if self.proj_size >= self.hidden_size:
            raise ValueError(
                f"{owner}: proj_size must be smaller than hidden_size, got proj_size={proj_size} "
                f"and hidden_size={hidden_size}"
            )
        for name, flag in (("bias", bias), ("batch_first", batch_first), ("bidirectional", bidirectional)):
            if not isinstance(flag, bool):
                raise TypeError(f"{owner}: {name} must be True or False, got {flag!r}")
        self.bias = bias
        self.batch_first = batch_first
        self.bidirectional = bidirectional
        self.dropout = _check_rate(owner, "dropout", dropout)
        if self.dropout > 0 and num_layers == 1:
            warnings.warn(
                f"{owner}: dropout={dropout} applies between layers, so it has no effect with num_layers=1",
                stacklevel=2,
            )
        self._v = _Variants(owner, bias, forget_bias, peephole, layer_norm, coupled, zoneout, weight_drop, backend)
        self.forget_bias = self._v.forget_bias
        self.peephole = peephole
        self.layer_norm = layer_norm
        self.coupled = coupled
        self.zoneout = zoneout
        self.weight_drop = self._v.weight_drop
        self.requested_backend: str = backend
        self.backend: str | None = None
        self._int8: dict[str, Any] | None = None  # set by use_int8()
        self._int8_cache: dict[int, Any] = {}
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        H, P = self.hidden_size, self.proj_size
        real_h = P if P > 0 else H
        D = 2 if bidirectional else 1
        self._names: list[list[str]] = []  # per (layer, direction): the torch flat names, in order
        for layer in range(self.num_layers):
            layer_in = self.input_size if layer == 0 else real_h * D
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
                names = [f"weight_ih{sfx}", f"weight_hh{sfx}"]
                setattr(self, names[0], nn.Parameter(torch.empty(4 * H, layer_in, **factory)))
                setattr(self, names[1], nn.Parameter(torch.empty(4 * H, real_h, **factory)))
                if bias:
                    names += [f"bias_ih{sfx}", f"bias_hh{sfx}"]
                    setattr(self, names[2], nn.Parameter(torch.empty(4 * H, **factory)))
                    setattr(self, names[3], nn.Parameter(torch.empty(4 * H, **factory)))
                if P > 0:
                    names.append(f"weight_hr{sfx}")
                    setattr(self, names[-1], nn.Parameter(torch.empty(P, H, **factory)))
                if peephole:
                    setattr(self, f"weight_peephole{sfx}", nn.Parameter(torch.empty(3, H, **factory)))
                if layer_norm:
                    for part, size in (("ih", 4 * H), ("hh", 4 * H), ("c", H)):
                        setattr(self, f"layer_norm_{part}_weight{sfx}", nn.Parameter(torch.empty(size, **factory)))
                        setattr(self, f"layer_norm_{part}_bias{sfx}", nn.Parameter(torch.empty(size, **factory)))
                self._names.append(names)
        self.reset_parameters()

    # ----------------------------------------------------------------- parameters
    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _suffixes(self) -> Iterator[tuple[int, int, str]]:
        for layer in range(self.num_layers):
            for d in range(self.num_directions):
                yield layer, d, f"_l{layer}" + ("_reverse" if d == 1 else "")

    def reset_parameters(self) -> None:
        """torch.nn.LSTM's init (U(−1/√H, 1/√H) for every weight and bias), then the variants':
        LN gains 1 and shifts 0, forget-gate bias ``forget_bias``, coupled forget rows 0."""
        init_variants(self, self.hidden_size, [s for _, _, s in self._suffixes()], self._v)

    def flatten_parameters(self) -> None:
        """Kept for drop-in compatibility with torch.nn.LSTM; nothing to do."""

    def _flat_weights(self) -> list[Tensor]:
        return [getattr(self, n) for names in self._names for n in names]

    def _layer_weights(self, layer: int, d: int, training: bool) -> LayerWeights:
        sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
        return layer_weights(self, sfx, self.bias, self.proj_size > 0, self._v, training)

    # ----------------------------------------------------------------- int8 inference
    def use_int8(self, enable: bool = True) -> LSTM:
        """Run inference (eval mode, no gradient, CPU float32, no traces) through the int8 kernel.

        The weights are coded as :mod:`lstmkit.compress` codes them (int8 with one scale per
        output row; the codes of a quantized run are reproduced exactly) and the inputs of the two
        matrix products per step are coded on the fly (see :class:`lstmkit.kernels.Int8Stream`);
        the gates and the cell stay float32. The float parameters are not changed: training, traces
        and gradients run the float paths as before, and the codes follow later changes of the
        weights. ``lstm.backend`` says ``"int8"`` when it ran; :meth:`stream` then gives the int8
        stream. Needs the plain cell (no peephole, layer norm, coupled gates, zoneout), no
        projection, one direction, float32, and the compiled kernels. Returns ``self``.
        """
        if not enable:
            self._int8 = None
            self._int8_cache = {}
            return self
        why = self._int8_unsupported()
        if why is not None:
            raise ValueError(f"LSTM.use_int8: {why}")
        self._int8 = {"versions": None, "layers": None}
        self._int8_cache = {}
        self._int8_layers()
        return self

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_int8_cache"] = {}  # compiled runners are rebuilt on demand (they cannot be copied)
        return state

    @property
    def int8_enabled(self) -> bool:
        """True after :meth:`use_int8`: eligible inference calls run the int8 kernel."""
        return getattr(self, "_int8", None) is not None

    def _int8_unsupported(self) -> str | None:
        if self._v.opts.peephole or self._v.opts.layer_norm or self._v.opts.coupled or self._v.has_zoneout:
            return f"the int8 kernel runs only the plain cell, but {', '.join(self._v.names())} is set"
        if self.proj_size > 0:
            return "the int8 kernel has no projection (proj_size > 0)"
        if self.bidirectional:
            return "the int8 kernel runs one direction; this LSTM is bidirectional"
        dtype, device = self._param_dtype_device()
        if dtype != torch.float32 or device.type != "cpu":
            return f"the int8 kernel runs on CPU float32 parameters, these are {dtype} on {device.type}"
        try:
            from .. import kernels
        except ImportError:  # pragma: no cover - part of the package
            return "lstmkit.kernels cannot be imported"
        if not kernels.available():
            return kernels.unavailable_reason() or "the compiled kernels are unavailable"
        return None

    def _int8_layers(self) -> list[dict[str, Tensor]]:
        """The codes of every layer, redone when a weight changed since they were made."""
        from ..runtime.quant import quantize_rows

        st = self._int8
        assert st is not None
        names = [n for names in self._names for n in names]
        versions = [getattr(self, n)._version for n in names]
        if st["layers"] is None or st["versions"] != versions:
            layers = []
            with torch.no_grad():
                for k in range(self.num_layers):
                    d: dict[str, Tensor] = {}
                    for part in ("ih", "hh"):
                        w = getattr(self, f"weight_{part}_l{k}").detach().cpu().float().numpy()
                        q, sc = quantize_rows(w, 8)
                        d[f"q_{part}"], d[f"s_{part}"] = torch.from_numpy(q), torch.from_numpy(sc)
                    if self.bias:
                        d["bias"] = (getattr(self, f"bias_ih_l{k}") + getattr(self, f"bias_hh_l{k}")).detach().clone()
                    layers.append(d)
            st["layers"], st["versions"] = layers, versions
            self._int8_cache = {}
        return st["layers"]  # type: ignore[no-any-return]

    def _int8_runner(self, batch: int) -> Any:
        """An int8 stream of this batch size, kept between calls (its packed weights with it)."""
        from .. import kernels

        layers = self._int8_layers()
        cache: dict[int, Any] = self._int8_cache
        if batch not in cache:
            if len(cache) >= 4:
                cache.pop(next(iter(cache)))
            cache[batch] = kernels.Int8Stream(layers, batch)
        return cache[batch]

    def _needs_grad(self, x: Tensor) -> bool:
        """Whether this call builds an autograd graph (through the input or the parameters)."""
        return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))

    def _int8_now(self, x: Tensor, traced: bool, packed: bool) -> bool:
        if getattr(self, "_int8", None) is None or self.training or traced or packed:
            return False
        if x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_autocast_enabled("cpu"):
            return False
        return not self._needs_grad(x)

    def _forward_int8(self, x: Tensor, h0: Tensor, c0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        runner = self._int8_runner(int(x.shape[1]))
        runner.set_state(h0, c0)
        y = runner.sequence(x)
        h_n, c_n = runner.state
        return y, h_n, c_n

    # ----------------------------------------------------------------- conversion
    @classmethod
    def from_torch(cls, module: nn.LSTM, **variants: Any) -> LSTM:
        """An lstmkit.LSTM with the same configuration and a copy of the weights of ``module``."""
        if not isinstance(module, nn.LSTM):
            raise TypeError(f"LSTM.from_torch: expected a torch.nn.LSTM, got {type(module).__name__}")
        p = next(module.parameters())
        variants.setdefault("forget_bias", None)
        new = cls(
            module.input_size,
            module.hidden_size,
            module.num_layers,
            module.bias,
            module.batch_first,
            float(module.dropout),
            module.bidirectional,
            module.proj_size,
            device=p.device,
            dtype=p.dtype,
            **variants,
        )
        missing, _ = new.load_state_dict(module.state_dict(), strict=False)
        if any(not _is_variant_param(m) for m in missing):
            raise ValueError(f"LSTM.from_torch: could not copy {missing}")
        new.train(module.training)
        return new

    def to_torch(self) -> nn.LSTM:
        """A torch.nn.LSTM with the same configuration and a copy of the weights (plain cell only)."""
        if self._v.any_variant:
            raise ValueError(
                f"LSTM.to_torch: torch.nn.LSTM cannot express {', '.join(self._v.names())}; only a plain LSTM converts"
            )
        p = next(self.parameters())
        m = nn.LSTM(
            self.input_size,
            self.hidden_size,
            self.num_layers,
            self.bias,
            self.batch_first,
            self.dropout,
            self.bidirectional,
            self.proj_size,
            device=p.device,
            dtype=p.dtype,
        )
        m.load_state_dict(self.state_dict())
        m.train(self.training)
        return m

    # ----------------------------------------------------------------- dispatch
    def choose_backend(self, x: Tensor, traced: bool, packed: bool, int8: bool = True) -> str:
        """The path a call with this input would run (the single dispatch point)."""
        req = self.requested_backend
        plain = self._v.plain_now(self.training)
        if req == "auto" and int8 and self._int8_now(x, traced, packed):
            return "int8"
        if req == "reference":
            return "reference"
        if req == "torch":
            if traced:
                raise ValueError(
                    "LSTM: backend='torch' cannot return gate traces (torch's fused LSTM keeps them inside); "
                    "use backend='auto' or 'reference'"
                )
            if not plain:
                raise ValueError(
                    f"LSTM: backend='torch' runs only the plain cell, but {', '.join(self._v.names())} "
                    "is set; use backend='auto' or 'reference'"
                )
            return "torch"
        # torch's CPU LSTM (oneDNN) cannot run under bfloat16 autocast on CPUs without native bf16, and
        # the fused kernels take float32/float64 only: the reference path runs there (its matmuls
        # autocast, its pointwise math follows)
        cpu_autocast = x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
        if req == "auto" and cpu_autocast:
            return "reference"
        if req == "auto" and plain and not traced:
            # both torch's LSTM and the fused kernels can run it: the faster one, measured once
            if packed or not self._fused_supported(x, packed):
                return "torch"
            from . import dispatch

            return dispatch.plain_choice(self, x, self._needs_grad(x))
        fused_ok = self._fused_supported(x, packed)
        if req == "fused":
            if not fused_ok:
                why = _kernel_reason() or "this configuration, dtype or device is not supported"
                raise ValueError(f"LSTM: backend='fused' cannot run here: {why}; use backend='auto'")
            return "fused"
        return "fused" if fused_ok else "reference"

    def _fused_supported(self, x: Tensor, packed: bool) -> bool:
        if x.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
            return False
        try:
            from .. import kernels
        except ImportError:
            return False
        if not hasattr(kernels, "supports"):
            return False
        needs_grad = self._needs_grad(x)
        return bool(
            kernels.supports(
                dtype=x.dtype,
                device=x.device,
                peephole=self.peephole,
                layer_norm=self.layer_norm,
                coupled=self.coupled,
                zoneout=self._v.has_zoneout,
                proj=self.proj_size > 0,
                lengths=packed,
                requires_grad=needs_grad,
            )
            and kernels.available()
        )

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: tuple[Tensor, Tensor] | None = None,
        return_gates: bool = False,
    ) -> Any:
        owner = type(self).__name__
        H, P = self.hidden_size, self.proj_size
        real_h = P if P > 0 else H
        LD = self.num_layers * self.num_directions
        dtype, device = self._param_dtype_device()

        packed = isinstance(input, PackedSequence)
        lengths: Tensor | None = None
        if isinstance(input, PackedSequence):
            data = input.data
            if data.dim() != 2:
                raise ValueError(f"{owner}: PackedSequence data must be 2-D (N, input_size), got {tuple(data.shape)}")
            _check_features(owner, data, self.input_size)
            _check_dtype_device(owner, "input", data, dtype, device)
            batch = int(input.batch_sizes[0])
            unbatched = False
        else:
            if not isinstance(input, Tensor):
                raise TypeError(f"{owner}: input must be a Tensor or PackedSequence, got {type(input).__name__}")
            if input.dim() not in (2, 3):
                raise ValueError(
                    f"{owner}: expected input of 3 dimensions (T, B, I) or (B, T, I) with batch_first, or 2 "
                    f"(T, I) unbatched, got {input.dim()} dimensions of shape {tuple(input.shape)}"
                )
            _check_features(owner, input, self.input_size)
            _check_dtype_device(owner, "input", input, dtype, device)
            unbatched = input.dim() == 2
            steps = input.shape[1] if self.batch_first and not unbatched else input.shape[0]
            if steps == 0:
                raise ValueError(f"{owner}: the input has 0 steps (shape {tuple(input.shape)}); give at least one step")
            data = input
            if unbatched:
                batch = 1
            else:
                batch = input.shape[0] if self.batch_first else input.shape[1]

        h0, c0 = self._initial_state(hx, owner, LD, batch, real_h, H, unbatched, dtype, device, input)
        traced = bool(return_gates)
        path = self.choose_backend(data, traced, packed)
        self.backend = path

        if path == "torch":
            return self._forward_torch(input, h0, c0, unbatched)
        if path == "int8" and bool((h0.abs() > 1).any()):
            path = self.backend = self.choose_backend(data, traced, packed, int8=False)  # h0 outside the codes' range
        if path == "int8":
            assert not isinstance(input, PackedSequence)
            xi = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
            y8, h8, c8 = self._forward_int8(xi, h0, c0)
            if unbatched:
                return y8.squeeze(1), (h8.squeeze(1), c8.squeeze(1))
            return (y8.transpose(0, 1) if self.batch_first else y8), (h8, c8)

        # reference / fused: work in (T, B, I), original batch order
        if isinstance(input, PackedSequence):
            x, lengths = pad_packed_sequence(input, batch_first=False)
            lengths = lengths.to(torch.int64)
        elif unbatched:
            x = input.unsqueeze(1)
        else:
            x = input.transpose(0, 1) if self.batch_first else input
        out, h_n, c_n, trace = self._forward_stack(x, h0, c0, lengths, traced, path)

        if isinstance(input, PackedSequence):
            assert lengths is not None
            output: Any = _repack(out, lengths, input)
        elif unbatched:
            output = out.squeeze(1)
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
            if trace is not None:
                trace = Trace(*(t.squeeze(2) for t in trace))
        else:
            output = out.transpose(0, 1) if self.batch_first else out
        if traced:
            return output, (h_n, c_n), trace
        return output, (h_n, c_n)

    def _param_dtype_device(self) -> tuple[torch.dtype, torch.device]:
        p = next(self.parameters())
        return p.dtype, p.device

    def _initial_state(
        self,
        hx: Any,
        owner: str,
        LD: int,
        batch: int,
        real_h: int,
        H: int,
        unbatched: bool,
        dtype: torch.dtype,
        device: torch.device,
        input: Any,
    ) -> tuple[Tensor, Tensor]:
        if hx is None:
            z = torch.zeros(LD, batch, real_h, dtype=dtype, device=device)
            return z, torch.zeros(LD, batch, H, dtype=dtype, device=device)
        if not (isinstance(hx, (tuple, list)) and len(hx) == 2 and all(isinstance(t, Tensor) for t in hx)):
            raise TypeError(f"{owner}: hx must be a tuple (h_0, c_0) of two tensors, got {type(hx).__name__}")
        h0, c0 = hx
        want_h = (LD, real_h) if unbatched else (LD, batch, real_h)
        want_c = (LD, H) if unbatched else (LD, batch, H)
        for name, t, want in (("h_0", h0, want_h), ("c_0", c0, want_c)):
            if tuple(t.shape) != want:
                raise ValueError(f"{owner}: expected {name} of shape {want}, got {tuple(t.shape)}")
            _check_dtype_device(owner, name, t, dtype, device)
        if unbatched:
            h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
        return h0, c0

    def _forward_torch(self, input: Any, h0: Tensor, c0: Tensor, unbatched: bool) -> Any:
        weights = self._flat_weights()
        if isinstance(input, PackedSequence):
            if input.sorted_indices is not None:
                h0 = h0.index_select(1, input.sorted_indices)
                c0 = c0.index_select(1, input.sorted_indices)
            res = torch._VF.lstm(  # type: ignore[attr-defined]
                input.data,
                input.batch_sizes,
                (h0, c0),
                weights,
                self.bias,
                self.num_layers,
                self.dropout,
                self.training,
                self.bidirectional,
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
            self.bias,
            self.num_layers,
            self.dropout,
            self.training,
            self.bidirectional,
            self.batch_first and not unbatched,
        )
        out, h_n, c_n = res[0], res[1], res[2]
        if unbatched:
            return out.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        return out, (h_n, c_n)

    def _forward_stack(
        self,
        x: Tensor,
        h0: Tensor,
        c0: Tensor,
        lengths: Tensor | None,
        traced: bool,
        path: str,
    ) -> tuple[Tensor, Tensor, Tensor, Trace | None]:
        T, B = x.shape[0], x.shape[1]
        D = self.num_directions
        run = _fused_runner if path == "fused" else Fn.run_layer
        rev = Fn.reverse_index(T, lengths, B, x.device) if D == 2 else None
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        tr: list[tuple[Tensor, Tensor, Tensor]] = []
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                k = layer * D + d
                w = self._layer_weights(layer, d, self.training)
                xin = layer_in if d == 0 else Fn.time_reverse(layer_in, rev)
                zc, zh = self._zoneout_masks(T, B, x)
                y, h_t, c_t, gates_c = run(
                    xin,
                    h0[k],
                    c0[k],
                    w,
                    self._v.opts,
                    zoneout_c=zc,
                    zoneout_h=zh,
                    lengths=lengths,
                    trace=traced,
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
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_out = F.dropout(layer_out, self.dropout, training=True)
            layer_in = layer_out
        trace = None
        if traced:
            # (LD, T, B, 4H); one layer and direction: a view of the kernel's buffer, no copy (a copy of
            # train-large's 52 MB of gates made the traced call ~1.3x the untraced one)
            gates = _stack([g for g, _, _ in tr])
            i, f, g, o = gates.chunk(4, dim=-1)
            # h is copied: the layer's output is returned too and must not alias it
            trace = Trace(i, f, g, o, _stack([c for _, c, _ in tr]), torch.stack([h for _, _, h in tr]))
        return layer_in, torch.stack(hs), torch.stack(cs), trace

    def _zoneout_masks(self, T: int, B: int, x: Tensor) -> tuple[Tensor | None, Tensor | None]:
        H, P = self.hidden_size, self.proj_size
        return zoneout_masks(self._v, (T, B, H), (T, B, P if P > 0 else H), x, self.training)

    # ----------------------------------------------------------------- streaming
    def stream(self, batch_size: int = 1) -> Any:
        """A one-step-per-call runner with the state carried (inference: no dropout or zoneout noise;
        zoneout uses its expectation). ``y = stream.step(x_t)``; ``stream.reset()``."""
        from .stream import make_stream

        return make_stream(self, batch_size)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        for n in self._v.names():
            s += f", {n}={getattr(self, n)}"
        if self.requested_backend != "auto":
            s += f", backend={self.requested_backend!r}"
        return s


class LSTMCell(nn.Module):
    r"""One LSTM step, a drop-in for :class:`torch.nn.LSTMCell`, with the same variant keywords as
    :class:`LSTM` (no projection, as in torch).

    ``h', c' = cell(x, (h, c))``; x (B, I) or unbatched (I,); h, c (B, H) or (H,); the state
    defaults to zeros. ``cell(x, hx, return_gates=True)`` returns ``(h', c'), trace`` with a
    :class:`Trace` of (B, H) tensors. Parameters: ``weight_ih`` (4H, I), ``weight_hh`` (4H, H),
    ``bias_ih``, ``bias_hh`` (4H), plus ``weight_peephole`` (3, H) and ``layer_norm_*`` as in LSTM.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        forget_bias: float | None = None,
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
        self.input_size = _check_int(owner, "input_size", input_size, 1)
        self.hidden_size = _check_int(owner, "hidden_size", hidden_size, 1)
        if not isinstance(bias, bool):
            raise TypeError(f"{owner}: bias must be True or False, got {bias!r}")
        self.bias = bias
        self._v = _Variants(owner, bias, forget_bias, peephole, layer_norm, coupled, zoneout, weight_drop, backend)
        if backend == "fused":
            raise ValueError(f"{owner}: there is no fused single-step cell; use LSTM.stream() or backend='auto'")
        self.forget_bias = self._v.forget_bias
        self.peephole, self.layer_norm, self.coupled = peephole, layer_norm, coupled
        self.zoneout, self.weight_drop = zoneout, self._v.weight_drop
        self.requested_backend: str = backend
        self.backend: str | None = None
        self._int8: dict[str, Any] | None = None  # set by use_int8()
        self._int8_cache: dict[int, Any] = {}
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

    def reset_parameters(self) -> None:
        init_variants(self, self.hidden_size, [""], self._v)

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
            raise ValueError(
                f"LSTMCell.to_torch: torch.nn.LSTMCell cannot express {', '.join(self._v.names())}; "
                "only a plain cell converts"
            )
        p = next(self.parameters())
        m = nn.LSTMCell(self.input_size, self.hidden_size, self.bias, device=p.device, dtype=p.dtype)
        m.load_state_dict(self.state_dict())
        return m

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None, return_gates: bool = False) -> Any:
        owner = type(self).__name__
        p = self.weight_ih
        if not isinstance(input, Tensor):
            raise TypeError(f"{owner}: input must be a Tensor, got {type(input).__name__}")
        if input.dim() not in (1, 2):
            raise ValueError(
                f"{owner}: expected input of 2 dimensions (B, I) or 1 (I,) unbatched, got {input.dim()} "
                f"dimensions of shape {tuple(input.shape)}"
            )
        _check_features(owner, input, self.input_size)
        _check_dtype_device(owner, "input", input, p.dtype, p.device)
        unbatched = input.dim() == 1
        x = input.unsqueeze(0) if unbatched else input
        B, H = x.shape[0], self.hidden_size
        if hx is None:
            h = c = torch.zeros(B, H, dtype=p.dtype, device=p.device)
        else:
            if not (isinstance(hx, (tuple, list)) and len(hx) == 2 and all(isinstance(t, Tensor) for t in hx)):
                raise TypeError(f"{owner}: hx must be a tuple (h, c) of two tensors, got {type(hx).__name__}")
            want = (H,) if unbatched else (B, H)
            for name, t in (("h", hx[0]), ("c", hx[1])):
                if tuple(t.shape) != want:
                    raise ValueError(f"{owner}: expected {name} of shape {want}, got {tuple(t.shape)}")
                _check_dtype_device(owner, name, t, p.dtype, p.device)
            h, c = (hx[0].unsqueeze(0), hx[1].unsqueeze(0)) if unbatched else (hx[0], hx[1])
        traced = bool(return_gates)
        if self.requested_backend == "torch" and traced:
            raise ValueError(f"{owner}: backend='torch' cannot return gate traces; use backend='auto' or 'reference'")
        use_torch = self.requested_backend == "torch" or (
            self.requested_backend == "auto" and self._v.plain_now(self.training) and not traced
        )
        self.backend = "torch" if use_torch else "reference"
        if use_torch:
            b_ih = self.bias_ih if self.bias else None
            b_hh = self.bias_hh if self.bias else None
            h_new, c_new = torch._VF.lstm_cell(x, (h, c), self.weight_ih, self.weight_hh, b_ih, b_hh)  # type: ignore[attr-defined]
            trace = None
        else:
            w = layer_weights(self, "", self.bias, False, self._v, self.training)
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
            return (h_new, c_new), trace
        return h_new, c_new

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        for n in self._v.names():
            s += f", {n}={getattr(self, n)}"
        return s


# --------------------------------------------------------------------------- helpers


def _is_variant_param(name: str) -> bool:
    return name.startswith(("weight_peephole", "layer_norm_"))


def init_variants(module: nn.Module, hidden_size: int, suffixes: list[str], v: _Variants) -> None:
    """torch's uniform init, then the variants' (shared by LSTM and LSTMCell)."""
    H = hidden_size
    std = 1.0 / math.sqrt(H)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-std, std)
        for sfx in suffixes:
            if v.opts.layer_norm:
                for part in ("ih", "hh", "c"):
                    getattr(module, f"layer_norm_{part}_weight{sfx}").fill_(1.0)
                    getattr(module, f"layer_norm_{part}_bias{sfx}").zero_()
            b_ih = getattr(module, f"bias_ih{sfx}", None)
            b_hh = getattr(module, f"bias_hh{sfx}", None)
            if b_ih is not None and b_hh is not None:
                b_ih[H : 2 * H].fill_(v.forget_bias)
                b_hh[H : 2 * H].zero_()
            if v.opts.coupled:
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    t = getattr(module, f"{name}{sfx}", None)
                    if t is not None:
                        t[H : 2 * H].zero_()


def layer_weights(module: nn.Module, sfx: str, bias: bool, proj: bool, v: _Variants, training: bool) -> LayerWeights:
    """The weights of one layer and direction as the functional step wants them (weight drop applied)."""
    w_hh: Tensor = getattr(module, f"weight_hh{sfx}")
    if training and v.weight_drop > 0:
        w_hh = F.dropout(w_hh, v.weight_drop, training=True)
    ln = None
    if v.opts.layer_norm:
        ln = tuple(
            getattr(module, f"layer_norm_{part}_{kind}{sfx}")
            for part in ("ih", "hh", "c")
            for kind in ("weight", "bias")
        )
    return LayerWeights(
        w_ih=getattr(module, f"weight_ih{sfx}"),
        w_hh=w_hh,
        b_ih=getattr(module, f"bias_ih{sfx}") if bias else None,
        b_hh=getattr(module, f"bias_hh{sfx}") if bias else None,
        w_hr=getattr(module, f"weight_hr{sfx}") if proj else None,
        peephole=getattr(module, f"weight_peephole{sfx}") if v.opts.peephole else None,
        ln=ln,  # type: ignore[arg-type]
    )


def zoneout_masks(
    v: _Variants, shape_c: tuple[int, ...], shape_h: tuple[int, ...], like: Tensor, training: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Keep-masks (1 = keep the previous value): Bernoulli(z) in training, the constant z in eval."""
    out: list[Tensor | None] = []
    for rate, shape in ((v.zoneout_c, shape_c), (v.zoneout_h, shape_h)):
        if rate <= 0:
            out.append(None)
        elif training:
            out.append((torch.rand(shape, device=like.device) < rate).to(like.dtype))
        else:
            out.append(torch.full(shape, rate, dtype=like.dtype, device=like.device))
    return out[0], out[1]


def _kernel_reason() -> str | None:
    try:
        from .. import kernels
    except ImportError as e:
        return f"the kernels cannot be imported ({e})"
    fn = getattr(kernels, "unavailable_reason", None)
    return fn() if fn is not None else "the fused kernels are not built into this installation"


def _fused_runner(
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
    from .. import kernels

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


def _check_features(owner: str, x: Tensor, size: int) -> None:
    if x.shape[-1] != size:
        raise ValueError(
            f"{owner}: expected input with {size} features (input_size) in the last dimension, got {x.shape[-1]}"
        )


def _check_dtype_device(owner: str, name: str, t: Tensor, dtype: torch.dtype, device: torch.device) -> None:
    if t.dtype != dtype:
        raise TypeError(
            f"{owner}: {name} has dtype {t.dtype} but the parameters are {dtype}; convert one of them "
            f"(e.g. {name}.to({dtype}) or module.to({t.dtype}))"
        )
    if t.device != device:
        raise ValueError(f"{owner}: {name} is on {t.device} but the parameters are on {device}; move one of them")


def _repack(out: Tensor, lengths: Tensor, like: PackedSequence) -> PackedSequence:
    """(T, B, F) padded, original batch order -> PackedSequence laid out as ``like``."""
    if like.sorted_indices is not None:
        out = out.index_select(1, like.sorted_indices.to(out.device))
        lengths = lengths.index_select(0, like.sorted_indices.cpu())
    T = out.shape[0]
    valid = torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)  # (T, B): time-major, sorted batch
    data = out[valid.to(out.device)]
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)
