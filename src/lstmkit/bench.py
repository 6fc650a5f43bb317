"""The speed benchmark: lstmkit's paths against torch.nn.LSTM and the GEMM ceiling.

Every number in one table comes from one run on one machine; ratios are medians over several
repetitions. ``speed`` columns are ``time(torch.nn.LSTM) / time(path)``: above 1 is faster.
The GEMM ceiling is the case's FLOPs as one large matmul, (T·B, I+H) @ (I+H, 4H), timed here,
times 3 for forward+backward.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .core import LSTM
from .errors import InputError
from .kernels import FusedStream

SHAPES: dict[str, tuple[int, int, int, int]] = {
    # name: (T, B, I, H), as in DESIGN.md
    "train-mid": (100, 32, 128, 256),
    "train-large": (100, 64, 256, 512),
    "train-small": (200, 8, 64, 128),
}
STREAM_SHAPES: dict[str, tuple[int, int]] = {"stream-small": (64, 128), "stream-large": (256, 512)}


@dataclass
class Row:
    case: str
    path: str
    ms: float
    vs_torch: float
    of_ceiling: float


def _median_time(fn: Callable[[], object], reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def _ceiling(T: int, B: int, I: int, H: int, reps: int) -> float:
    a = torch.randn(T * B, I + H)
    w = torch.randn(I + H, 4 * H)
    return _median_time(lambda: torch.mm(a, w), reps)


def bench_sequences(quick: bool = False, paths: tuple[str, ...] = ("auto", "fused", "reference")) -> list[Row]:
    """Forward (inference, no grad) and forward+backward for the training shapes."""
    reps = 3 if quick else 7
    rows: list[Row] = []
    for name, (T, B, I, H) in SHAPES.items():
        if quick:
            T = max(10, T // 5)
        ceil_fwd = _ceiling(T, B, I, H, reps)
        ref = nn.LSTM(I, H)
        x = torch.randn(T, B, I)
        xg = x.clone().requires_grad_(True)

        def fwd(m: nn.Module) -> Callable[[], object]:
            def run() -> object:
                with torch.no_grad():
                    return m(x)

            return run

        def fwdbwd(m: nn.Module) -> Callable[[], object]:
            def run() -> object:
                out, (h, c) = m(xg)
                out.sum().backward()
                return out

            return run

        base_f = _median_time(fwd(ref), reps)
        base_b = _median_time(fwdbwd(ref), reps)
        rows.append(Row(f"{name} infer", "torch.nn.LSTM", base_f * 1e3, 1.0, ceil_fwd / base_f))
        rows.append(Row(f"{name} train", "torch.nn.LSTM", base_b * 1e3, 1.0, 3 * ceil_fwd / base_b))
        mt = LSTM.from_torch(ref)

        def traced() -> object:
            with torch.no_grad():
                return mt(x, return_gates=True)

        tt = _median_time(traced, reps)
        rows.append(
            Row(f"{name} infer traced", f"lstmkit auto, gates ({mt.backend})", tt * 1e3, base_f / tt, ceil_fwd / tt)
        )
        for path in paths:
            m = LSTM.from_torch(ref, backend=path)  # type: ignore[arg-type]
            try:
                m(x[:2])
            except InputError as e:  # the path cannot run here (e.g. no compiler for the kernels)
                rows.append(Row(f"{name} {path}", f"lstmkit {path}: unavailable ({e})", float("nan"), 0, 0))
                continue
            if path == "reference" and not quick and name == "train-large":
                r = 2
            else:
                r = reps
            tf = _median_time(fwd(m), r)
            rows.append(Row(f"{name} infer", f"lstmkit {path} ({m.backend})", tf * 1e3, base_f / tf, ceil_fwd / tf))
            tb = _median_time(fwdbwd(m), r)
            rows.append(Row(f"{name} train", f"lstmkit {path} ({m.backend})", tb * 1e3, base_b / tb, 3 * ceil_fwd / tb))
    return rows


def bench_stream(quick: bool = False) -> list[Row]:
    """One step per call at batch 1: nn.LSTM stepped, nn.LSTMCell stepped, lstmkit's stream."""
    steps = 200 if quick else 1000
    rows: list[Row] = []
    for name, (I, H) in STREAM_SHAPES.items():
        ref = nn.LSTM(I, H).eval()
        cell = nn.LSTMCell(I, H).eval()
        xs = torch.randn(steps, 1, I)

        def run_lstm() -> None:
            hx = None
            with torch.no_grad():
                for t in range(steps):
                    _, hx = ref(xs[t : t + 1], hx)

        def run_cell() -> None:
            hx = None
            with torch.no_grad():
                for t in range(steps):
                    hx = cell(xs[t], hx)

        stream = LSTM.from_torch(ref).stream(1)

        def run_stream() -> None:
            for t in range(steps):
                stream.step(xs[t])

        reps = 3 if quick else 5
        t_lstm = _median_time(run_lstm, reps, 1) / steps
        t_cell = _median_time(run_cell, reps, 1) / steps
        t_stream = _median_time(run_stream, reps, 1) / steps
        rows.append(Row(f"{name} step", "torch.nn.LSTM stepped", t_lstm * 1e6, 1.0, 0.0))
        rows.append(Row(f"{name} step", "torch.nn.LSTMCell stepped", t_cell * 1e6, t_lstm / t_cell, 0.0))
        rows.append(
            Row(
                f"{name} step",
                f"lstmkit stream ({'fused' if isinstance(stream, FusedStream) else 'reference'})",
                t_stream * 1e6,
                t_lstm / t_stream,
                t_cell / t_stream,
            )
        )
    return rows


def format_rows(rows: list[Row], stream: bool = False) -> str:
    if stream:
        head = f"{'case':<20} {'path':<40} {'µs/step':>9} {'× nn.LSTM':>10} {'× LSTMCell':>11}"
        lines = [head, "-" * len(head)]
        for r in rows:
            cell = f"{r.of_ceiling:>11.2f}" if r.of_ceiling else f"{'':>11}"
            lines.append(f"{r.case:<20} {r.path:<40} {r.ms:>9.1f} {r.vs_torch:>10.2f} {cell}")
        return "\n".join(lines)
    head = f"{'case':<22} {'path':<40} {'ms':>9} {'× nn.LSTM':>10} {'of ceiling':>11}"
    lines = [head, "-" * len(head)]
    for r in rows:
        ceil = f"{r.of_ceiling:>10.0%}" if r.of_ceiling else f"{'':>10}"
        lines.append(f"{r.case:<22} {r.path:<40} {r.ms:>9.2f} {r.vs_torch:>10.2f} {ceil:>11}")
    return "\n".join(lines)


def run(quick: bool = False) -> str:
    """Run the whole benchmark and return the printed report."""
    out = [f"lstmkit bench{' --quick' if quick else ''} — {machine()}"]
    out.append("speed = time(torch.nn.LSTM) / time(path); ceiling = GEMM ceiling time / time(path)\n")
    out.append(format_rows(bench_sequences(quick)))
    out.append("")
    out.append(format_rows(bench_stream(quick), stream=True))
    return "\n".join(out)
