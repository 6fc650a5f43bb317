"""Run an exported lstmkit model with NumPy alone: whole sequences and one step at a time.

(About 660 lines: the runtime is meant to be copied to a device as a folder, so the model, its
bundle reader's checks and the streaming step stay together in one module.)

The same equations as :mod:`lstmkit.core.functional` (gate order i, f, g, o; state (h, c)) with
every variant of the core in evaluation mode (peephole, layer norm, coupled, zoneout's expectation,
projection), stacked layers, both directions for whole sequences, and the task head of
:class:`lstmkit.models.SequenceModel`. Weights are float32, or int8 / int4 codes with one float32
scale per output row that stay quantized in memory for ``run``: ``x Wᵀ = (x qᵀ) · s``. A stream
prepares its own float32 layout once per model (quantized weights dequantized) so that a step is a
single product and a few in-place ufuncs; see :class:`Stream`.

    import lstmkit.runtime as rt
    model = rt.load("mystery.rt")
    y = model.run(x)                       # x (B, T) ids or (B, T, I) floats -> like the torch model
    stream = model.stream(batch_size=1)
    y_t = stream.step(x_t)                 # x_t (B,) ids or (B, I) floats; the head at this step
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..targets import LAST_TARGETS, STEP_TARGETS
from .bundle import BundleError, read_bundle
from .quant import unpack_int4

LN_EPS = 1e-5


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # exact identity, no overflow for large |x|


def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + LN_EPS) * g + b


class Matrix:
    """A weight W (R, C): float32, or int8 codes q with row scales s (int4 codes unpacked to int8)."""

    def __init__(self, w: np.ndarray | None = None, q: np.ndarray | None = None, s: np.ndarray | None = None) -> None:
        self.w, self.q, self.s = w, q, s
        self._qf: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        a = self.w if self.w is not None else self.q
        assert a is not None
        return tuple(a.shape)

    @property
    def quantized(self) -> bool:
        return self.q is not None

    def matmul_t(self, x: np.ndarray) -> np.ndarray:
        """x (…, C) -> x Wᵀ (…, R)."""
        if self.w is not None:
            return x @ self.w.T
        assert self.q is not None and self.s is not None
        if self._qf is not None:
            return (x @ self._qf.T) * self.s
        return (x @ self.q.T.astype(np.float32)) * self.s

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """W[idx] (an embedding lookup)."""
        if self.w is not None:
            return self.w[idx]
        assert self.q is not None and self.s is not None
        return self.q[idx].astype(np.float32) * self.s[idx][..., None]

    def cache_codes_as_float(self) -> None:
        """Keep the codes as float32 (4× the memory of int8; faster products with NumPy's BLAS)."""
        if self.q is not None:
            self._qf = self.q.astype(np.float32)

    def dense(self) -> np.ndarray:
        if self.w is not None:
            return self.w
        assert self.q is not None and self.s is not None
        return self.q.astype(np.float32) * self.s[:, None]


@dataclass
class _Dir:
    """One layer, one direction."""

    w_ih: Matrix
    w_hh: Matrix
    b_ih: np.ndarray | None
    b_hh: np.ndarray | None
    w_hr: Matrix | None
    peep: np.ndarray | None  # (3, H) p_i, p_f, p_o
    ln: tuple[np.ndarray, ...] | None  # γ_ih, β_ih, γ_hh, β_hh, γ_c, β_c


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise BundleError(msg)


class Model:
    """An exported model; see the module docstring. ``load`` makes one from a bundle folder."""

    def __init__(self, manifest: dict[str, Any], arrays: dict[str, np.ndarray], where: str = "bundle") -> None:
        m = manifest["model"]
        self.where = where
        self.meta = m
        try:
            self.input_type: str = m["input_type"]
            self.input_size = int(m["input_size"])
            self.core_input_size = int(m["core_input_size"])
            self.hidden_size = H = int(m["hidden_size"])
            self.num_layers = int(m["num_layers"])
            self.bidirectional = bool(m["bidirectional"])
            self.proj_size = P = int(m["proj_size"])
            self.bias = bool(m["bias"])
            self.peephole = bool(m["peephole"])
            self.layer_norm = bool(m["layer_norm"])
            self.coupled = bool(m["coupled"])
            self.zoneout_c = float(m["zoneout_c"])
            self.zoneout_h = float(m["zoneout_h"])
            self.target: str | None = m["target"]
            self.output_size: int | None = None if m["output_size"] is None else int(m["output_size"])
            self.batch_first = bool(m["batch_first"])
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{where}: manifest field 'model' is incomplete or wrong ({e!s})") from None
        _need(self.input_type in ("tokens", "vector"), f"{where}: model input_type must be 'tokens' or 'vector'")
        _need(self.target is None or self.target in LAST_TARGETS + STEP_TARGETS, f"{where}: unknown target")
        _need(min(self.input_size, self.core_input_size, H, self.num_layers) >= 1, f"{where}: sizes must be >= 1")
        self.vocab: list[str] | None = manifest.get("vocab")
        self.normaliser: dict[str, Any] | None = manifest.get("normaliser")
        quant = manifest.get("quantized", {})
        used: set[str] = set()

        def arr(name: str, shape: tuple[int, ...]) -> np.ndarray:
            _need(name in arrays, f"{where}: tensor {name!r} is missing")
            a = arrays[name]
            _need(a.dtype == np.float32, f"{where}: tensor {name!r} must be float32, got {a.dtype}")
            _need(tuple(a.shape) == shape, f"{where}: tensor {name!r} has shape {tuple(a.shape)}, expected {shape}")
            used.add(name)
            return a

        def mat(name: str, shape: tuple[int, int]) -> Matrix:
            if name not in quant:
                return Matrix(w=arr(name, shape))
            qi = quant[name]
            _need(isinstance(qi, dict) and qi.get("bits") in (8, 4), f"{where}: quantized {name!r} needs bits 8 or 4")
            codes, scale = f"{name}.q", f"{name}.scale"
            _need(codes in arrays, f"{where}: tensor {codes!r} is missing")
            s = arr(scale, (shape[0],))
            q = arrays[codes]
            used.add(codes)
            if qi["bits"] == 8:
                _need(
                    q.dtype == np.int8 and tuple(q.shape) == shape, f"{where}: {codes!r} must be int8 of shape {shape}"
                )
            else:
                want = (shape[0], (shape[1] + 1) // 2)
                _need(q.dtype == np.uint8 and tuple(q.shape) == want, f"{where}: {codes!r} must be uint8 {want}")
                q = unpack_int4(q, shape[1])
            return Matrix(q=q, s=s)

        D = 2 if self.bidirectional else 1
        real_h = P if P > 0 else H
        self.embedding = (
            mat("embedding.weight", (self.input_size, self.core_input_size)) if (self.input_type == "tokens") else None
        )
        self.layers: list[list[_Dir]] = []
        for k in range(self.num_layers):
            layer_in = self.core_input_size if k == 0 else real_h * D
            dirs = []
            for d in range(D):
                sfx = f"_l{k}" + ("_reverse" if d else "")
                dirs.append(
                    _Dir(
                        w_ih=mat(f"rnn.weight_ih{sfx}", (4 * H, layer_in)),
                        w_hh=mat(f"rnn.weight_hh{sfx}", (4 * H, real_h)),
                        b_ih=arr(f"rnn.bias_ih{sfx}", (4 * H,)) if self.bias else None,
                        b_hh=arr(f"rnn.bias_hh{sfx}", (4 * H,)) if self.bias else None,
                        w_hr=mat(f"rnn.weight_hr{sfx}", (P, H)) if P > 0 else None,
                        peep=arr(f"rnn.weight_peephole{sfx}", (3, H)) if self.peephole else None,
                        ln=tuple(
                            arr(f"rnn.layer_norm_{part}_{kind}{sfx}", (4 * H,) if part != "c" else (H,))
                            for part in ("ih", "hh", "c")
                            for kind in ("weight", "bias")
                        )
                        if self.layer_norm
                        else None,
                    )
                )
            self.layers.append(dirs)
        self.head: Matrix | None = None
        self.head_bias: np.ndarray | None = None
        if self.target is not None:
            _need(self.output_size is not None, f"{where}: a model with a head needs output_size")
            assert self.output_size is not None
            self.head = mat("head.weight", (self.output_size, real_h * D))
            self.head_bias = arr("head.bias", (self.output_size,))
        self._prepared: list[_StepWeights] | None = None
        unused = sorted(set(arrays) - used)
        if unused:
            raise BundleError(f"{where}: tensor {unused[0]!r} is not part of this model; the bundle is inconsistent")

    # ------------------------------------------------------------------ facts
    @property
    def quantized(self) -> bool:
        mats = [d.w_ih for lay in self.layers for d in lay]
        return any(m.quantized for m in mats)

    def cache_codes_as_float(self) -> None:
        """Trade memory for speed: keep quantized codes as float32 for NumPy's BLAS."""
        for lay in self.layers:
            for d in lay:
                for m in (d.w_ih, d.w_hh, d.w_hr):
                    if m is not None:
                        m.cache_codes_as_float()
        if self.head is not None:
            self.head.cache_codes_as_float()

    @property
    def state_size(self) -> tuple[int, int]:
        return (self.proj_size or self.hidden_size), self.hidden_size

    # ------------------------------------------------------------------ pieces
    def _features(self, x: np.ndarray) -> np.ndarray:
        """(B, T) ids -> (B, T, E) or (B, T, I) floats checked."""
        if self.embedding is not None:
            self._check_ids(x)
            return self.embedding.rows(x)
        x = np.asarray(x, dtype=np.float32)
        if x.shape[-1] != self.core_input_size:
            raise InputError(f"runtime: expected {self.core_input_size} input features, got {x.shape[-1]}")
        return x

    def _check_ids(self, x: np.ndarray) -> None:
        if x.dtype.kind not in "iu":
            raise InputError(f"runtime: token input must be integer ids, got {x.dtype}")
        if x.size and (x.min() < 0 or x.max() >= self.input_size):
            raise InputError(f"runtime: token ids must be in [0, {self.input_size}), got {x.min()}..{x.max()}")

    def _project_input(self, x: np.ndarray, w: _Dir) -> np.ndarray:
        xw = w.w_ih.matmul_t(x)
        if w.ln is not None:
            xw = _layer_norm(xw, w.ln[0], w.ln[1])
        if w.b_ih is not None:
            xw = xw + w.b_ih
        return xw

    def _cell(self, xw: np.ndarray, h: np.ndarray, c: np.ndarray, w: _Dir) -> tuple[np.ndarray, np.ndarray]:
        H = self.hidden_size
        hw = w.w_hh.matmul_t(h)
        if w.ln is not None:
            hw = _layer_norm(hw, w.ln[2], w.ln[3])
        a = xw + hw
        if w.b_hh is not None:
            a = a + w.b_hh
        a_i, a_f, a_g, a_o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
        if w.peep is not None:
            a_i = a_i + w.peep[0] * c
            a_f = a_f + w.peep[1] * c
        i = _sigmoid(a_i)
        f = 1.0 - i if self.coupled else _sigmoid(a_f)
        c_new = f * c + i * np.tanh(a_g)
        if w.peep is not None:
            a_o = a_o + w.peep[2] * c_new
        o = _sigmoid(a_o)
        h_new = o * np.tanh(_layer_norm(c_new, w.ln[4], w.ln[5]) if w.ln is not None else c_new)
        if w.w_hr is not None:
            h_new = w.w_hr.matmul_t(h_new)
        if self.zoneout_c > 0:
            c_new = self.zoneout_c * c + (1.0 - self.zoneout_c) * c_new
        if self.zoneout_h > 0:
            h_new = self.zoneout_h * h + (1.0 - self.zoneout_h) * h_new
        return h_new.astype(np.float32, copy=False), c_new.astype(np.float32, copy=False)

    def _head(self, feat: np.ndarray) -> np.ndarray:
        assert self.head is not None and self.head_bias is not None
        return self.head.matmul_t(feat) + self.head_bias

    def zero_state(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        n = self.num_layers * (2 if self.bidirectional else 1)
        hs, cs = self.state_size
        return np.zeros((n, batch_size, hs), np.float32), np.zeros((n, batch_size, cs), np.float32)

    # ------------------------------------------------------------------ whole sequences
    def run(
        self,
        x: Any,
        state: tuple[np.ndarray, np.ndarray] | None = None,
        lengths: Any = None,
        return_state: bool = False,
    ) -> Any:
        """The whole sequence, as the torch model's forward.

        With a head: x (B, T) ids or (B, T, I) floats (or unbatched (T,) / (T, I)) -> (B, O) for
        ``*_last`` targets (at step ``lengths − 1`` when lengths are given) or (B, T, O) per step.
        A bare LSTM returns its output (B, T, D·H) with batch_first, else (T, B, D·H) from (T, B, I).
        state: (h0, c0) each (L·D, B, ·); ``return_state`` also returns (h_n, c_n).
        """
        x = np.asarray(x)
        unbatched = x.ndim == (1 if self.input_type == "tokens" else 2)
        if unbatched:
            x = x[None] if self.batch_first or self.target is not None else x[:, None]
        z = self._features(x)
        if self.target is None and not self.batch_first:
            z = np.swapaxes(z, 0, 1)  # (T, B, I) -> (B, T, I)
        if z.ndim != 3:
            raise InputError(f"runtime: expected a batch of sequences, got input of shape {x.shape}")
        B, T = z.shape[0], z.shape[1]
        lens = None
        if lengths is not None:
            lens = np.asarray(lengths, dtype=np.int64).reshape(-1)
            if lens.shape[0] != B or (B and (lens.min() < 1 or lens.max() > T)):
                raise InputError(f"runtime: lengths must be {B} values in [1, {T}]")
            if self.bidirectional:
                raise InputError("runtime: lengths with a bidirectional model are not supported; pad-free input only")
        h0, c0 = state if state is not None else self.zero_state(B)
        h0 = np.asarray(h0, np.float32)
        c0 = np.asarray(c0, np.float32)
        D = 2 if self.bidirectional else 1
        hs, cs = self.state_size
        if h0.shape != (self.num_layers * D, B, hs) or c0.shape != (self.num_layers * D, B, cs):
            raise InputError(
                f"runtime: state shapes must be {(self.num_layers * D, B, hs)} and "
                f"{(self.num_layers * D, B, cs)}, got {h0.shape} and {c0.shape}"
            )
        seq = np.ascontiguousarray(np.swapaxes(z, 0, 1), dtype=np.float32)  # (T, B, I)
        h_n, c_n = [], []
        for k, dirs in enumerate(self.layers):
            outs = []
            for d, w in enumerate(dirs):
                inp = seq[::-1] if d == 1 else seq
                xw = self._project_input(inp, w)  # (T, B, 4H) in one product
                h, c = h0[k * D + d], c0[k * D + d]
                ys = np.zeros((T, B, hs), np.float32)
                for t in range(T):
                    h_new, c_new = self._cell(xw[t], h, c, w)
                    if lens is not None:
                        v = (t < lens)[:, None]
                        h, c = np.where(v, h_new, h), np.where(v, c_new, c)
                        ys[t] = np.where(v, h_new, 0.0)
                    else:
                        h, c = h_new, c_new
                        ys[t] = h
                outs.append(ys[::-1] if d == 1 else ys)
                h_n.append(h)
                c_n.append(c)
            seq = np.concatenate(outs, axis=-1) if D == 2 else outs[0]
        out = np.swapaxes(seq, 0, 1)  # (B, T, D·H)
        if self.target is None:
            y = out if self.batch_first else seq
        elif self.target in STEP_TARGETS:
            y = self._head(out)
        else:
            last = out[:, -1] if lens is None else out[np.arange(B), lens - 1]
            y = self._head(last)
        if unbatched:
            y = y[0] if self.batch_first or self.target is not None else y[:, 0]
        if return_state:
            return y, (np.stack(h_n), np.stack(c_n))
        return y

    def _step_weights(self) -> list[_StepWeights]:
        """The layers' weights in the streaming layout, prepared at the first stream and kept."""
        if self._prepared is None:
            self._prepared = [_prepare(dirs[0], self.hidden_size) for dirs in self.layers]
        return self._prepared

    def stream(self, batch_size: int = 1) -> Stream:
        if self.bidirectional:
            raise InputError("runtime: a bidirectional model needs the whole sequence; use run(x), not stream()")
        return Stream(self, batch_size)


# Internal gate layout of a stream: the columns reordered so the sigmoid gates sit side by side and
# halved, so one tanh gives σ(z) = 0.5·tanh(z/2) + 0.5 for them and tanh(z) for g. With peepholes o
# needs c_t before its tanh, so it goes last. Values are the blocks of torch's order i, f, g, o.
_ORDER_PLAIN = (0, 1, 3, 2)  # i, f, o, g
_ORDER_PEEPHOLE = (0, 1, 2, 3)  # i, f, g, o
# Constants as 0-d float32 arrays: a ufunc takes them faster than Python floats, with the same result.
_HALF = np.array(0.5, np.float32)
_ONE = np.array(1.0, np.float32)
_EPS = np.array(LN_EPS, np.float32)


@dataclass
class _StepWeights:
    """One layer's weights, prepared once per model for streaming (float32, C-contiguous).

    Without layer norm: ``w`` = [W_ihᵀ; W_hhᵀ; b_ih + b_hh] (I+P+1, 4H), used as [x_t | h | 1] @ w.
    With layer norm the two products stay apart: ``w`` = W_ihᵀ (I, 4H), ``w_hh`` = W_hhᵀ (P, 4H),
    and the norms' γ halved in ``ln_g`` (γ_ih, γ_hh), every additive constant summed in ``ln_b``.
    Vectors are kept as rows (1, N): NumPy broadcasts (1, N) against (B, N) faster than (N,).
    """

    order: tuple[int, ...]
    w: np.ndarray
    w_hh: np.ndarray | None
    ln_g: tuple[np.ndarray, np.ndarray] | None  # (1, 4H) each
    ln_b: np.ndarray | None  # (1, 4H)
    ln_c: tuple[np.ndarray, np.ndarray] | None  # γ_c, β_c (1, H)
    peep_if: np.ndarray | None  # (1, 2, H) p_i, p_f halved
    peep_o: np.ndarray | None  # (1, H) p_o halved
    w_hr: np.ndarray | None  # W_hrᵀ (H, P)


def _prepare(w: _Dir, H: int) -> _StepWeights:
    """Reorder, halve and concatenate one layer's weights (quantized ones dequantized, once)."""
    order = _ORDER_PEEPHOLE if w.peep is not None else _ORDER_PLAIN
    cols = np.concatenate([np.arange(b * H, (b + 1) * H) for b in order])
    scale = np.concatenate([np.full(H, 1.0 if b == 2 else 0.5, np.float32) for b in order])  # exact: 2⁻¹
    w_ih, w_hh = w.w_ih.dense()[cols].T, w.w_hh.dense()[cols].T  # (I, 4H), (P, 4H)
    bias = np.zeros(4 * H, np.float32)
    for b in (w.b_ih, w.b_hh):
        if b is not None:
            bias += b
    ln_g = ln_b = ln_c = None
    if w.ln is None:
        cat = np.concatenate([w_ih * scale, w_hh * scale, (bias[cols] * scale)[None]])
        w_cat, w_rec = np.ascontiguousarray(cat, np.float32), None
    else:  # a norm ignores the scale of its input: halve γ and β instead of the weights
        w_cat, w_rec = np.ascontiguousarray(w_ih, np.float32), np.ascontiguousarray(w_hh, np.float32)
        ln_g = ((w.ln[0][cols] * scale)[None], (w.ln[2][cols] * scale)[None])
        ln_b = ((w.ln[1] + w.ln[3] + bias)[cols] * scale)[None]
        ln_c = (w.ln[4][None], w.ln[5][None])
    return _StepWeights(
        order=order,
        w=w_cat,
        w_hh=w_rec,
        ln_g=ln_g,
        ln_b=ln_b,
        ln_c=ln_c,
        peep_if=None if w.peep is None else (w.peep[None, :2] * np.float32(0.5)),
        peep_o=None if w.peep is None else (w.peep[None, 2] * np.float32(0.5)),
        w_hr=None if w.w_hr is None else np.ascontiguousarray(w.w_hr.dense().T),
    )


def _norm_(a: np.ndarray, n: np.ndarray, mu: np.ndarray, sq: np.ndarray) -> None:
    """a (B, N) <- (a − mean) / √(var + ε) in place; n is N as a 0-d float32 array, mu (B, 1) and
    sq (B, N) are scratch. ``np.mean`` is this sum and division, behind several µs of Python."""
    np.add.reduce(a, axis=-1, keepdims=True, out=mu)
    np.divide(mu, n, out=mu)
    np.subtract(a, mu, out=a)
    np.multiply(a, a, out=sq)
    np.add.reduce(sq, axis=-1, keepdims=True, out=mu)
    np.divide(mu, n, out=mu)
    np.add(mu, _EPS, out=mu)
    np.sqrt(mu, out=mu)
    np.divide(a, mu, out=a)


class _StepLayer:
    """One layer of a stream: its buffers, and a step that allocates nothing.

    ``xh`` (B, I+P+1) holds [x_t | h | 1]: h lives there between steps, so the recurrent input
    needs no copy, and the 1 carries the bias through the product.
    """

    def __init__(self, sw: _StepWeights, c: np.ndarray, layer_in: int, m: Model) -> None:
        B, H, P = c.shape[0], m.hidden_size, m.proj_size
        zc, zh = m.zoneout_c, m.zoneout_h
        hs = P or H
        self.sw = sw
        self.c = c  # (B, H), a view of the stream's cell state
        self.xh = np.zeros((B, layer_in + hs + 1), np.float32)
        self.xh[:, -1] = 1.0
        self.x_in = self.xh[:, :layer_in]
        self.h = self.xh[:, layer_in : layer_in + hs]
        self.h1 = self.xh[:, layer_in:]  # [h | 1], the head's input
        self.gates = g = np.empty((B, 4 * H), np.float32)
        blk = {b: g[:, j * H : (j + 1) * H] for j, b in enumerate(sw.order)}
        self.i, self.f, self.g, self.o = blk[0], blk[1], blk[2], blk[3]
        peep = sw.peep_if is not None
        self.sig = g[:, : 2 * H] if peep else g[:, : 3 * H]  # the sigmoid gates before o's c_t is known
        self.first_tanh = g[:, : 3 * H] if peep else g  # all of them but o, with peepholes
        self.if_ = g[:, : 2 * H].reshape(B, 2, H)
        self.tmp_if = np.empty((B, 2, H), np.float32)
        self.tmp = np.empty((B, H), np.float32)
        self.c_new = np.empty((B, H), np.float32) if zc > 0 else c  # zoneout needs c_{t-1} after c_t
        self.zc, self.zh, self.coupled = zc, zh, m.coupled
        self.zoneout = tuple(np.array(v, np.float32) for v in (zc, 1.0 - zc, zh, 1.0 - zh))
        self.c3 = c[:, None, :]  # (B, 1, H) against the (1, 2, H) peepholes of i and f
        self.h_new = np.empty((B, H), np.float32) if (P or zh > 0) else self.h
        self.h_proj = np.empty((B, P), np.float32) if (P and zh > 0) else self.h
        if sw.w_hh is not None:
            self.gates_hh = np.empty((B, 4 * H), np.float32)
            self.sq = np.empty((B, 4 * H), np.float32)
            self.mu = np.empty((B, 1), np.float32)
            self.n_gates, self.n_cell = np.array(4 * H, np.float32), np.array(H, np.float32)

    def step(self) -> None:
        """x_in and h hold x_t and h_{t-1}; afterwards h and c hold h_t and c_t."""
        sw, g, c, tmp = self.sw, self.gates, self.c, self.tmp
        mul, add, tanh = np.multiply, np.add, np.tanh
        if sw.w_hh is None:
            np.dot(self.xh, sw.w, out=g)  # (B, 4H), biases included
        else:
            assert sw.ln_g is not None and sw.ln_b is not None
            gh, mu, sq = self.gates_hh, self.mu, self.sq
            np.matmul(self.x_in, sw.w, out=g)
            _norm_(g, self.n_gates, mu, sq)
            mul(g, sw.ln_g[0], out=g)
            np.matmul(self.h, sw.w_hh, out=gh)
            _norm_(gh, self.n_gates, mu, sq)
            mul(gh, sw.ln_g[1], out=gh)
            add(g, gh, out=g)
            add(g, sw.ln_b, out=g)
        if sw.peep_if is not None:
            mul(self.c3, sw.peep_if, out=self.tmp_if)
            add(self.if_, self.tmp_if, out=self.if_)
        tanh(self.first_tanh, out=self.first_tanh)
        sig, i, f, o = self.sig, self.i, self.f, self.o
        mul(sig, _HALF, out=sig)
        add(sig, _HALF, out=sig)
        if self.coupled:
            np.subtract(_ONE, i, out=f)
        c_new = self.c_new
        mul(f, c, out=c_new)
        mul(i, self.g, out=i)
        add(c_new, i, out=c_new)  # c_t = f ⊙ c_{t-1} + i ⊙ g
        if sw.peep_o is not None:
            mul(c_new, sw.peep_o, out=tmp)
            add(o, tmp, out=o)
            tanh(o, out=o)
            mul(o, _HALF, out=o)
            add(o, _HALF, out=o)
        if sw.ln_c is not None:
            np.copyto(tmp, c_new)
            _norm_(tmp, self.n_cell, self.mu, self.sq[:, : tmp.shape[1]])
            mul(tmp, sw.ln_c[0], out=tmp)
            add(tmp, sw.ln_c[1], out=tmp)
            tanh(tmp, out=tmp)
        else:
            tanh(c_new, out=tmp)
        h_new = self.h_new
        mul(o, tmp, out=h_new)  # h_t = o ⊙ tanh(c_t)
        if sw.w_hr is not None:
            np.matmul(h_new, sw.w_hr, out=self.h_proj)
            h_new = self.h_proj
        if self.zh > 0:  # zoneout's expectation in evaluation: a fixed mix of old and new
            h = self.h
            mul(h, self.zoneout[2], out=h)
            mul(h_new, self.zoneout[3], out=h_new)
            add(h, h_new, out=h)
        if self.zc > 0:
            mul(c, self.zoneout[0], out=c)
            mul(c_new, self.zoneout[1], out=c_new)
            add(c, c_new, out=c)


class Stream:
    """One step per call with the state carried: ``y_t = stream.step(x_t)``.

    x_t: (B,) ids or (B, I) floats (or a single id / (I,) for batch size 1). Returns the head at
    this step (logits / prediction as if the sequence ended here), or h_t of the top layer for a
    bare LSTM; a new array each call.

    A step allocates (almost) nothing: the weights are prepared once per model in their own layout
    (gates reordered, the input and recurrent products and the biases in one matrix) and each
    stream keeps its buffers. Quantized weights are dequantized to float32 for this, once: int8 and
    int4 make the bundle small on disk, not the step fast (NumPy has no faster integer product), and
    the prepared weights take the memory of a float32 model.
    """

    def __init__(self, model: Model, batch_size: int) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"runtime: batch_size must be a positive int, got {batch_size!r}")
        self.model = model
        self.batch_size = batch_size
        m = model
        H, P = m.hidden_size, m.proj_size
        self._c = np.zeros((m.num_layers, batch_size, H), np.float32)
        self._layers: list[_StepLayer] = []
        for k, sw in enumerate(m._step_weights()):
            layer_in = m.core_input_size if k == 0 else (P or H)
            self._layers.append(_StepLayer(sw, self._c[k], layer_in, m))
        self._head: np.ndarray | None = None
        if m.head is not None:
            assert m.head_bias is not None
            self._head = np.ascontiguousarray(np.concatenate([m.head.dense().T, m.head_bias[None]]), np.float32)
        self._emb: tuple[np.ndarray, np.ndarray | None] | None = None  # (W,) or (q, s (V, 1))
        if m.embedding is not None:
            e = m.embedding
            if e.w is not None:
                self._emb = (e.w, None)
            else:
                assert e.q is not None and e.s is not None
                self._emb = (e.q, e.s[:, None])

    @property
    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """A copy of (h, c): (L, B, P or H) and (L, B, H)."""
        return np.stack([lay.h for lay in self._layers]), self._c.copy()

    def reset(self) -> None:
        self._c[...] = 0.0
        for lay in self._layers:
            lay.h[...] = 0.0

    def step(self, x_t: Any) -> np.ndarray:
        x = np.asarray(x_t)
        layers = self._layers
        first = layers[0]
        if self._emb is not None:
            unbatched = x.ndim == 0
            if unbatched:
                x = x[None]
            if x.ndim != 1 or x.shape[0] != self.batch_size:
                raise InputError(f"runtime: the stream has batch size {self.batch_size}, got ids of shape {x.shape}")
            self.model._check_ids(x)
            w, s = self._emb
            if s is None:
                first.x_in[...] = w[x]
            else:  # int8 codes · row scale, as Matrix.rows
                np.multiply(w[x], s[x], out=first.x_in)
        else:
            unbatched = x.ndim == 1
            if unbatched:
                x = x[None]
            if x.ndim != 2 or x.shape[0] != self.batch_size:
                raise InputError(
                    f"runtime: the stream has batch size {self.batch_size}, got x_t of shape {np.shape(x_t)}; "
                    "expected (B, I) or (I,)"
                )
            if x.shape[1] != first.x_in.shape[1]:
                raise InputError(f"runtime: expected {first.x_in.shape[1]} input features, got {x.shape[1]}")
            first.x_in[...] = x
        prev = None
        for lay in layers:
            if prev is not None:
                np.copyto(lay.x_in, prev.h)
            lay.step()
            prev = lay
        top = layers[-1]
        y = top.h.copy() if self._head is None else np.dot(top.h1, self._head)
        return y[0] if unbatched else y


def load(path: str | Path, *, fast: bool = False) -> Model:
    """Load a runtime bundle folder (``lstmkit export RUN --format runtime --out DIR``).

    ``fast=True`` keeps int8/int4 codes as float32 in memory (4× an int8 model's weight memory, faster
    products); the file on disk and the results are the same.
    """
    man, arrays = read_bundle(path)
    model = Model(man, arrays, where=str(Path(path) / "manifest.json"))
    if fast:
        model.cache_codes_as_float()
    return model


__all__ = ["Matrix", "Model", "Stream", "load"]
