"""Streaming step of the NumPy runtime (float32, int8, int4 bundles) against the fused kernel's
``LSTM.stream(1).step``, one thread, at the stream shapes of DESIGN.md (batch 1, one layer).

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_runtime_step.py [--rounds N]

The candidates of a shape are timed in alternation (the best of N rounds of 200 steps each), so a
change of machine load hits them alike. "x fused" = NumPy step time / fused step time (the issue's
target: at most 3).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before NumPy loads its BLAS

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import lstmkit  # noqa: E402
import lstmkit.runtime as rt  # noqa: E402
from lstmkit.bench import STREAM_SHAPES, machine  # noqa: E402
from lstmkit.export import export_runtime  # noqa: E402


def best_times(fns: dict[str, Callable[[], object]], rounds: int, inner: int = 200) -> dict[str, float]:
    """Seconds per call of each fn: the best round, the fns in alternation."""
    best = dict.fromkeys(fns, float("inf"))
    for f in fns.values():
        f()
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(inner):
                f()
            best[k] = min(best[k], (time.perf_counter() - t0) / inner)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {machine()}, NumPy {np.__version__}, 1 thread\n")
    print("| shape | fused step | numpy float32 | numpy int8 | numpy int4 |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (I, H) in STREAM_SHAPES.items():
            torch.manual_seed(0)
            lstm = lstmkit.LSTM(I, H, forget_bias=1.0).eval()
            x = torch.randn(I)
            xn = x.numpy()
            fused = lstm.stream(1)

            def fused_step() -> None:
                with torch.no_grad():
                    fused.step(x)

            fns: dict[str, Callable[[], object]] = {"fused": fused_step}
            for bits in (None, 8, 4):
                stream = rt.load(export_runtime(lstm, Path(tmp) / f"{name}-{bits}", bits=bits)).stream(1)
                fns[f"numpy{bits or 32}"] = lambda s=stream: s.step(xn)
            t = best_times(fns, a.rounds)
            cells = [f"{t[k] * 1e6:.1f} µs ({t[k] / t['fused']:.2f}x fused)" for k in ("numpy32", "numpy8", "numpy4")]
            print(f"| {name} | {t['fused'] * 1e6:.1f} µs | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
