"""Compress a trained run into a new run folder: quantize, prune, low-rank, distill.

    from lstmkit.compress import compress
    compress("runs/mystery", "quantize", "runs/mystery-int8", bits=8)
    compress("runs/mystery", "prune", "runs/mystery-p50", sparsity=0.5, steps=200)
    compress("runs/mystery", "prune", "runs/mystery-u50", units=0.5, steps=200)
    compress("runs/mystery", "lowrank", "runs/mystery-lr", energy=0.9, steps=200)
    compress("runs/mystery", "distill", "runs/mystery-student", hidden_size=32, steps=500)

Every result is a run folder that evaluate, sample, explore and export accept, and that
:func:`lstmkit.train.load_run` loads (see :mod:`lstmkit.compress.common` for what config.json records,
and :mod:`lstmkit.train.weights` for how quantized and low-rank weights become float weights again).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..outdir import check_out_folder
from ..train import Run
from ..train.evaluate import evaluate_model
from .common import as_run
from .distill import distill_run
from .lowrank import lowrank_run
from .prune import prune_run
from .quantize import quantize_run

METHODS = ("quantize", "prune", "lowrank", "distill")


def compress(run: Any, method: str, out: str | Path, *, force: bool = False, **options: Any) -> dict[str, Any]:
    """Compress ``run`` with ``method`` into the run folder ``out``; returns its result.json plus
    ``"before"`` and ``"after"``: the weight file's bytes, the parameters and the test metrics of the
    source run and of the new one (see :func:`compare_lines`).

    ``out`` must be a new or empty folder (:func:`lstmkit.outdir.check_out_folder`); ``force`` writes
    into a folder that holds other files."""
    fns = {"quantize": quantize_run, "prune": prune_run, "lowrank": lowrank_run, "distill": distill_run}
    if method not in fns:
        raise InputError(f"compress: method must be one of {', '.join(METHODS)}, got {method!r}")
    check_out_folder(out, "compress", force=force)
    src = as_run(run)
    try:
        result: dict[str, Any] = fns[method](src, out, **options)  # type: ignore[operator]
    except TypeError as e:
        if "unexpected keyword" in str(e):
            raise InputError(f"compress: {method} does not take that option ({e})") from None
        raise
    result["before"] = _facts(src.path, result.get("test"), src)
    result["after"] = _facts(Path(out), result.get("test"), None)
    return result


def _stored_values(weights: Path) -> int:
    """The number of parameters stored in a safetensors file (from its JSON header): an int8 or int4
    code counts as one, the scales of the codes do not count."""
    with open(weights, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__" and not k.endswith(".scale"))


def _facts(path: Path, test: dict[str, float] | None, src: Run | None) -> dict[str, Any]:
    """Bytes and stored values of ``path``'s model.safetensors and its test metrics (for a source
    run: from its result.json, else evaluated now; for the new run: ``test``)."""
    weights = path / "model.safetensors"
    facts: dict[str, Any] = {"weight_bytes": weights.stat().st_size, "params": _stored_values(weights)}
    if src is None:
        facts["test"] = dict(test or {})
        return facts
    saved = path / "result.json"
    metrics = None
    if saved.is_file():
        try:
            metrics = json.loads(saved.read_text(encoding="utf-8")).get("test")
        except (OSError, ValueError):
            metrics = None
    if not isinstance(metrics, dict) or not metrics:
        metrics = evaluate_model(src.model.eval(), src.task, "test", 256)
    facts["test"] = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    return facts


def compare_lines(result: dict[str, Any]) -> list[str]:
    """What compress changed, for a person: sizes before and after, and the test metrics' change."""
    b, a = result.get("before"), result.get("after")
    if not b or not a:
        return []
    size = (
        f"size: {_mb(b['weight_bytes'])} -> {_mb(a['weight_bytes'])} of weights on disk "
        f"({a['weight_bytes'] / b['weight_bytes']:.2f}x)"
    )
    if result.get("compress", {}).get("method") != "quantize":  # quantizing keeps every parameter
        size += f"; parameters {b['params']:,} -> {a['params']:,}"
    lines = [size]
    changes = []
    for k, v in a.get("test", {}).items():
        if k in b.get("test", {}):
            old = b["test"][k]
            changes.append(f"{k} {old:.4g} -> {v:.4g} ({v - old:+.3g})")
    if changes:
        lines.append("test: " + ", ".join(changes))
    return lines


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


__all__ = [
    "METHODS",
    "compare_lines",
    "compress",
    "distill_run",
    "lowrank_run",
    "prune_run",
    "quantize_run",
]
