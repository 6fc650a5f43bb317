"""Benchmark of the fused CPU kernels (lstmkit.kernels) against torch.nn.LSTM, nn.LSTMCell stepped
ONNX Runtime's LSTM (when onnx and onnxruntime are installed) and the GEMM ceiling, on the shapes
of DESIGN.md. One run prints every ratio (medians of several
rounds; the candidates of a case are timed in alternation so that a change of machine load hits
them alike).

    PYTHONPATH=src python benchmarks/bench_kernels.py [--quick] [--reps N] [--only SECTIONS]

SECTIONS is a comma-separated subset of train,infer,variants,stream,int8 (default: all).

Ratios are speed-ups: "x torch" = torch time / fused time (> 1: fused is faster); "% ceiling" =
ceiling time / fused time, where the ceiling is the FLOPs of the case as one large matmul
(T*B, I+H) @ (I+H, 4H) (x3 for forward+backward), timed with torch.mm on this machine.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import lstmkit  # noqa: E402
from lstmkit import kernels as K  # noqa: E402
from lstmkit.bench import machine as cpu_description  # noqa: E402

TRAIN = {
    "train-mid": (100, 32, 128, 256),
    "train-large": (100, 64, 256, 512),
    "train-small": (200, 8, 64, 128),
}
STREAM = {"stream-small": (1, 64, 128), "stream-large": (1, 256, 512)}


def machine() -> str:
    return f"{cpu_description()}, {os.cpu_count()} logical CPUs, kernels: {K.build_info()}"


def timed(
    fns: dict[str, Callable[[], object]], rounds: int, inner: int = 1, min_sample_s: float = 0.03
) -> dict[str, float]:
    """Median seconds per call of each fn; the fns run in alternation, after one warm-up call each.
    A sample is at least `inner` calls and at least `min_sample_s` long (a call of a few ms alone
    is at the mercy of this VM's millisecond hiccups)."""
    reps: dict[str, int] = {}
    for k, f in fns.items():
        f()
        t0 = time.perf_counter()
        f()
        one = max(time.perf_counter() - t0, 1e-9)
        reps[k] = max(inner, min(1000 * inner, int(min_sample_s / one + 0.999)))
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            n = reps[k]
            t0 = time.perf_counter()
            for _ in range(n):
                f()
            samples[k].append((time.perf_counter() - t0) / n)
    return {k: statistics.median(v) for k, v in samples.items()}


def gemm_ceiling(T: int, B: int, I: int, H: int, rounds: int) -> float:
    a = torch.randn(T * B, I + H)
    w = torch.randn(I + H, 4 * H)
    return timed({"mm": lambda: torch.mm(a, w)}, rounds)["mm"]


def layer_params(m: torch.nn.LSTM | torch.nn.LSTMCell) -> list[torch.Tensor]:
    if isinstance(m, torch.nn.LSTM):
        return [m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0]
    return [m.weight_ih, m.weight_hh, m.bias_ih, m.bias_hh]


def ort_session(lstm: torch.nn.LSTM, args: tuple[torch.Tensor, ...], names: list[str]) -> Any:
    """An ONNX Runtime session of `lstm` (exported with torch's TorchScript exporter), or None."""
    try:
        import onnxruntime as ort  # type: ignore[import-untyped]

        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(lstm, args, buf, dynamo=False, input_names=names, output_names=["y", "h", "c"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        opts.inter_op_num_threads = 1
        # ONNX Runtime's pool threads otherwise spin on after each run and take a core from whatever
        # is timed next (the kernels then saw the cores oversubscribed and fell back to one thread)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnx / onnxruntime missing, exporter unavailable
        print(f"  (ONNX Runtime baseline unavailable: {type(e).__name__}: {str(e)[:80]})")
        return None


def row(name: str, cols: list[str]) -> None:
    print(f"  {name:<28}" + "  ".join(f"{c:>14}" for c in cols))


def ms(t: float) -> str:
    return f"{t * 1e3:.2f} ms"


def bench_train(rounds: int) -> None:
    print("\ntraining, forward+backward of one layer (ratios: x torch = nn.LSTM time / fused time)")
    row("case", ["nn.LSTM", "LSTMCell loop", "fused", "x torch", "x cell", "% ceiling"])
    for name, shape in TRAIN.items():
        train_case(name, *shape, rounds=rounds)


def train_case(name: str, T: int, B: int, I: int, H: int, *, rounds: int) -> None:
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(I, H)
    cell = torch.nn.LSTMCell(I, H)
    x = torch.randn(T, B, I, requires_grad=True)
    h0 = torch.zeros(B, H)
    c0 = torch.zeros(B, H)
    p = layer_params(lstm)

    def f_torch() -> None:
        y, _ = lstm(x)
        y.sum().backward()

    def f_cell() -> None:
        h, c = h0, c0
        ys = []
        for t in range(T):
            h, c = cell(x[t], (h, c))
            ys.append(h)
        torch.stack(ys).sum().backward()

    def f_fused() -> None:
        y, _, _, _ = K.fused_layer(x, h0, c0, *p)
        y.sum().backward()

    r = timed({"torch": f_torch, "cell": f_cell, "fused": f_fused}, rounds)
    ceil = 3 * gemm_ceiling(T, B, I, H, rounds)
    row(name, [ms(r["torch"]), ms(r["cell"]), ms(r["fused"]), f"{r['torch'] / r['fused']:.2f}x",
               f"{r['cell'] / r['fused']:.2f}x", f"{100 * ceil / r['fused']:.0f}%"])  # fmt: skip
    print(f"  {'':<28}(nn.LSTM at {100 * ceil / r['torch']:.0f}% of the ceiling {ms(ceil)})")


def bench_infer(rounds: int) -> None:
    print("\ninference, whole sequence, no grad (and the traced forward: gates + c of every step)")
    row("case", ["nn.LSTM", "onnxruntime", "fused", "fused traced", "x torch", "x onnxrt", "traced/untr.", "% ceiling"])
    for name, shape in TRAIN.items():
        infer_case(name, *shape, rounds=rounds)


def infer_case(name: str, T: int, B: int, I: int, H: int, *, rounds: int) -> None:
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(I, H)
    x = torch.randn(T, B, I)
    h0 = torch.zeros(B, H)
    c0 = torch.zeros(B, H)
    p = [t.detach() for t in layer_params(lstm)]
    fns: dict[str, Callable[[], object]] = {
        "torch": lambda: lstm(x),
        "fused": lambda: K.fused_layer(x, h0, c0, *p),
        "traced": lambda: K.fused_layer(x, h0, c0, *p, trace=True),
    }
    sess = ort_session(lstm, (x,), ["x"])
    if sess is not None:
        feed = {"x": x.numpy()}
        fns["ort"] = lambda: sess.run(None, feed)
    with torch.no_grad():
        r = timed(fns, rounds)
    ceil = gemm_ceiling(T, B, I, H, rounds)
    ort_t = r.get("ort")
    row(name, [ms(r["torch"]), ms(ort_t) if ort_t else "n/a", ms(r["fused"]), ms(r["traced"]),
               f"{r['torch'] / r['fused']:.2f}x", f"{ort_t / r['fused']:.2f}x" if ort_t else "n/a",
               f"{r['traced'] / r['fused']:.2f}", f"{100 * ceil / r['fused']:.0f}%"])  # fmt: skip


def bench_variants(rounds: int) -> None:
    T, B, I, H = TRAIN["train-mid"]
    print("\nvariants at train-mid, forward+backward (time / plain nn.LSTM's; target <= 1.3)")
    row("variant", ["fused", "/ nn.LSTM"])
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(I, H)
    x = torch.randn(T, B, I, requires_grad=True)
    h0 = torch.zeros(B, H)
    c0 = torch.zeros(B, H)
    p = layer_params(lstm)
    peep = (torch.randn(3, H) * 0.1).requires_grad_(True)
    ln = tuple(
        (torch.ones(n) if k % 2 == 0 else torch.zeros(n)).requires_grad_(True)
        for k, n in enumerate((4 * H, 4 * H, 4 * H, 4 * H, H, H))
    )
    zc = (torch.rand(T, B, H) < 0.1).float()
    zh = (torch.rand(T, B, H) < 0.1).float()
    lengths = torch.randint(T // 2, T + 1, (B,))
    lengths[0] = T

    def run(**kw: object) -> Callable[[], None]:
        def f() -> None:
            y, _, _, _ = K.fused_layer(x, h0, c0, *p, **kw)  # type: ignore[arg-type]
            y.sum().backward()

        return f

    def f_torch() -> None:
        y, _ = lstm(x)
        y.sum().backward()

    fns: dict[str, Callable[[], object]] = {
        "nn.LSTM (plain)": f_torch,
        "plain": run(),
        "traced": run(trace=True),
        "peephole": run(peephole=peep),
        "layer_norm": run(ln=ln),
        "coupled": run(coupled=True),
        "zoneout": run(zoneout_c=zc, zoneout_h=zh),
        "lengths": run(lengths=lengths),
        "all (ln+peep+zone)": run(ln=ln, peephole=peep, zoneout_c=zc, zoneout_h=zh),
    }
    r = timed(fns, rounds)
    for k, v in r.items():
        row(k, [ms(v), f"{v / r['nn.LSTM (plain)']:.2f}"])


def bench_stream(rounds: int, n_steps: int) -> None:
    print("\nstreaming, one step per call, batch 1 (x cell = LSTMCell time / fused time)")
    row("case", ["nn.LSTM", "LSTMCell", "onnxruntime", "fused step", "x cell", "x lstm", "x onnxrt"])
    for name, shape in STREAM.items():
        stream_case(name, *shape, rounds=rounds, n_steps=n_steps)


def stream_case(name: str, B: int, I: int, H: int, *, rounds: int, n_steps: int) -> None:
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(I, H)
    cell = torch.nn.LSTMCell(I, H)
    cell.load_state_dict({k[:-3]: v for k, v in lstm.state_dict().items()})
    x = torch.randn(B, I)
    x3 = x.view(1, B, I)
    x1 = x.view(-1)
    names = ("w_ih", "w_hh", "b_ih", "b_hh")
    stream = K.FusedStream([dict(zip(names, (t.detach() for t in layer_params(lstm))))], B, proj=False)
    st_cell: list[tuple[torch.Tensor, torch.Tensor] | None] = [None]
    st_lstm: list[tuple[torch.Tensor, torch.Tensor] | None] = [None]

    def f_cell() -> None:
        st_cell[0] = cell(x, st_cell[0])

    def f_lstm() -> None:
        _, st_lstm[0] = lstm(x3, st_lstm[0])

    def f_fused() -> None:
        stream.step(x1)

    fns: dict[str, Callable[[], object]] = {"lstm": f_lstm, "cell": f_cell, "fused": f_fused}
    zeros = torch.zeros(1, B, H)
    sess = ort_session(lstm, (x3, (zeros, zeros)), ["x", "h0", "c0"])
    if sess is not None:
        st_ort = {"x": x3.numpy(), "h0": zeros.numpy(), "c0": zeros.numpy()}

        def f_ort() -> None:
            _, st_ort["h0"], st_ort["c0"] = sess.run(None, st_ort)

        fns["ort"] = f_ort
    with torch.no_grad():
        r = timed(fns, rounds, inner=n_steps)
    us = {k: f"{v * 1e6:.1f} us" for k, v in r.items()}
    ort_t = r.get("ort")
    row(name, [us["lstm"], us["cell"], us.get("ort", "n/a"), us["fused"], f"{r['cell'] / r['fused']:.1f}x",
               f"{r['lstm'] / r['fused']:.1f}x", f"{ort_t / r['fused']:.1f}x" if ort_t else "n/a"])  # fmt: skip


def bench_int8(rounds: int, n_steps: int) -> None:
    """The int8 kernel (issue "It ships small"): streaming step vs the float32 fused step, and whole
    sequences (inference) vs nn.LSTM, same weights (int8 codes of them)."""
    print("\nint8 kernel (LSTM.use_int8): streaming step vs the float32 fused step; whole sequence vs nn.LSTM")
    row("case", ["float32 fused", "int8", "x faster"])
    for name, (B, I, H) in STREAM.items():
        torch.manual_seed(0)
        m = lstmkit.LSTM(I, H, forget_bias=1.0).eval()
        x1 = torch.randn(I)
        f32 = m.stream(B)
        m.use_int8()
        i8 = m.stream(B)
        with torch.no_grad():
            r = timed({"f": lambda: f32.step(x1), "q": lambda: i8.step(x1)}, rounds, inner=n_steps)
        row(name, [f"{r['f'] * 1e6:.1f} us", f"{r['q'] * 1e6:.1f} us", f"{r['f'] / r['q']:.2f}x"])
    row("case (whole sequence)", ["nn.LSTM", "int8", "x faster"])
    for name, (T, B, I, H) in TRAIN.items():
        torch.manual_seed(0)
        m = lstmkit.LSTM(I, H, forget_bias=1.0).eval()
        ref = torch.nn.LSTM(I, H).eval()
        ref.load_state_dict(m.state_dict())
        x = torch.randn(T, B, I)
        m.use_int8()
        with torch.no_grad():
            r = timed({"f": lambda: ref(x), "q": lambda: m(x)}, rounds)
        assert m.backend == "int8"
        row(name, [ms(r["f"]), ms(r["q"]), f"{r['f'] / r['q']:.2f}x"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (numbers are noisier)")
    ap.add_argument("--reps", type=int, default=0, help="rounds per case (default 7, quick 3)")
    ap.add_argument("--only", default="train,infer,variants,stream,int8", help="comma-separated sections")
    args = ap.parse_args(argv)
    if not K.available():
        print(f"fused kernels unavailable: {K.unavailable_reason()}", file=sys.stderr)
        return 2
    rounds = args.reps or (3 if args.quick else 7)
    print("machine:", machine())
    sections = set(args.only.split(","))
    if "train" in sections:
        bench_train(rounds)
    if "infer" in sections:
        bench_infer(rounds)
    if "variants" in sections:
        bench_variants(rounds)
    if "stream" in sections:
        bench_stream(rounds, 200 if args.quick else 1000)
    if "int8" in sections:
        bench_int8(rounds, 200 if args.quick else 1000)
    events = K.contention_events()
    if events:
        print(
            f"\nnote: {events} multi-threaded kernel calls fell back to one thread because other processes"
            " kept the cores busy; rerun on a quiet machine for two-thread numbers."
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
