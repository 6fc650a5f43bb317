"""Fused compiled CPU kernels of the LSTM layer, and the streaming step.

The core calls this package through these names (nothing is compiled at import; ``make setup`` builds
the extension in advance with ``python -m lstmkit.kernels build``, else the first call of
:func:`available` builds it, ~1 min, with a line saying why; it is cached under ``~/.cache/lstmkit``):

    available() / unavailable_reason()    can the kernels run here, and if not, why (they cover every
                                          configuration in float32 and float64 on CPU)
    fused_layer(...)                      one layer, one direction, forward in time, differentiable
    FusedStream                           the one-step-per-call streaming step
    Int8Stream                            the int8 step (streaming and whole sequences, inference)

Design (as in haste / cuDNN): the input projection of all steps is one large GEMM (for float32 the
kernels' own register-blocked GEMM, faster than MKL on these skinny shapes; ATen otherwise); the
recurrent product of every step is the kernel's own register-blocked micro-kernel (AVX-512 with 16
float lanes where the CPU has it, AVX2/FMA with 8 otherwise; ``LSTMKIT_KERNEL_SIMD=avx2`` builds
the AVX2 code on an AVX-512 CPU) on W_hh packed once per call (kept hot in cache across steps),
followed in the same time loop by one vectorised pointwise pass, inside a single OpenMP region for
the whole sequence. The threads split either the batch rows (plain cell without projection or layer
norm, from 4 rows per thread, and with AVX-512 only while W_hh fits in a core's L2: no barrier at
all) or the hidden units (one barrier per step). The input projection moves into the time loop,
step by step, when it pays (measured rules in choose_proj_in_loop, lstm_tuning.h: with the row
split while [W_ih | W_hh] takes <= 3/4 of a core's L2; with AVX-512 also the unit split from 32
rows). The streaming step reads its weight blocks in alternating order from call to call, so the
blocks a thread read last are still cached when weights outgrow its L2. The backward pass runs the
pointwise backward and the recurrent product per step the same way, then dx (the own GEMM again)
and the weight gradients of all steps, db summed by the time loop. For small float32 layers
(train-small) dW_ih = da^T x and dW_hh = da^T h_{t-1} are the kernels' own GEMM, reading x and h
in place and da from a panel-layout copy that the row-split time loop streams out as it goes (with
the unit split or layer norm the GEMM packs da's rows itself); larger layers and float64 use ATen
(MKL): [x | h]^T @ da as one GEMM (two with layer norm). The layer is a C++ autograd node (no
Python runs in its backward).
In float32 the plain time loops use a rational sigmoid/tanh (max abs error 4.4e-7, about half the
work of the exp-based ones, which layer norm keeps). See lstm_loops.h for the buffer layouts,
and lstm_bindings.cpp for where each part of the C++ lives.
When other processes keep the cores busy, multi-threaded calls fall back to one thread
(:func:`contention_events`).

Extra names: :func:`build_info`, :func:`contention_events`,
:func:`release_buffers` / :func:`buffer_bytes` (the large working buffers the kernels keep between
calls, so that a training loop does not fault in fresh pages every step).

Equations (gate order i, f, g, o; R = P with a projection, else H):
    a = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh
    layer_norm: a = LN(x_t W_ih^T; g_ih, b_ih') + LN(h_{t-1} W_hh^T; g_hh, b_hh') + b_ih + b_hh
                (LN over the 4H vector, eps 1e-5) and h~ = o * tanh(LN(c~; g_c, b_c)) (LN over H)
    peephole: a_i += p_i * c_{t-1};  a_f += p_f * c_{t-1};  a_o += p_o * c~_t
    i = σ(a_i);  f = σ(a_f) (coupled: f = 1 - i);  g = tanh(a_g);  o = σ(a_o)
    c~_t = f * c_{t-1} + i * g;      h~_t = o * tanh(c~_t)  [@ W_hr^T with a projection]
    zoneout masks m (1 = keep): c_t = m_c c_{t-1} + (1 - m_c) c~_t;  h_t = m_h h_{t-1} + (1 - m_h) h~_t
    lengths: past the end of sequence b its state is carried, y and the trace are 0.
"""

from __future__ import annotations

from typing import Any

import torch

from . import _build

__all__ = [
    "available",
    "unavailable_reason",
    "fused_layer",
    "FusedStream",
    "Int8Stream",
    "build_info",
    "contention_events",
    "release_buffers",
    "buffer_bytes",
]


def available() -> bool:
    """True if the fused kernels are built (building them on first call) and usable here. Never raises."""
    try:
        return _build.load() is not None
    except Exception:  # pragma: no cover - load() already catches; belt and braces
        return False


def unavailable_reason() -> str | None:
    """One line saying why :func:`available` is False (None when it is True or was not asked yet)."""
    return _build.reason()


def _loaded() -> Any:
    """The compiled module if a call already loaded (or tried to build) it, else None: the helpers
    below never trigger a build."""
    return _build.load() if _build._tried else None


def contention_events() -> int:
    """How often a multi-threaded kernel call fell back to one thread because other processes kept
    the cores busy (0 if the kernels were never loaded)."""
    m = _loaded()
    return 0 if m is None else int(m.contention_events())


def release_buffers() -> int:
    """Free the kernels' pooled working buffers that no live tensor holds any more; returns the bytes
    still pooled (buffers an output or a saved-for-backward tensor still uses). The kernels keep
    their large buffers (input projections, gates, gradients: T*B*4H floats each) between calls, up
    to 1 GiB, because fresh pages cost a fault each on first touch (~55,000 faults, tens of ms, per
    train-large step on the benchmark VM)."""
    m = _loaded()
    return 0 if m is None else int(m.release_buffers())


def buffer_bytes() -> int:
    """Bytes of working buffers the kernels hold between calls (see :func:`release_buffers`)."""
    m = _loaded()
    return 0 if m is None else int(m.buffer_bytes())


def build_info() -> str | None:
    """A short description of the compiled kernel (``avx2=1 avx512=1 vnni=1 openmp=1 lanes_f32=16``), or None."""
    m = _build.load()
    return None if m is None else str(m.build_info())


def _mod() -> Any:
    m = _build.load()
    if m is None:
        raise RuntimeError(f"lstmkit fused kernels are unavailable: {_build.reason()}")
    return m


_NO_LN: list[None] = [None] * 6


def fused_layer(
    x: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor | None,
    b_hh: torch.Tensor | None,
    *,
    w_hr: torch.Tensor | None = None,
    peephole: torch.Tensor | None = None,
    ln: tuple[torch.Tensor, ...] | None = None,
    coupled: bool = False,
    zoneout_c: torch.Tensor | None = None,
    zoneout_h: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    trace: bool = False,
    num_threads: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """One LSTM layer, one direction, forward in time; differentiable w.r.t. every tensor argument
    except the zoneout masks and lengths.

    Shapes (R = P with a projection, else H):
        x (T, B, I); h0 (B, R); c0 (B, H); w_ih (4H, I); w_hh (4H, R); b_ih, b_hh (4H,) or None;
        w_hr (P, H) or None; peephole (3, H) rows p_i, p_f, p_o, or None;
        ln = (g_ih, b_ih, g_hh, b_hh (4H each), g_c, b_c (H each)) layer-norm gains / shifts, or None;
        zoneout_c (T, B, H) / zoneout_h (T, B, R) keep-masks or None; lengths (B,) int64 CPU or None.
    Returns (y (T, B, R), h_T (B, R), c_T (B, H), trace) where trace is None, or with trace=True
    (gates (T, B, 4H) holding the activations i, f, g, o (f = 1 - i when coupled), c (T, B, H) the
    cell state after zoneout). The trace tensors are not differentiable; they are views of the
    kernel's buffers (c is shared with what backward uses: do not modify them in place).
    With ``coupled`` the f rows of w_ih / w_hh / biases are ignored (their gradient is 0).
    ``num_threads`` defaults to torch.get_num_threads() (n > 0: at most n threads, fewer for small
    problems; n < 0: exactly -n threads, for tests). With 2+ threads splitting the hidden units the
    kernel falls back to one thread when other processes keep the cores busy (see
    :func:`contention_events`); when they split the batch rows (plain cell, B >= 4 per thread) they
    never wait for each other inside the loop, so a descheduled thread only delays the call's end.
    No second derivatives: a backward with ``create_graph=True`` through this layer raises.
    """
    if x.dim() != 3 or x.shape[0] == 0:
        raise ValueError(f"fused_layer: x must be (T, B, I) with T >= 1, got shape {tuple(x.shape)}")
    if ln is not None and (len(ln) != 6 or any(t is None for t in ln)):
        raise ValueError(
            "fused_layer: ln must hold 6 tensors (g_ih, b_ih, g_hh, b_hh, g_c, b_c), "
            f"got {[type(t).__name__ for t in ln]}"
        )
    if zoneout_c is not None:  # masks, not differentiable (detached: a mask never joins the graph)
        zoneout_c = zoneout_c.detach().to(x.dtype)
    if zoneout_h is not None:
        zoneout_h = zoneout_h.detach().to(x.dtype)
    if lengths is not None:
        lengths = lengths.to(device="cpu", dtype=torch.int64)
    nt = torch.get_num_threads() if num_threads is None else int(num_threads)
    # a C++ autograd node (lstm_autograd.cpp, FusedLayerFn): its backward runs without Python; the
    # keywords are the names of the binding (lstm_bindings.cpp), the result a LayerOutputs
    out = _mod().fused_layer(
        x=x.contiguous(), h0=h0.contiguous(), c0=c0.contiguous(), w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh,
        w_hr=w_hr, peephole=peephole, ln=_NO_LN if ln is None else list(ln), zoneout_c=zoneout_c,
        zoneout_h=zoneout_h, lengths=lengths, coupled=bool(coupled), trace=bool(trace), num_threads=nt,
    )  # fmt: skip
    return out.y, out.h_T, out.c_T, (out.gates, out.c) if trace else None


class _CompiledStream:
    """What the compiled streams share: the checked step, reset and the state (``_impl`` is the C++
    object; subclasses set it, ``batch_size``, ``input_size``, ``num_layers`` and ``_dtype``)."""

    _impl: Any
    batch_size: int
    input_size: int
    num_layers: int
    _dtype: torch.dtype

    def step(self, x_t: torch.Tensor) -> torch.Tensor:
        """One step: x_t (B, I) or, for batch_size 1, (I,) -> h_t of the last layer (B, R) or (R,)."""
        try:
            return self._impl.step(x_t)  # type: ignore[no-any-return]
        except (RuntimeError, TypeError) as e:  # the C++ side checks; say it as the documented ValueError
            got = tuple(x_t.shape) if isinstance(x_t, torch.Tensor) else type(x_t).__name__
            one = f" or ({self.input_size},)" if self.batch_size == 1 else ""
            kind = str(self._dtype).replace("torch.", "")
            raise ValueError(
                f"LSTM.stream: expected x_t of shape ({self.batch_size}, {self.input_size}){one}, got {got}; x_t "
                f"must be a CPU {kind} tensor ({str(e).splitlines()[0]})"
            ) from None

    def reset(self) -> None:
        """Set h and c of every layer to zeros."""
        self._impl.reset()

    @property
    def state(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(h (L, B, R), c (L, B, H)): copies of the current state."""
        h, c = self._impl.get_state()
        return h, c

    def set_state(self, h: torch.Tensor, c: torch.Tensor) -> None:
        """Load a state (h (L, B, R), c (L, B, H)), e.g. the final state of a whole-sequence run."""
        self._impl.set_state(h.detach().to(self._dtype).contiguous(), c.detach().to(self._dtype).contiguous())


class FusedStream(_CompiledStream):
    """The streaming step of a stack of unidirectional layers: one time step per call, state carried.

    ``layers[k]`` holds 'w_ih', 'w_hh' and optionally 'b_ih', 'b_hh', 'w_hr', 'peephole' (3, H) and
    'ln' (the six layer-norm tensors: gain and shift of x W_ih^T, of h W_hh^T, of c), in torch's
    shapes; ``coupled`` and the zoneout rates (in evaluation: c = z_c c_{t-1} + (1 - z_c) c~, the
    same for h) apply to every layer. With layer norm the stream runs on one thread. The
    weights are packed once at construction into one concatenated [W_ih | W_hh] matrix per layer
    (a copy: later changes to the parameters are not seen; build a new stream). No autograd.

    ``step(x_t)`` takes (B, I) or, for batch_size 1, (I,) and returns a new tensor (B, R) or (R,):
    one small allocation per call, everything else is preallocated.
    """

    def __init__(
        self,
        layers: list[dict[str, Any]],
        batch_size: int,
        *,
        proj: bool,
        num_threads: int | None = None,
        coupled: bool = False,
        zoneout_c: float = 0.0,
        zoneout_h: float = 0.0,
    ) -> None:
        if not layers:
            raise ValueError("FusedStream: expected at least one layer, got none")
        m = _mod()
        with torch.no_grad():
            w_ih = [lay["w_ih"].detach().contiguous() for lay in layers]
            dtype = w_ih[0].dtype
            w_hh = [lay["w_hh"].detach().to(dtype).contiguous() for lay in layers]
            empty = torch.empty(0, dtype=dtype)
            bias = []
            for lay in layers:
                b_ih, b_hh = lay.get("b_ih"), lay.get("b_hh")
                if b_ih is None and b_hh is None:
                    bias.append(empty)
                else:
                    b = torch.zeros(w_ih[len(bias)].shape[0], dtype=dtype)
                    if b_ih is not None:
                        b = b + b_ih.detach().to(dtype)
                    if b_hh is not None:
                        b = b + b_hh.detach().to(dtype)
                    bias.append(b)
            w_hr = [
                lay["w_hr"].detach().to(dtype).contiguous() if proj and lay.get("w_hr") is not None else empty
                for lay in layers
            ]
            peep = [lay["peephole"].detach().to(dtype) if lay.get("peephole") is not None else empty for lay in layers]
            ln = [[t.detach().to(dtype) for t in lay["ln"]] if lay.get("ln") is not None else [] for lay in layers]
        nt = torch.get_num_threads() if num_threads is None else int(num_threads)
        self._impl = m.FusedStream(
            w_ih=w_ih, w_hh=w_hh, bias=bias, w_hr=w_hr, batch_size=int(batch_size), num_threads=nt, peephole=peep,
            ln=ln, coupled=bool(coupled), zoneout_c=float(zoneout_c), zoneout_h=float(zoneout_h),
        )  # fmt: skip
        self.batch_size = int(batch_size)
        self.input_size = int(w_ih[0].shape[1])
        self.num_layers = len(layers)
        self._dtype = dtype


class Int8Stream(_CompiledStream):
    """The int8 LSTM step of a stack of plain unidirectional layers (inference; no projection).

    ``layers[k]`` holds the codes of lstmkit.compress: 'q_ih' (4H, I) and 'q_hh' (4H, H) int8 in
    [-127, 127], their row scales 's_ih', 's_hh' (4H,) float32, and optionally 'bias' (4H,) =
    b_ih + b_hh. The inputs of the two products are coded on the fly to 7-bit codes in [-63, 63]
    (x_t: one step per row, max|x_t| / 63; h_{t-1} in (-1, 1): the fixed step 1/63; 7 bits let
    AVX2's vpmaddubsw take them without a sign fix-up, see lstm_int8.h); the products are exact in
    int32 and the gates, the cell and h stay float32.

    ``step(x_t)``: (B, I) or, for batch_size 1, (I,) float32 -> h_t of the last layer.
    ``sequence(x)``: (T, B, I) -> (T, B, H), carrying the state on from the current one.
    """

    backend = "int8"

    def __init__(self, layers: list[dict[str, torch.Tensor]], batch_size: int, *, num_threads: int | None = None):
        if not layers:
            raise ValueError("Int8Stream: expected at least one layer, got none")
        m = _mod()
        empty = torch.empty(0, dtype=torch.float32)
        q_ih = [lay["q_ih"].detach().to(torch.int8).contiguous() for lay in layers]
        q_hh = [lay["q_hh"].detach().to(torch.int8).contiguous() for lay in layers]
        s_ih = [lay["s_ih"].detach().float().contiguous() for lay in layers]
        s_hh = [lay["s_hh"].detach().float().contiguous() for lay in layers]
        bias = [lay["bias"].detach().float().contiguous() if lay.get("bias") is not None else empty for lay in layers]
        nt = torch.get_num_threads() if num_threads is None else int(num_threads)
        try:
            self._impl = m.Int8Stream(
                q_ih=q_ih, s_ih=s_ih, q_hh=q_hh, s_hh=s_hh, bias=bias, batch_size=int(batch_size), num_threads=nt
            )
        except RuntimeError as e:
            raise ValueError(f"Int8Stream: {str(e).splitlines()[0]}") from None
        self.batch_size = int(batch_size)
        self.input_size = int(q_ih[0].shape[1])
        self.num_layers = len(layers)
        self._dtype = torch.float32

    def sequence(self, x: torch.Tensor) -> torch.Tensor:
        """x (T, B, I) float32 -> the last layer's h of every step (T, B, H)."""
        return self._impl.sequence(x)  # type: ignore[no-any-return]
