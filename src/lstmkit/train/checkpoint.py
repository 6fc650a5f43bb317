"""Crash-safe files of a run folder.

Every file is written to a temporary name in the same folder, flushed to disk, then renamed over
the old one (``os.replace`` is atomic on POSIX), so a reader sees the old file or the new one,
never half of one. A checkpoint is one safetensors file under ``train_state/`` holding the model,
the optimizer and the RNG states; ``train_state.json`` points at the newest complete one (with its
SHA-256) and is replaced last, so a crash at any moment leaves the previous checkpoint in force.
Loading never unpickles: tensors come from safetensors, everything else from JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import InputError

STATE_VERSION = 1


class RunError(InputError):
    """A run folder or file that cannot be used: one line naming the file and the problem."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_writes = 0


def _fault_point(tmp: Path) -> None:
    """Fault injection for the crash tests: with LSTMKIT_CRASH_AT_WRITE=N the process kills itself
    (SIGKILL) on its N-th file write, after the temporary file is half written and before the rename."""
    global _writes
    target = os.environ.get("LSTMKIT_CRASH_AT_WRITE")
    if not target:
        return
    _writes += 1
    if _writes == int(target):
        os.kill(os.getpid(), signal.SIGKILL)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            half = len(data) // 2
            f.write(data[:half])
            f.flush()
            _fault_point(tmp)
            f.write(data[half:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path | str, what: str) -> Any:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunError(f"{path}: {what} is missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: cannot read {what} ({e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RunError(f"{path}: {what} is not valid JSON ({e.msg} at line {e.lineno}); the file is damaged") from None


def save_tensors(path: Path | str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """Atomically write a safetensors file; returns its SHA-256."""
    seen: set[int] = set()
    plain: dict[str, torch.Tensor] = {}
    for k, v in tensors.items():
        v = v.detach().cpu()
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen:  # tied weights are stored twice
            v = v.clone(memory_format=torch.contiguous_format)
        plain[k] = v.contiguous()
        seen.add(ptr)
    data = st_save(plain, metadata=metadata)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_tensors(
    path: Path | str, what: str, sha256: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file (never executes code); check its SHA-256 when given."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RunError(f"{path}: {what} is missing") from None
    except OSError as e:
        raise RunError(f"{path}: cannot read {what} ({e})") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise RunError(f"{path}: {what} does not match its recorded checksum; the file is damaged or was changed")
    try:
        tensors = st_load(data)
        meta: dict[str, str] = {}
        if len(data) >= 8:
            n = int.from_bytes(data[:8], "little")
            header = json.loads(data[8 : 8 + n].decode("utf-8"))
            meta = dict(header.get("__metadata__", {}) or {})
    except (SafetensorError, ValueError, UnicodeDecodeError, json.JSONDecodeError, OverflowError) as e:
        raise RunError(
            f"{path}: {what} is not a valid safetensors file ({str(e).splitlines()[0]}); it is truncated or damaged"
        ) from None
    return tensors, meta


# ----------------------------------------------------------------------------- optimizer state


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = val
            else:
                scalars[f"{idx}.{key}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        if not name.startswith("optim."):
            continue
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = t
    for name, val in info.get("scalars", {}).items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = val
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})
