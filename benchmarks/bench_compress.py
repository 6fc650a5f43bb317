"""Trade-off report of lstmkit.compress: for each method and setting, parameters, bytes on disk,
streaming-step latency (torch stream and the NumPy runtime), whole-sequence throughput and
validation quality, as ratios to the uncompressed run. Prints a Markdown table and writes a PNG.

    PYTHONPATH=src python benchmarks/bench_compress.py [--run RUN] [--out DIR] [--quick]

Without --run it trains a small mystery run first (--quick: a tiny one, seconds; the numbers then
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import lstmkit.runtime as rt  # noqa: E402
from lstmkit.compress import compress, load_any_run  # noqa: E402
from lstmkit.compress.common import count_params  # noqa: E402
from lstmkit.export import export_runtime  # noqa: E402
from lstmkit.train import TrainConfig, train  # noqa: E402


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
    r = load_any_run(run_dir)
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
    return {
        "params": count_params(model),
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", help="an existing run folder (default: train a small mystery run)")
    ap.add_argument("--out", default="runs/bench_compress")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if a.run:
        base = Path(a.run)
    else:
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
    ft = 10 if a.quick else 200
    settings: list[tuple[str, str, dict[str, Any]]] = [
        ("int8", "quantize", {"bits": 8}),
        ("int4", "quantize", {"bits": 4}),
        ("prune 50% weights", "prune", {"sparsity": 0.5, "steps": ft}),
        ("prune 50% units", "prune", {"units": 0.5, "steps": ft}),
        ("low-rank energy 0.8", "lowrank", {"energy": 0.8, "steps": ft}),
        ("distill H/2", "distill", {"steps": 2 * ft}),
    ]
    rows = [("uncompressed", measure(base, out, a.reps))]
    for label, method, opts in settings:
        dst = out / label.replace(" ", "_").replace("/", "").replace("%", "")
        compress(base, method, dst, **opts)
        rows.append((label, measure(dst, out, a.reps)))
    b = rows[0][1]
    head = (
        "| setting | params | nonzero | disk | runtime bundle | val "
        + b["metric"]
        + " | torch step | numpy step | seq throughput |"
    )
    lines = [
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"1 thread; timings are medians of {a.reps} and noisy on a shared machine",
        "",
        head,
        "|" + "---|" * 9,
    ]
    for label, m in rows:
        q = m["val"] / b["val"] if b["val"] else float("nan")
        lines.append(
            f"| {label} | {m['params'] / b['params']:.2f}x | {m['nonzero'] / b['nonzero']:.2f}x | "
            f"{m['disk'] / b['disk']:.2f}x | {m['bundle'] / b['bundle']:.2f}x | {m['val']:.4g} ({q:.3f}x) | "
            f"{m['torch_step_us']:.0f} us ({b['torch_step_us'] / m['torch_step_us']:.2f}x) | "
            f"{m['numpy_step_us']:.0f} us ({b['numpy_step_us'] / m['numpy_step_us']:.2f}x) | "
            f"{m['seq_tok_s'] / b['seq_tok_s']:.2f}x |"
        )
    table = "\n".join(lines)
    print(table)
    (out / "report.md").write_text(table + "\n")
    (out / "report.json").write_text(json.dumps([{"setting": s, **m} for s, m in rows], indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, m in rows:
        ax.scatter(m["bundle"] / b["bundle"], m["val"], label=label)
    ax.set_xlabel("runtime bundle size (x uncompressed)")
    ax.set_ylabel(f"validation {b['metric']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "tradeoff.png", dpi=120)
    print(f"\n{out / 'report.md'}, {out / 'tradeoff.png'}")


if __name__ == "__main__":
    main()
