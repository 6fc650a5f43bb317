"""Measured dispatch: for a plain, untraced call the faster of torch's LSTM and the fused kernels,
timed once on this machine and remembered.

Variants and traces have one compiled path (the fused kernels), so nothing is measured for them;
a plain configuration can run either torch's fused LSTM (oneDNN) or lstmkit's kernels, and which
is faster depends on the shapes, the gradient and the machine (e.g. at T = 200, B = 8, H = 128
inference the kernels ran 1.7x faster than nn.LSTM on the project's 2-core machine, at train-large
they tie). The first call of a configuration runs both on random inputs of its shape (forward, and
backward when gradients are wanted, through ``torch.autograd.grad`` so that no ``.grad`` is
touched and no random number of the caller is drawn), a few alternating repetitions each, and
takes the fused kernels only when their median is at least 5 % faster. The choice is written to a
JSON file so that later runs on this machine make the same choice without measuring (results of
a training run then do not depend on timing noise): ``~/.cache/lstmkit/dispatch.json`` or
``$LSTMKIT_DISPATCH_CACHE``. Each entry keeps the two medians.

``LSTMKIT_DISPATCH=torch`` turns measuring off (plain calls run torch's LSTM, the rule without
measurements); the test suite sets it so that its expectations do not depend on the machine.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .lstm import LSTM

MARGIN = 0.95  # fused must take at most this share of torch's time
REPS = 3
# The measurement runs at most this many steps. The ratio still moves below it (Xeon VM, inference,
# nn.LSTM / fused at T 16, 32, 64, 100: B 32 H 256 1.06, 1.04, 1.13, 1.10; B 64 H 512 1.02, 1.00,
# 1.08, 1.07): at 32 steps the fixed costs of a call hid a 10 % gain of the kernels at T = 100.
MAX_STEPS = 64

_lock = threading.Lock()
_memory: dict[str, dict[str, Any]] = {}
_loaded_from: Path | None = None


def mode() -> str:
    m = os.environ.get("LSTMKIT_DISPATCH", "measure").strip().lower() or "measure"
    if m not in ("measure", "torch"):
        raise ValueError(f"LSTMKIT_DISPATCH must be 'measure' or 'torch', got {m!r}")
    return m


def cache_path() -> Path:
    p = os.environ.get("LSTMKIT_DISPATCH_CACHE")
    return Path(p) if p else Path.home() / ".cache" / "lstmkit" / "dispatch.json"


def _machine() -> str:
    """The machine, torch and the kernels' build (a new kernel version measures afresh)."""
    from ..kernels import _build

    return f"{_build._cpu_signature()}|torch {torch.__version__}|kernels {_build.build_key(_build._FLAG_SETS[0])}"


def key_of(lstm: LSTM, x: torch.Tensor, grad: bool) -> str:
    T = x.shape[0] if not lstm.batch_first or x.dim() == 2 else x.shape[1]
    if x.dim() == 2:
        B = 1
    else:
        B = x.shape[0] if lstm.batch_first else x.shape[1]
    tb = "1" if T == 1 else ("<=16" if T <= 16 else ("<=64" if T <= 64 else ">64"))
    return (
        f"{str(x.dtype).replace('torch.', '')} grad={int(grad)} threads={torch.get_num_threads()} T{tb} B={B} "
        f"I={lstm.input_size} H={lstm.hidden_size} P={lstm.proj_size} L={lstm.num_layers} "
        f"D={lstm.num_directions} bias={int(lstm.bias)}"
    )


def _load() -> None:
    global _loaded_from
    path = cache_path()
    if _loaded_from == path:
        return
    _memory.clear()
    _loaded_from = path
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if isinstance(data, dict) and data.get("machine") == _machine() and isinstance(data.get("choices"), dict):
        _memory.update({k: v for k, v in data["choices"].items() if isinstance(v, dict) and "path" in v})


def _save() -> None:
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"machine": _machine(), "choices": _memory}, indent=1, sort_keys=True))
        os.replace(tmp, path)  # atomic: a reader sees the old file or the new one
    except OSError:
        pass  # a read-only home: the choice is still remembered in this process


def _measure(lstm: LSTM, x: torch.Tensor, grad: bool) -> dict[str, float]:
    """Median seconds of each path on random inputs of x's shape (at most MAX_STEPS steps)."""
    gen = torch.Generator().manual_seed(0)
    if x.dim() == 3 and x.shape[0 if not lstm.batch_first else 1] > MAX_STEPS:
        x = x.narrow(1 if lstm.batch_first else 0, 0, MAX_STEPS)
    xr = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
    params = [p for p in lstm.parameters() if p.requires_grad]
    saved = lstm.requested_backend, lstm.backend, lstm.training
    times: dict[str, list[float]] = {"torch": [], "fused": []}
    try:
        lstm.training = False  # no dropout: no random numbers drawn
        for rep in range(REPS + 1):
            for path in ("torch", "fused"):
                lstm.requested_backend = path
                xi = xr.detach().requires_grad_(grad)
                t0 = time.perf_counter()
                if grad:
                    with torch.enable_grad():
                        y, _ = lstm(xi)
                        torch.autograd.grad(y.sum(), [xi, *params])
                else:
                    with torch.no_grad():
                        lstm(xi)
                if rep > 0:  # the first round warms up (and builds the kernels)
                    times[path].append(time.perf_counter() - t0)
    finally:
        lstm.requested_backend, lstm.backend, lstm.training = saved
    return {k: statistics.median(v) for k, v in times.items()}


def plain_choice(lstm: LSTM, x: torch.Tensor, grad: bool) -> str:
    """"torch" or "fused" for a plain untraced call that both can run."""
    if mode() == "torch":
        return "torch"
    key = key_of(lstm, x, grad)
    with _lock:
        _load()
        hit = _memory.get(key)
        if hit is not None:
            return str(hit["path"])
        t = _measure(lstm, x, grad)
        path = "fused" if t["fused"] <= MARGIN * t["torch"] else "torch"
        _memory[key] = {"path": path, "torch_s": t["torch"], "fused_s": t["fused"]}
        _save()
        return path


def choices() -> dict[str, dict[str, Any]]:
    """The remembered choices of this machine (key -> path and the measured medians)."""
    with _lock:
        _load()
        return dict(_memory)


def forget() -> None:
    """Drop the remembered choices (the file too): the next plain calls measure again."""
    global _loaded_from
    with _lock:
        _memory.clear()
        _loaded_from = None
        try:
            cache_path().unlink()
        except OSError:
            pass
