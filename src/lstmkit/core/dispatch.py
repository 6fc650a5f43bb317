"""Which path a plain call runs: a fixed rule from this project's measurements, or, as an opt-in,
the faster of the two paths timed on this machine.

A plain configuration without traces can run torch's fused LSTM (oneDNN on CPU) or lstmkit's
kernels; which is faster depends on the shapes, the gradient and the machine. Variants and traces
have one compiled path (the fused kernels), so nothing is decided for them here.

The default is :func:`rule`: a pure function of the call's :class:`Case` (steps T, batch B, input I,
hidden H, layers, directions, projection, dtype, whether a gradient is wanted) and of the
:class:`Machine` (the SIMD width the kernels were built for, the one torch's own kernels use on
this CPU, the number of threads). It picks the fused kernels only where the benchmarks of this
project's two machines (BENCHMARKS.md, benchmarks/results/*.txt) show them clearly faster than
nn.LSTM, by at least 10 % in every run, and torch's LSTM everywhere else, so a plain call is never
slower than nn.LSTM in the benchmark. The same call on the same machine always runs the same path:
nothing is timed and nothing is written to disk.

Opt-in measuring, in the spirit of ``torch.backends.cudnn.benchmark``: with
``lstmkit.core.dispatch.benchmark = True`` (or ``LSTMKIT_DISPATCH=measure`` in the environment) the
first plain call of each configuration runs both paths on random inputs of its shape (at most
MAX_STEPS steps; forward, and backward when a gradient is wanted, through ``torch.autograd.grad`` so
that no ``.grad`` is touched and no random number of the caller is drawn), a few alternating
repetitions each, and takes the fused kernels when their median is at least 5 % faster. The choice is
remembered in this process only (:func:`choices`, :func:`forget`); results then depend on timing.
``LSTMKIT_DISPATCH=torch`` makes every plain call run torch's LSTM.

This module never sees an LSTM: the layer hands it a :class:`Case` and a callable that runs one call
on a given path (only called when measuring).
"""

from __future__ import annotations

import functools
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from .. import kernels
from ..errors import InputError

Backend = Literal["auto", "torch", "fused", "reference"]
BACKENDS = ("auto", "torch", "fused", "reference")  # what backend= accepts


def check_backend(owner: str, backend: Any, variants: list[str]) -> None:
    """InputError unless `backend` is one of BACKENDS and can run the `variants` set (names)."""
    if backend not in BACKENDS:
        raise InputError(f"{owner}: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch" and variants:
        raise InputError(
            f"{owner}: backend='torch' runs only the plain cell, but {', '.join(variants)} "
            "is set; use backend='auto' or 'reference'"
        )


FUSED_DTYPES = (torch.float32, torch.float64)  # what the fused kernels compute in

benchmark = False  # True: time both paths once per configuration (see the module docstring)

MARGIN = 0.95  # when measuring, fused must take at most this share of torch's time
REPS = 3
# Measuring runs at most this many steps. The ratio still moves below it (Xeon VM, inference,
# nn.LSTM / fused at T 16, 32, 64, 100: B 32 H 256 1.06, 1.04, 1.13, 1.10; B 64 H 512 1.02, 1.00,
# 1.08, 1.07): at 32 steps the fixed costs of a call hid a 10 % gain of the kernels at T = 100.
MAX_STEPS = 64


@dataclass(frozen=True)
class Case:
    """A plain, untraced call that both torch's LSTM and the fused kernels can run."""

    steps: int  # T
    batch: int  # B (1 for unbatched input)
    input_size: int  # I
    hidden_size: int  # H
    proj_size: int  # P, 0 for none
    num_layers: int
    directions: int
    bias: bool
    dtype: torch.dtype
    grad: bool  # the call builds an autograd graph (a backward will follow)

    def key(self) -> str:
        """The configuration as measuring remembers it (lengths bucketed 1 / <=16 / <=64 / longer)."""
        T = self.steps
        tb = "1" if T == 1 else ("<=16" if T <= 16 else ("<=64" if T <= 64 else ">64"))
        return (
            f"{str(self.dtype).replace('torch.', '')} grad={int(self.grad)} threads={torch.get_num_threads()} "
            f"T{tb} B={self.batch} I={self.input_size} H={self.hidden_size} P={self.proj_size} "
            f"L={self.num_layers} D={self.directions} bias={int(self.bias)}"
        )


@dataclass(frozen=True)
class Machine:
    """What the rule needs to know of the machine."""

    kernel_lanes: int  # float32 lanes of the SIMD the fused kernels were built for: 8 AVX2, 16 AVX-512
    torch_lanes: int  # the same for torch's own CPU kernels on this CPU (0: neither AVX2 nor AVX-512)
    threads: int  # torch.get_num_threads()


@functools.cache
def _lanes() -> tuple[int, int]:
    info = kernels.build_info() or ""
    lanes = dict(part.split("=", 1) for part in info.split() if "=" in part).get("lanes_f32", "0")
    cap = torch.backends.cpu.get_cpu_capability()
    return int(lanes), 16 if cap.startswith("AVX512") else (8 if cap == "AVX2" else 0)


def machine() -> Machine:
    """This machine (call only once :func:`lstmkit.kernels.available` is True)."""
    kernel_lanes, torch_lanes = _lanes()
    return Machine(kernel_lanes=kernel_lanes, torch_lanes=torch_lanes, threads=torch.get_num_threads())


def rule(case: Case, m: Machine) -> str:
    """Return "fused" where the benchmarks show the kernels clearly faster than nn.LSTM for this case, else "torch".

    Every measurement behind it ran one float32 layer, one direction, no projection, on 2 threads, at
    the three benchmark shapes (T, B, I, H): train-small (200, 8, 64, 128), train-mid (100, 32, 128,
    256), train-large (100, 64, 256, 512). The kernels' lead shrinks as the shapes grow (torch's
    per-step costs weigh most on small shapes), so a case inside the box the three span is taken as
    covered; a case outside it (or another dtype, threads, projection, two directions) is not measured
    and runs torch.
    """
    # The kernels built for a narrower SIMD than torch uses here (LSTMKIT_KERNEL_SIMD=avx2 on an
    # AVX-512 CPU) lost or tied: Xeon VM, the AVX2 build, one run (BENCHMARKS.md, "the AVX2 build on
    # the same VM"): fwd+bwd 1.11 / 1.00 / 1.12, inference 0.73 / 0.67 / 1.17 (mid / large / small).
    if m.kernel_lanes == 0 or m.kernel_lanes != m.torch_lanes:
        return "torch"
    if m.threads != 2 or case.dtype != torch.float32 or case.proj_size > 0 or case.directions != 1:
        return "torch"  # never measured against nn.LSTM
    # T: the Xeon VM's inference sweep above (nn.LSTM / fused 1.00-1.06 at T 16 and 32, 1.08-1.13 at
    # 64); the training measurements ran 100 and 200 steps, where the lead is 1.3x or more.
    if case.steps < 64:
        return "torch"
    # B 8-64 and H 128-512: the benchmark shapes. I <= H: they all have I = H / 2, and the layers above
    # the first of a stack see I = H; the input projection is one GEMM over all steps that the
    # kernels run at MKL's speed or faster (BENCHMARKS.md, "The ceilings").
    if not (8 <= case.batch <= 64 and 128 <= case.hidden_size <= 512 and case.input_size <= case.hidden_size):
        return "torch"
    if case.grad:
        # forward+backward, x nn.LSTM (bench_kernels*.txt and BENCHMARKS.md's runs):
        # AMD EPYC, AVX2 build (sessions 5-7, 20+ runs): train-small 1.32-1.70, train-mid 1.28-1.57,
        #   train-large 1.18-1.79; Xeon VM, AVX-512 build (runs 1-5 and checks): 1.62-1.75,
        #   1.46-1.59, 1.30-1.37. Clearly faster everywhere in the box.
        return "fused"
    if m.kernel_lanes == 8:
        # inference, AMD EPYC, AVX2 build (sessions 5-7): small 1.72-2.39, mid 1.17-1.37, large
        # 1.17-1.37 x nn.LSTM (bench_kernels_amd_epyc_avx2.txt: 1.88, 1.26, 1.34).
        return "fused"
    # inference, Xeon VM, AVX-512 build (bench_kernels.txt and runs 1-5 + checks): small 1.84-1.92,
    # mid 1.13-1.19 (the sweep: 1.13 at T 64), but large only 1.07-1.12 (bench_core.txt 1.06 through
    # the module): not clearly faster above B 32, H 256, the mid shape.
    if case.batch <= 32 and case.hidden_size <= 256:
        return "fused"
    return "torch"


def mode() -> str:
    """The mode: "rule" (the default), "measure" (``benchmark = True`` or LSTMKIT_DISPATCH=measure) or "torch"."""
    m = os.environ.get("LSTMKIT_DISPATCH", "").strip().lower() or "rule"
    if m not in ("rule", "measure", "torch"):
        raise InputError(f"LSTMKIT_DISPATCH must be 'rule', 'measure' or 'torch', got {m!r}")
    return "measure" if benchmark and m == "rule" else m


_lock = threading.Lock()
_memory: dict[str, dict[str, Any]] = {}


def _measure(run: Callable[[str], None]) -> dict[str, float]:
    """Median seconds of ``run(path)`` for each path, alternating; the first round warms up."""
    times: dict[str, list[float]] = {"torch": [], "fused": []}
    for rep in range(REPS + 1):
        for path in ("torch", "fused"):
            t0 = time.perf_counter()
            run(path)
            if rep > 0:  # the first round warms up (and builds the kernels)
                times[path].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def plain_choice(case: Case, run: Callable[[str], None]) -> str:
    """Return "torch" or "fused" for a plain untraced call that both can run (the kernels are available).

    ``run(path)`` runs one such call on that path (random inputs of the case's shape, at most
    MAX_STEPS steps); it is called only when measuring.
    """
    m = mode()
    if m == "torch":
        return "torch"
    if m == "rule":
        return rule(case, machine())
    key = case.key()
    with _lock:
        hit = _memory.get(key)
        if hit is None:
            t = _measure(run)
            path = "fused" if t["fused"] <= MARGIN * t["torch"] else "torch"
            hit = _memory[key] = {"path": path, "torch_s": t["torch"], "fused_s": t["fused"]}
        return str(hit["path"])


def choices() -> dict[str, dict[str, Any]]:
    """What measuring chose in this process (key -> path and the two medians)."""
    with _lock:
        return dict(_memory)


def forget() -> None:
    """Drop what measuring chose: the next plain calls measure again."""
    with _lock:
        _memory.clear()
