"""Crash-safe file writes: the one way lstmkit writes a file that someone else may read.

The bytes go to a temporary file in the same folder (``.<name>.tmp-<pid>``), which is flushed and
fsynced, then renamed over the target (``os.replace`` is atomic on POSIX), and the folder is fsynced
so that the rename itself survives a power cut. A reader therefore sees the old file or the new one,
never half of one; a killed writer leaves at most a temporary file (see :data:`TEMP_GLOB`).

Standard library only: ``lstmkit.runtime`` (NumPy, no torch) writes its bundles through it too.

For the crash tests, :data:`before_rename` may be set to a callable; it runs once the temporary file
holds half of the bytes (flushed), before the rest is written and before the rename. Production code
never sets it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["TEMP_GLOB", "before_rename", "write_bytes", "write_json", "write_text"]

TEMP_GLOB = ".*.tmp-*"  # the temporary files a killed writer may leave behind

# A test hook (see the module docstring): called with the temporary path when half the bytes are in it.
before_rename: Callable[[Path], None] | None = None


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: some file systems cannot open a folder)."""
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


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (creating the parent folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            half = len(data) // 2
            f.write(data[:half])
            if before_rename is not None:
                f.flush()
                before_rename(tmp)
            f.write(data[half:])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(path.parent)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as JSON (sorted keys, a final newline) to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=indent, sort_keys=True) + "\n")
