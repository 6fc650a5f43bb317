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

from pathlib import Path
from typing import Any

from ..errors import InputError
from .distill import distill_run
from .lowrank import lowrank_run
from .prune import prune_run
from .quantize import quantize_run

METHODS = ("quantize", "prune", "lowrank", "distill")


def compress(run: Any, method: str, out: str | Path, **options: Any) -> dict[str, Any]:
    """Compress ``run`` with ``method`` into the run folder ``out``; returns its result.json."""
    fns = {"quantize": quantize_run, "prune": prune_run, "lowrank": lowrank_run, "distill": distill_run}
    if method not in fns:
        raise InputError(f"compress: method must be one of {', '.join(METHODS)}, got {method!r}")
    try:
        return fns[method](run, out, **options)  # type: ignore[operator, no-any-return]
    except TypeError as e:
        if "unexpected keyword" in str(e):
            raise InputError(f"compress: {method} does not take that option ({e})") from None
        raise


__all__ = [
    "METHODS",
    "compress",
    "distill_run",
    "lowrank_run",
    "prune_run",
    "quantize_run",
]
