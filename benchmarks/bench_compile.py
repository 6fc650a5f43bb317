"""torch.compile(fullgraph=True) of an lstmkit.LSTM against the same module in eager mode, at the
benchmark shapes of DESIGN.md (T, B, I, H), inference (eval, no gradient) and training (forward and
backward), for the plain cell and layer norm; then a whole model around a two-layer lstmkit.LSTM
(:class:`SeqModel`), trained, without and with dropout (the latter with inductor's random numbers and
with ``fallback_random``, eager mode's); then torch.compile's floor: what dynamo's frame adds to one
call of lstmkit's operator and of torch.mm, and how much slower a piece of its Python runs right
after a millisecond-long product than warm.

    PYTHONPATH=src python benchmarks/bench_compile.py [--quick] [--rounds N] [--cpp-wrapper]

Prints compiled time / eager time per case (< 1: compiled is faster; the target is <= 1) and, in
brackets, the path eager mode took (its dispatch: torch's LSTM or the fused kernels). The compiled
module runs the fused kernels through the ``torch.ops.lstmkit.fused_layer`` operator; eager calls
them through their C++ autograd node, so where eager also runs them the ratio is what the operator's
wrapping costs or saves. The two are timed back to back in each round (the median of the rounds'
ratios). torch.nn.LSTM cannot be compiled with fullgraph=True ("Attempted to wrap RNN, GRU, or
LSTM"): there is no third column.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import lstmkit  # noqa: E402
from lstmkit import kernels as K  # noqa: E402

SHAPES = {
    "train-small": (200, 8, 64, 128),
    "train-mid": (100, 32, 128, 256),
    "train-large": (100, 64, 256, 512),
}


def paired_ratio(base: Callable[[], object], other: Callable[[], object], rounds: int) -> float:
    """Median over rounds of other's time / base's time within the round (the two run back to back,
    in alternating order), after two warm-up calls each: a ratio per round cancels the slow drifts of
    a shared machine's speed that a ratio of two medians keeps."""
    for f in (base, other, base, other):
        f()
    ratios = []
    for k in range(rounds):
        order = (base, other) if k % 2 == 0 else (other, base)
        t: dict[int, float] = {}
        for f in order:
            t0 = time.perf_counter()
            f()
            t[id(f)] = time.perf_counter() - t0
        ratios.append(t[id(other)] / t[id(base)])
    return statistics.median(ratios)


class SeqModel(torch.nn.Module):
    """A sequence-to-sequence regression model of the kind a user compiles: an input layer (Linear,
    tanh), a two-layer lstmkit.LSTM, a Linear head and the mean squared error against a target;
    ``dropout`` after the input layer, between the LSTM's layers and before the head."""

    def __init__(self, I: int, H: int, dropout: float) -> None:
        super().__init__()
        self.inp = torch.nn.Linear(I, I)
        self.rnn = lstmkit.LSTM(I, H, num_layers=2, dropout=dropout)
        self.drop = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(H, I)

    def forward(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(self.drop(torch.tanh(self.inp(x))))
        return torch.nn.functional.mse_loss(self.head(self.drop(y)), target)


def model_case(name: str, dropout: float, rounds: int, options: dict[str, Any] | None) -> float:
    """Compiled / eager time of one training step (forward, loss, backward) of :class:`SeqModel`."""
    T, B, I, H = SHAPES[name]
    torch._dynamo.reset()
    torch.manual_seed(0)
    m = SeqModel(I, H, dropout).train()
    compiled = torch.compile(m, fullgraph=True, dynamic=False, options=options)
    x, target = torch.randn(T, B, I), torch.randn(T, B, I)

    def run(f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[], object]:
        def one() -> object:
            f(x, target).backward()
            return None

        return one

    return paired_ratio(run(m), run(compiled), rounds)


def case(
    name: str, variants: dict[str, bool], train: bool, rounds: int, options: dict[str, Any] | None = None
) -> tuple[float, str]:
    T, B, I, H = SHAPES[name]
    torch._dynamo.reset()  # each case compiles afresh (dynamo's recompile limit counts per code object)
    torch.manual_seed(0)
    m = lstmkit.LSTM(I, H, **variants).train(train)
    compiled = torch.compile(m, fullgraph=True, dynamic=False, options=options)
    x = torch.randn(T, B, I, requires_grad=train)
    # the loss weighs each output: a dense gradient of y, as a head and a loss give (y.sum()'s is one
    # number expanded, which the compiled backward copies to the dense layout it traced: 800 KB at
    # train-small, a measurable share of a step)
    r = torch.randn(T, B, H)

    def run(f: Callable[..., tuple[torch.Tensor, object]]) -> Callable[[], object]:
        def one() -> object:
            if train:
                y, _ = f(x)
                (y * r).sum().backward()
                return None
            with torch.no_grad():
                return f(x)

        return one

    eager = run(m)
    eager()
    path = str(m.backend)  # the path eager's dispatch took (torch's LSTM or the fused kernels)
    return paired_ratio(eager, run(compiled), rounds), path


def frame_case(what: str, rounds: int) -> tuple[float, float]:
    """(time in a dynamo frame / time called directly, the direct call's median seconds) for one call:
    lstmkit's operator at train-small (inference) or torch.mm of two n x n matrices ("mm N"), the
    frame being ``torch.compile(f, backend="eager")``: dynamo's guards and the captured graph run by
    Python, no AOTAutograd and no inductor. torch's own operator pays the same: torch.compile's floor."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    if what.startswith("mm"):
        n = int(what.split()[1])
        args: tuple[torch.Tensor, ...] = (torch.randn(n, n), torch.randn(n, n))

        def f(*a: torch.Tensor) -> object:
            return torch.mm(a[0], a[1])

    else:
        import lstmkit.core.ops  # noqa: F401  (registers torch.ops.lstmkit)

        T, B, I, H = SHAPES["train-small"]
        m = lstmkit.LSTM(I, H)
        w = [p.detach() for p in (m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0)]
        args = (torch.randn(T, B, I), torch.zeros(B, H), torch.zeros(B, H), *w)

        def f(*a: torch.Tensor) -> object:
            return torch.ops.lstmkit.fused_layer(*a, *([None] * 11), False, False, 0)  # type: ignore[operator]

    framed = torch.compile(f, backend="eager", fullgraph=True, dynamic=False)
    times = []
    for _ in range(max(rounds, 20)):
        t0 = time.perf_counter()
        f(*args)
        times.append(time.perf_counter() - t0)
    return paired_ratio(lambda: f(*args), lambda: framed(*args), rounds), statistics.median(times)


def cold_python(n: int, calls: int = 300) -> tuple[float, float]:
    """Median microseconds of a piece of torch.compile's per-call Python (the config patch dynamo's
    frame enters for ``dynamic=False``; no tensor work), run warm (right after itself) and right
    after a torch.mm of two n x n matrices: the product's memory traffic evicts the interpreter's
    code and data from the core's caches, and Python run then runs slower."""
    from torch._dynamo import config

    a, b = torch.randn(n, n), torch.randn(n, n)

    def piece() -> None:
        with config.patch(automatic_dynamic_shapes=False, assume_static_by_default=True):
            pass

    warm, cold = [], []
    for _ in range(calls):
        piece()
        t0 = time.perf_counter()
        piece()
        warm.append(time.perf_counter() - t0)
        torch.mm(a, b)
        t0 = time.perf_counter()
        piece()
        cold.append(time.perf_counter() - t0)
    return statistics.median(warm) * 1e6, statistics.median(cold) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="train-small and train-mid, plain cell, 15 rounds unless --rounds"
    )
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument(
        "--cpp-wrapper",
        action="store_true",
        help="compile with inductor's C++ wrapper (options={'cpp_wrapper': True}): the graph is called "
        "without Python; compiling takes longer",
    )
    args = ap.parse_args()
    if not K.available():
        sys.exit(f"bench_compile: the fused kernels are unavailable: {K.unavailable_reason()}")
    rounds = 15 if args.quick and args.rounds == 60 else args.rounds
    options: dict[str, Any] | None = {"cpp_wrapper": True} if args.cpp_wrapper else None
    shapes = ["train-small", "train-mid"] if args.quick else list(SHAPES)
    configs = {"plain": {}} if args.quick else {"plain": {}, "layer_norm": {"layer_norm": True}}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, kernels: {K.build_info()}, options {options}")
    print(f"compiled / eager time (median of {rounds} paired rounds; < 1: compiled is faster)")
    print(f"{'shape':<12} {'config':<11} {'inference':>17} {'training':>17}")
    for shape in shapes:
        for cname, variants in configs.items():
            inf, p_inf = case(shape, variants, False, rounds, options)
            tr, p_tr = case(shape, variants, True, rounds, options)
            print(f"{shape:<12} {cname:<11} {inf:>8.3f} ({p_inf:>6}) {tr:>8.3f} ({p_tr:>6})", flush=True)
    print("\na model (Linear + tanh, 2-layer lstmkit.LSTM, Linear head, MSE loss), one training step: compiled / eager")
    drop_cases: dict[str, tuple[float, dict[str, Any]]] = {"no dropout": (0.0, {}), "dropout 0.1": (0.1, {})}
    if not args.quick:
        drop_cases["dropout 0.1, fallback_random"] = (0.1, {"fallback_random": True})
    print(f"{'shape':<12} " + " ".join(f"{k:>30}" for k in drop_cases))
    for shape in shapes:
        ratios = [model_case(shape, p, rounds, {**(options or {}), **o} or None) for p, o in drop_cases.values()]
        print(f"{shape:<12} " + " ".join(f"{r:>30.3f}" for r in ratios), flush=True)
    print("\ntorch.compile's floor: one call in dynamo's frame (backend='eager') / the same call without it")
    for what in ("lstmkit op, train-small", "mm 512", "mm 800"):
        ratio, t = frame_case(what, max(rounds, 100))
        extra = (ratio - 1) * t * 1e6
        print(f"{what:<24} {ratio:>8.3f}   (direct call: {t * 1e6:>6.0f} us; in the frame: {extra:+.0f} us)")
    for n in (128, 512, 800):
        warm, cold = cold_python(n)
        print(f"a piece of the frame's Python (a config patch): {warm:.1f} us warm, {cold:.1f} us after mm {n}")


if __name__ == "__main__":
    main()
