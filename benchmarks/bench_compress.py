"""Trade-off report of lstmkit.compress: for each method and setting, parameters, bytes on disk,
streaming-step latency (torch stream and the NumPy runtime), whole-sequence throughput and
validation quality, as ratios to the uncompressed run. Prints a Markdown table and writes a PNG.

    PYTHONPATH=src python benchmarks/bench_compress.py [--run RUN ...] [--out DIR] [--steps N] [--quick]

The settings are the issue's: int8 (calibrated: the int8 kernel where validation allows) and int4;
50 % of the weights (unstructured) or of the hidden units (structured) pruned and fine-tuned;
low-rank at half the parameters of every W_ih and W_hh, fine-tuned; distillation to half the
hidden units. Without --run it trains a small mystery run first (--quick: a tiny one, seconds; the numbers then
say only that the pipeline works). Timings are medians of several repetitions; on a shared
machine they are noisy, and the report says which machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import lstmkit.runtime as rt  # noqa: E402
from lstmkit.compress import compress  # noqa: E402
from lstmkit.compress.common import count_params  # noqa: E402
from lstmkit.export import export_runtime  # noqa: E402
from lstmkit.train import TrainConfig, load_run, train  # noqa: E402


def median_time(fn: Callable[[], Any], reps: int, inner: int) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        ts.append((time.perf_counter() - t) / inner)
    return statistics.median(ts)


def measure(run_dir: Path, work: Path, reps: int) -> dict[str, Any]:
    r = load_run(run_dir)
    task = r.task
    metric = task.main_metric
    val = r.evaluate("val")[metric]
    batch = task.eval_batches("val", 64)[0]
    model = r.model.eval()
    with torch.no_grad():
        seq_s = median_time(lambda: model(batch.x, batch.lengths), reps, 1)
    tokens = int(batch.x.shape[0] * batch.x.shape[1])
    bundle = export_runtime(r, work / (run_dir.name + ".rt"))
    m = rt.load(bundle)
    stream = m.stream(1)
    x0 = batch.x[0, 0].numpy()
    np_step = median_time(lambda: stream.step(x0), reps, 200)
    tstream = model.rnn.stream(1)  # type: ignore[operator]
    emb = model.embedding(batch.x[:1, 0]) if model.embedding is not None else batch.x[:1, 0]
    with torch.no_grad():
        t_step = median_time(lambda: model.head(tstream.step(emb)), reps, 200)
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    stored = load_file(str(run_dir / "model.safetensors"))  # parameters as stored (low-rank: the factors)
    stored_params = sum(
        t.numel() * (2 if k.endswith(".q") and t.dtype == torch.uint8 else 1)  # int4: two codes a byte
        for k, t in stored.items()
        if not k.endswith(".scale")
    )
    return {
        "params": stored_params,
        "model_params": count_params(model),
        "nonzero": nonzero,
        "disk": (run_dir / "model.safetensors").stat().st_size,
        "bundle": (bundle / "weights.bin").stat().st_size,
        "val": val,
        "metric": metric,
        "higher": task.higher_is_better,
        "seq_tok_s": tokens / seq_s,
        "torch_step_us": t_step * 1e6,
        "numpy_step_us": np_step * 1e6,
    }


def settings_for(run_dir: Path, steps: int) -> list[tuple[str, str, dict[str, Any]]]:
    """The issue's settings: int8/int4, 50 % of the weights or of the units pruned, low-rank at half
    the parameters of every W_ih and W_hh, distillation to half the hidden units."""
    r = load_run(run_dir)
    ranks = {}
    for name, p in r.model.rnn.named_parameters():
        if name.startswith(("weight_ih", "weight_hh")):
            rows, cols = p.shape
            ranks[name] = max(1, (rows * cols) // (2 * (rows + cols)))
    return [
        ("int8", "quantize", {"bits": 8}),
        ("int4", "quantize", {"bits": 4}),
        ("prune 50% weights", "prune", {"sparsity": 0.5, "steps": steps}),
        ("prune 50% units", "prune", {"units": 0.5, "steps": steps}),
        ("low-rank 1/2 params", "lowrank", {"rank": ranks, "steps": steps}),
        ("distill H/2", "distill", {"steps": 2 * steps}),
    ]


def report(base: Path, out: Path, steps: int, reps: int) -> list[str]:
    rows = [("uncompressed", measure(base, out, reps))]
    for label, method, opts in settings_for(base, steps):
        dst = out / label.replace(" ", "_").replace("/", "").replace("%", "")
        t0 = time.perf_counter()
        res = compress(base, method, dst, **opts)
        m = measure(dst, out, reps)
        m["compress_s"] = time.perf_counter() - t0
        m["int8_kernel"] = bool(res["compress"].get("int8_kernel"))
        rows.append((label, m))
        print(f"  {base.name}: {label} done in {m['compress_s']:.0f} s", flush=True)
    b = rows[0][1]
    lines = [
        f"**{base.name}** (validation {b['metric']}; fine-tuning {steps} steps, distillation {2 * steps})",
        "",
        f"| setting | params | nonzero | disk | runtime bundle | val {b['metric']} | step (torch) | step (NumPy "
        "runtime) | whole-sequence throughput |",
        "|" + "---|" * 9,
    ]
    for label, m in rows:
        q = m["val"] / b["val"] if b["val"] else float("nan")
        kern = " int8 kernel" if m.get("int8_kernel") else ""
        lines.append(
            f"| {label} | {m['params'] / b['params']:.2f}x | {m['nonzero'] / b['nonzero']:.2f}x | "
            f"{m['disk'] / b['disk']:.2f}x | {m['bundle'] / b['bundle']:.2f}x | {m['val']:.4g} ({q:.3f}x) | "
            f"{m['torch_step_us']:.1f} us ({b['torch_step_us'] / m['torch_step_us']:.2f}x{kern}) | "
            f"{m['numpy_step_us']:.1f} us ({b['numpy_step_us'] / m['numpy_step_us']:.2f}x) | "
            f"{m['seq_tok_s'] / b['seq_tok_s']:.2f}x |"
        )
    (out / f"{base.name}.json").write_text(json.dumps([{"setting": s, **m} for s, m in rows], indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, m in rows:
        ax.scatter(m["bundle"] / b["bundle"], m["val"], label=label)
    ax.set_xlabel("runtime bundle size (x uncompressed)")
    ax.set_ylabel(f"validation {b['metric']}")
    ax.set_title(base.name)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"tradeoff-{base.name}.png", dpi=110)
    plt.close(fig)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", action="append", help="an existing run folder; repeat for several (default: train a "
                    "small mystery run)")  # fmt: skip
    ap.add_argument("--out", default="runs/bench_compress")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=300, help="fine-tuning steps (distillation: twice as many)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    bases = [Path(r) for r in a.run or []]
    if not bases:
        base = out / "base"
        tp = {"T": 20, "suspects": 4, "red_herrings": 1, "n_val": 128, "n_test": 128}
        cfg = TrainConfig(
            task="mystery",
            task_params=tp,
            hidden_size=32 if a.quick else 64,
            embedding_size=16,
            batch_size=16,
            max_steps=40 if a.quick else 600,
            eval_every=20 if a.quick else 100,
        )
        train(cfg, base, progress=False)
        bases = [base]
    steps = 10 if a.quick else a.steps
    lines = [
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"1 thread; timings are medians of {a.reps}; ratios to the uncompressed run (x: higher is better for "
        "speed, the value itself for size and quality)",
        "",
    ]
    for base in bases:
        work = out / base.name
        work.mkdir(parents=True, exist_ok=True)
        lines += report(base, work, steps, a.reps) + [""]
        print("\n".join(lines), flush=True)
    table = "\n".join(lines)
    (out / "report.md").write_text(table + "\n")
    print(f"\n{out / 'report.md'}")


if __name__ == "__main__":
    main()
