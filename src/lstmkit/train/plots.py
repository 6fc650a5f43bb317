"""Learning curves of a run folder as PNG files (matplotlib, Agg)."""

from __future__ import annotations

import json
from pathlib import Path

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


def plot_run(run_dir: str | Path) -> list[Path]:
    """plots/loss.png (training loss) and plots/<metric>.png for every validation metric."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    recs = _records(run_dir)
    train = [r for r in recs if r.get("split") == "train" and "loss" in r]
    val = [r for r in recs if r.get("split") == "val"]
    written: list[Path] = []

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
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title(run_dir.name)
        save(fig, "loss.png")
    keys = sorted({k for r in val for k, v in r.items() if isinstance(v, (int, float)) and k not in ("step", "time")})
    for k in keys:
        pts = [(r["step"], r[k]) for r in val if k in r]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=1.2)
        ax.set_xlabel("step")
        ax.set_ylabel(f"validation {k}")
        ax.grid(alpha=0.3)
        ax.set_title(f"{run_dir.name}: {k}")
        save(fig, f"{k}.png")
    return written
