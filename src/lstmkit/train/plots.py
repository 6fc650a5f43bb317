"""Learning curves of a run folder as PNG files (matplotlib, Agg)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import atomic


def _records(run_dir: Path) -> list[dict]:
    out: list[dict] = []
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(r, dict):
            out.append(r)
    return out


# what each task's baseline (Task.baseline) is, for the dashed line of the learning curves
BASELINE_NAMES = {
    "text": "unigram: character frequencies",
    "mystery": "chance among the clued suspects",
    "temporal-order": "chance",
    "reber": "chance",
    "adding": "predict the mean",
    "copy": "memoryless",
    "csv": "seasonal naive",
}
# the metric that the training loss is, per baseline key (the loss plot gets that baseline)
LOSS_AS = ("nats_per_char", "ce", "mse")


def _baseline(run_dir: Path) -> tuple[dict[str, float], str]:
    """The task's baseline metrics (result.json) and what the baseline is, ({}, "") when unknown."""
    try:
        result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
        base = {k: float(v) for k, v in result.get("baseline", {}).items() if isinstance(v, (int, float))}
    except (OSError, ValueError, AttributeError):
        return {}, ""
    try:
        task = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))["task"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        task = ""
    return base, BASELINE_NAMES.get(task, "the task's memoryless baseline")


def plot_run(run_dir: str | Path) -> list[Path]:
    """plots/loss.png (training loss) and plots/<metric>.png for every validation metric, each with
    the task's baseline (result.json's, a dashed line) where it is in the same units."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    recs = _records(run_dir)
    train = [r for r in recs if r.get("split") == "train" and "loss" in r]
    val = [r for r in recs if r.get("split") == "val"]
    written: list[Path] = []
    base, base_name = _baseline(run_dir)

    def legend_on_top(ax: Any) -> None:  # a row between the title and the plot: it hides no line
        ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False, fontsize=9, borderaxespad=0.2)

    def baseline_line(ax: object, value: float) -> None:
        ax.axhline(value, color="0.35", ls="--", lw=1.2, label=f"baseline ({base_name}): {value:.4g}")  # type: ignore[attr-defined]

    def save(fig: object, name: str) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")  # type: ignore[attr-defined]
        plt.close(fig)  # type: ignore[arg-type]
        path = run_dir / "plots" / name
        atomic.write_bytes(path, buf.getvalue())
        written.append(path)

    if train:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], lw=1, label="train loss")
        if val and "loss" in val[0]:
            ax.plot([r["step"] for r in val], [r["loss"] for r in val], lw=1.5, label="validation loss")
        loss_base = next((base[k] for k in LOSS_AS if k in base), None)
        if loss_base is not None and loss_base > 0:
            baseline_line(ax, loss_base)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        losses = [r["loss"] for r in train if r["loss"] > 0] + ([loss_base] if loss_base else [])
        if losses and max(losses) > 20 * min(losses):  # log only where the loss spans decades
            ax.set_yscale("log")
        ax.margins(y=0.08)
        ax.grid(alpha=0.3)
        legend_on_top(ax)
        ax.set_title(run_dir.name, pad=26)
        save(fig, "loss.png")
    keys = sorted({k for r in val for k, v in r.items() if isinstance(v, (int, float)) and k not in ("step", "time")})
    for k in keys:
        pts = [(r["step"], r[k]) for r in val if k in r]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=1.2, label=f"validation {k}")
        if k in base:
            baseline_line(ax, base[k])
            ax.margins(y=0.08)
            legend_on_top(ax)
        ax.set_xlabel("step")
        ax.set_ylabel(f"validation {k}")
        ax.grid(alpha=0.3)
        ax.set_title(f"{run_dir.name}: {k}", pad=26 if k in base else None)
        save(fig, f"{k}.png")
    return written
