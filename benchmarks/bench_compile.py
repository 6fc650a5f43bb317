"""torch.compile(fullgraph=True) of an lstmkit.LSTM against the same module in eager mode, at the
benchmark shapes of DESIGN.md (T, B, I, H), inference (eval, no gradient) and training (forward and
backward), for the plain cell and layer norm.

    PYTHONPATH=src python benchmarks/bench_compile.py [--quick] [--rounds N]

Prints compiled time / eager time per case (< 1: compiled is faster; the target is <= 1) and, in
brackets, the path eager mode took (its dispatch: torch's LSTM or the fused kernels). The compiled
module runs the fused kernels through the ``torch.ops.lstmkit.fused_layer`` operator; eager calls
them through their C++ autograd node, so where eager also runs them the ratio is what the operator's
wrapping costs or saves. The two are timed in alternation (medians of the rounds). torch.nn.LSTM cannot be compiled
with fullgraph=True ("Attempted to wrap RNN, GRU, or LSTM"): there is no third column.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import lstmkit  # noqa: E402
from lstmkit import kernels as K  # noqa: E402

SHAPES = {
    "train-small": (200, 8, 64, 128),
    "train-mid": (100, 32, 128, 256),
    "train-large": (100, 64, 256, 512),
}


def median_times(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds per call of each fn, in alternation, after two warm-up calls each."""
    for f in fns.values():
        f()
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def case(name: str, variants: dict[str, bool], train: bool, rounds: int) -> tuple[float, str]:
    T, B, I, H = SHAPES[name]
    torch._dynamo.reset()  # each case compiles afresh (dynamo's recompile limit counts per code object)
    torch.manual_seed(0)
    m = lstmkit.LSTM(I, H, **variants).train(train)
    compiled = torch.compile(m, fullgraph=True, dynamic=False)
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
    t = median_times({"eager": eager, "compiled": run(compiled)}, rounds)
    return t["compiled"] / t["eager"], path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="train-small and train-mid, plain cell, 5 rounds")
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    if not K.available():
        sys.exit(f"bench_compile: the fused kernels are unavailable: {K.unavailable_reason()}")
    rounds = 5 if args.quick else args.rounds
    shapes = ["train-small", "train-mid"] if args.quick else list(SHAPES)
    configs = {"plain": {}} if args.quick else {"plain": {}, "layer_norm": {"layer_norm": True}}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, kernels: {K.build_info()}")
    print(f"compiled / eager time (median of {rounds} rounds; < 1: compiled is faster)")
    print(f"{'shape':<12} {'config':<11} {'inference':>17} {'training':>17}")
    for shape in shapes:
        for cname, variants in configs.items():
            inf, p_inf = case(shape, variants, False, rounds)
            tr, p_tr = case(shape, variants, True, rounds)
            print(f"{shape:<12} {cname:<11} {inf:>8.3f} ({p_inf:>6}) {tr:>8.3f} ({p_tr:>6})", flush=True)


if __name__ == "__main__":
    main()
