"""`lstmkit.LSTM`: a drop-in for torch.nn.LSTM with variants, per-step gate traces and one dispatch
point that picks the path that runs.

(About 640 lines: torch.nn.LSTM's whole contract, constructor, initialisation, state dict, saving,
and forward, is one class; the paths it dispatches to live in paths.py, graph.py and ops.py.)

Paths ("backends"):

* ``"torch"``: torch's own fused LSTM (oneDNN on CPU, cuDNN on GPU). Only the plain cell, no traces.
* ``"fused"``: lstmkit's compiled CPU kernels (:mod:`lstmkit.kernels`), float32 and float64 on CPU.
* ``"reference"``: the published equations step by step in PyTorch (:mod:`lstmkit.core.functional`);
  runs everything, on any device and dtype, and is the oracle of the tests.

``backend="auto"`` (the default) runs, for a plain configuration without traces, ``"fused"`` where
the benchmarks of this project's machines show the kernels clearly faster than nn.LSTM for the
call's shapes, else ``"torch"`` (a fixed rule, :mod:`lstmkit.core.dispatch`, where measuring is an
opt-in), so it is never slower than nn.LSTM; otherwise ``"fused"`` where the kernels run the dtype
and device, else ``"reference"``. After :meth:`LSTM.use_int8`, eligible inference calls run
``"int8"`` (:mod:`lstmkit.core.int8`).

The cell is :mod:`lstmkit.core.cell`, the variants :mod:`lstmkit.core.variants`, streaming
:mod:`lstmkit.core.stream`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar, overload

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from .. import kernels
from ..errors import InputError
from . import dispatch, graph
from . import functional as Fn
from . import int8 as int8_path
from .checks import check_dtype_device, check_features, check_flag, check_int, check_rate, initial_state
from .dispatch import FUSED_DTYPES, Backend, check_backend
from .functional import LayerWeights
from .paths import repack, run_fused_layer, run_stack, run_torch
from .stream import Stream, check_batch_size, make_stream
from .trace import Trace
from .variants import (
    Variants,
    init_parameters,
    is_variant_parameter,
    keep_attributes,
    layer_weights,
    variants_of,
)

S = TypeVar("S", Tensor, PackedSequence)  # the output has the input's kind
State = tuple[Tensor, Tensor]


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

    * ``forget_bias`` (opt-in, Jozefowicz et al. 2015): the initial forget-gate bias, put in
      ``bias_ih``'s forget rows (``bias_hh``'s are 0). Initialisation only. The default ``None`` keeps
      torch's initialisation: under the same seed, ``lstmkit.LSTM(...)`` with torch's arguments has
      torch.nn.LSTM's initial parameters, and draws the same random numbers doing so. (lstmkit's own
      models set ``forget_bias=1.0``.)
    * ``chrono_init`` (opt-in, Tallec & Ollivier 2018): T_max > 2, the longest lag expected. The
      forget-gate biases are drawn b_f = log(u), u ~ U(1, T_max − 1), and the input-gate biases are
      b_i = −b_f, in ``bias_ih``'s rows (``bias_hh``'s input and forget rows are 0), after torch's
      init. Initialisation only; excludes ``forget_bias`` and ``coupled``.
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

    Saving: ``torch.save(model)`` / ``torch.load(path, weights_only=True)`` inside
    ``torch.serialization.safe_globals([...your classes..., *lstmkit.SAFE_GLOBALS])``; the module's
    state holds tensors and plain values only (the variants are rebuilt from the keyword attributes).
    ``state_dict()`` has torch.nn.LSTM's keys (plus the variants' own parameters): the two load each
    other's state dicts directly.
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
        self.num_layers = check_int(owner, "num_layers", num_layers, 1)
        self.proj_size = check_int(owner, "proj_size", proj_size, 0)
        if self.proj_size >= self.hidden_size:
            raise InputError(
                f"{owner}: proj_size must be smaller than hidden_size, got proj_size={proj_size} "
                f"and hidden_size={hidden_size}"
            )
        self.bias = check_flag(owner, "bias", bias)
        self.batch_first = check_flag(owner, "batch_first", batch_first)
        self.bidirectional = check_flag(owner, "bidirectional", bidirectional)
        self.dropout = check_rate(owner, "dropout", dropout)
        if self.dropout > 0 and num_layers == 1:
            warnings.warn(
                f"{owner}: dropout={dropout} applies between layers, so it has no effect with num_layers=1",
                stacklevel=2,
            )
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
        self._int8: int8_path.Int8Path | None = None  # set by use_int8()
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

    @property
    def variants(self) -> Variants:
        """The validated variant options (read-only): ``opts`` (peephole, layer_norm, coupled), the two
        zoneout rates ``zoneout_c`` / ``zoneout_h``, ``weight_drop``, ``forget_bias``."""
        return self._v

    def reset_parameters(self) -> None:
        """torch.nn.LSTM's init (U(−1/√H, 1/√H) for every weight and bias), then the variants':
        LN gains 1 and shifts 0, forget-gate bias ``forget_bias``, coupled forget rows 0."""
        init_parameters(
            self,
            self.hidden_size,
            [s for _, _, s in self._suffixes()],
            self._v,
            bias=self.bias,
            torch_names=[n for names in self._names for n in names],
        )

    # ----------------------------------------------------------------- saving
    def __getstate__(self) -> dict[str, Any]:
        """Tensors and plain values only, so ``torch.load(weights_only=True)`` can read a saved model:
        the variants are rebuilt from the keyword attributes and the int8 codes from the weights."""
        state = dict(super().__getstate__())
        state.pop("_v", None)
        state["_int8"] = None
        state["_int8_enabled"] = self._int8 is not None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        int8_on = bool(state.pop("_int8_enabled", False))
        super().__setstate__(state)
        if "_v" not in state:
            self._v = variants_of(self)
        if int8_on and self._int8 is None:
            self._int8 = int8_path.Int8Path()  # the codes are made again from the weights on first use

    def flatten_parameters(self) -> None:
        """Kept for drop-in compatibility with torch.nn.LSTM; nothing to do."""

    def _flat_weights(self) -> list[Tensor]:
        return [getattr(self, n) for names in self._names for n in names]

    def layer_weights(self, layer: int, direction: int = 0, training: bool = False) -> LayerWeights:
        """The parameters of one layer and direction as the step's equations use them (read-only views,
        no copy; with ``training`` and ``weight_drop`` W_hh carries a fresh DropConnect mask)."""
        sfx = f"_l{layer}" + ("_reverse" if direction == 1 else "")
        return layer_weights(self, sfx, bias=self.bias, proj=self.proj_size > 0, variants=self._v, training=training)

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
            return self
        dtype, device = self._param_dtype_device()
        why = int8_path.unsupported(
            self._v, proj_size=self.proj_size, bidirectional=self.bidirectional, dtype=dtype, device=device
        )
        if why is not None:
            raise InputError(f"LSTM.use_int8: {why}")
        self._int8 = int8_path.Int8Path()
        self._int8.codes(self._stack_weights())
        return self

    @property
    def int8_enabled(self) -> bool:
        """True after :meth:`use_int8`: eligible inference calls run the int8 kernel."""
        return self._int8 is not None

    def _stack_weights(self) -> list[LayerWeights]:
        """Every layer's weights, one direction, in inference."""
        return [self.layer_weights(k) for k in range(self.num_layers)]

    def _needs_grad(self, x: Tensor) -> bool:
        """Whether this call builds an autograd graph (through the input or the parameters)."""
        return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))

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
        if any(not is_variant_parameter(m) for m in missing):
            raise InputError(f"LSTM.from_torch: could not copy {missing}")
        new.train(module.training)
        return new

    def to_torch(self) -> nn.LSTM:
        """A torch.nn.LSTM with the same configuration and a copy of the weights (plain cell only)."""
        if self._v.any_variant:
            raise InputError(
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
        if (
            req == "auto"
            and int8
            and self._int8 is not None
            and int8_path.eligible(
                x, training=self.training, traced=traced, packed=packed, needs_grad=self._needs_grad(x)
            )
        ):
            return "int8"
        if req == "reference":
            return "reference"
        if req == "torch":
            if traced:
                raise InputError(
                    "LSTM: backend='torch' cannot return gate traces (torch's fused LSTM keeps them inside); "
                    "use backend='auto' or 'reference'"
                )
            if not plain:
                raise InputError(
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
            # both torch's LSTM and the fused kernels can run it: the dispatch's rule decides
            if packed or not self._fused_runs(x):
                return "torch"
            grad = self._needs_grad(x)
            return dispatch.plain_choice(self._case(x, grad), self._measurer(x, grad))
        fused_ok = self._fused_runs(x)
        if req == "fused":
            if not fused_ok:
                why = (
                    f"the kernels run float32 and float64 on CPU, not {x.dtype} on {x.device.type}"
                    + (" under autocast" if cpu_autocast else "")
                    if kernels.available()
                    else kernels.unavailable_reason() or "the fused kernels are unavailable"
                )
                raise InputError(f"LSTM: backend='fused' cannot run here: {why}; use backend='auto'")
            return "fused"
        return "fused" if fused_ok else "reference"

    def _fused_runs(self, x: Tensor) -> bool:
        """Whether the fused kernels run this input: every configuration, float32 or float64 on CPU."""
        if x.device.type != "cpu" or torch.is_autocast_enabled("cpu") or x.dtype not in FUSED_DTYPES:
            return False
        return kernels.available()

    def _case(self, x: Tensor, grad: bool) -> dispatch.Case:
        unbatched = x.dim() == 2
        return dispatch.Case(
            steps=int(x.shape[1] if self.batch_first and not unbatched else x.shape[0]),
            batch=1 if unbatched else int(x.shape[0] if self.batch_first else x.shape[1]),
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            proj_size=self.proj_size,
            num_layers=self.num_layers,
            directions=self.num_directions,
            bias=self.bias,
            dtype=x.dtype,
            grad=grad,
        )

    def _measurer(self, x: Tensor, grad: bool) -> Callable[[str], None]:
        """A call of x's shape (at most dispatch.MAX_STEPS steps) on a given path, for measuring: random
        inputs from a generator of its own, no dropout, gradients through ``torch.autograd.grad``."""
        case = self._case(x, grad)
        shape = (min(case.steps, dispatch.MAX_STEPS), case.batch, self.input_size)
        inputs: list[Tensor] = []

        def run(path: str) -> None:
            if not inputs:
                gen = torch.Generator().manual_seed(0)
                inputs.append(torch.randn(shape, generator=gen, dtype=x.dtype).to(x.device))
            xi = inputs[0].detach().requires_grad_(grad)
            if grad:
                with torch.enable_grad():
                    y = self._run_plain(xi, path)
                    params = [p for p in self.parameters() if p.requires_grad]
                    torch.autograd.grad(y.sum(), [xi, *params])
            else:
                with torch.no_grad():
                    self._run_plain(xi, path)

        return run

    def _run_plain(self, x: Tensor, path: str) -> Tensor:
        """The output of a plain configuration on x (T, B, I) from a zero state, on path "torch" or
        "fused", without dropout (inference mode whatever ``self.training`` says)."""
        LD, B = self.num_layers * self.num_directions, x.shape[1]
        H = self.hidden_size
        h0 = torch.zeros(LD, B, self.proj_size or H, dtype=x.dtype, device=x.device)
        c0 = torch.zeros(LD, B, H, dtype=x.dtype, device=x.device)
        if path == "torch":
            y, _ = run_torch(
                x,
                h0,
                c0,
                self._flat_weights(),
                bias=self.bias,
                num_layers=self.num_layers,
                dropout=0.0,
                training=False,
                bidirectional=self.bidirectional,
                batch_first=False,
                unbatched=False,
            )
            assert isinstance(y, Tensor)
            return y
        return self._forward_stack(x, h0, c0, None, False, path, training=False)[0]

    # ----------------------------------------------------------------- forward
    @overload
    def forward(self, input: S, hx: State | None = None, return_gates: Literal[False] = False) -> tuple[S, State]: ...

    @overload
    def forward(self, input: S, hx: State | None, return_gates: Literal[True]) -> tuple[S, State, Trace]: ...

    @overload
    def forward(self, input: S, hx: State | None = None, *, return_gates: Literal[True]) -> tuple[S, State, Trace]: ...

    @overload
    def forward(
        self, input: S, hx: State | None = None, return_gates: bool = False
    ) -> tuple[S, State] | tuple[S, State, Trace]: ...

    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: State | None = None,
        return_gates: bool = False,
    ) -> tuple[Tensor | PackedSequence, State] | tuple[Tensor | PackedSequence, State, Trace]:
        """input (T, B, I), (B, T, I) with batch_first, (T, I) or a PackedSequence -> (output, (h_n, c_n)),
        and the :class:`Trace` with ``return_gates=True``; see the class docstring."""
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
                raise InputError(f"{owner}: PackedSequence data must be 2-D (N, input_size), got {tuple(data.shape)}")
            check_features(owner, data, self.input_size)
            check_dtype_device(owner, "input", data, dtype, device)
            batch = int(input.batch_sizes[0])
            unbatched = False
        else:
            if not isinstance(input, Tensor):
                raise TypeError(f"{owner}: input must be a Tensor or PackedSequence, got {type(input).__name__}")
            if input.dim() not in (2, 3):
                raise InputError(
                    f"{owner}: expected input of 3 dimensions (T, B, I) or (B, T, I) with batch_first, or 2 "
                    f"(T, I) unbatched, got {input.dim()} dimensions of shape {tuple(input.shape)}"
                )
            check_features(owner, input, self.input_size)
            check_dtype_device(owner, "input", input, dtype, device)
            unbatched = input.dim() == 2
            steps = input.shape[1] if self.batch_first and not unbatched else input.shape[0]
            if steps == 0:
                raise InputError(f"{owner}: the input has 0 steps (shape {tuple(input.shape)}); give at least one step")
            data = input
            if unbatched:
                batch = 1
            else:
                batch = input.shape[0] if self.batch_first else input.shape[1]

        h0, c0 = initial_state(owner, hx, (LD, batch, real_h), (LD, batch, H), unbatched, dtype, device)
        traced = bool(return_gates)
        capture = None if packed else graph.capture_mode()
        if capture is not None:  # torch.compile / torch.export / ONNX: a pure-PyTorch path (core/graph.py)
            assert isinstance(input, Tensor)
            return graph.lstm_forward(self, input, h0, c0, unbatched, traced, capture, zero_state=hx is None)
        path = self.choose_backend(data, traced, packed)
        self.backend = path

        if path == "torch":
            return run_torch(
                input,
                h0,
                c0,
                self._flat_weights(),
                bias=self.bias,
                num_layers=self.num_layers,
                dropout=self.dropout,
                training=self.training,
                bidirectional=self.bidirectional,
                batch_first=self.batch_first,
                unbatched=unbatched,
            )
        if path == "int8" and bool((h0.abs() > 1).any()):
            path = self.backend = self.choose_backend(data, traced, packed, int8=False)  # h0 outside the codes' range
        if path == "int8":
            assert not isinstance(input, PackedSequence)
            xi = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
            assert self._int8 is not None
            y8, h8, c8 = self._int8.run(self._stack_weights(), xi, h0, c0)
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
        out, h_n, c_n, trace = self._forward_stack(x, h0, c0, lengths, traced, path, self.training)

        if isinstance(input, PackedSequence):
            assert lengths is not None
            output: Tensor | PackedSequence = repack(out, lengths, input)
        elif unbatched:
            output = out.squeeze(1)
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
            if trace is not None:
                trace = Trace(*(t.squeeze(2) for t in trace))
        else:
            output = out.transpose(0, 1) if self.batch_first else out
        if traced:
            assert trace is not None
            return output, (h_n, c_n), trace
        return output, (h_n, c_n)

    def _param_dtype_device(self) -> tuple[torch.dtype, torch.device]:
        p = next(self.parameters())
        return p.dtype, p.device

    def _forward_stack(
        self, x: Tensor, h0: Tensor, c0: Tensor, lengths: Tensor | None, traced: bool, path: str, training: bool
    ) -> tuple[Tensor, Tensor, Tensor, Trace | None]:
        """The layers on x (T, B, I) by the reference or the fused path (see :func:`paths.run_stack`)."""
        return run_stack(
            x,
            h0,
            c0,
            lambda layer, d: self.layer_weights(layer, d, training),
            self._v,
            layer_fn=run_fused_layer if path == "fused" else Fn.run_layer,
            num_layers=self.num_layers,
            directions=self.num_directions,
            hidden_size=self.hidden_size,
            proj_size=self.proj_size,
            dropout=self.dropout,
            lengths=lengths,
            traced=traced,
            training=training,
        )

    # ----------------------------------------------------------------- streaming
    def stream(self, batch_size: int = 1) -> Stream[Tensor]:
        """A one-step-per-call runner with the state carried (inference: no dropout or zoneout noise;
        zoneout uses its expectation). ``y = stream.step(x_t)``; ``stream.reset()``; see
        :class:`lstmkit.core.stream.Stream`. The int8 stream after :meth:`use_int8`, the compiled one
        where the kernels run the parameters' dtype and device, else the reference stream."""
        check_batch_size(batch_size)
        if self.bidirectional:
            raise InputError(
                "LSTM.stream: a bidirectional LSTM needs the whole sequence; streaming is one direction only"
            )
        if self._int8 is not None:
            return self._int8.stream(self._stack_weights(), batch_size)
        return make_stream(self._stack_weights(), self._v, batch_size, compiled=self.requested_backend != "reference")

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
        if self.forget_bias is not None:
            s += f", forget_bias={self.forget_bias}"
        if getattr(self, "chrono_init", None) is not None:
            s += f", chrono_init={self.chrono_init:g}"
        for n in self._v.names():
            s += f", {n}={getattr(self, n)}"
        if self.requested_backend != "auto":
            s += f", backend={self.requested_backend!r}"
        return s
