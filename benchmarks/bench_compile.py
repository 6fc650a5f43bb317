"""torch.compile(fullgraph=True) of an lstmkit.LSTM against the same module in eager mode, at the
benchmark shapes of DESIGN.md (T, B, I, H), inference (eval, no gradient) and training (forward and
backward), for the plain cell and layer norm.

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


def case(
    name: str, variants: dict[str, bool], train: bool, rounds: int, options: dict[str, object] | None = None
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
    options = {"cpp_wrapper": True} if args.cpp_wrapper else None
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


if __name__ == "__main__":
    main()
