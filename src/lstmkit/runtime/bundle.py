"""The runtime's file format: a folder with ``manifest.json`` and ``weights.bin`` (NumPy only).

    manifest.json   {"format": "lstmkit-runtime", "version": 1,
                     "weights": {"file": "weights.bin", "nbytes": N, "sha256": "…"},
                     "tensors": {name: {"dtype": "float32"|"int8"|"uint8", "shape": [...],
                                        "offset": o, "nbytes": n}},
                     "quantized": {name: {"bits": 8|4, "codes": name + ".q", "scale": name + ".scale",
                                          "cols": C}},
                     "model": {...}, "vocab": [...] | null, "normaliser": {...} | null}
    weights.bin     the raw little-endian bytes of every tensor, each at a 64-byte aligned offset

Reading checks everything before using it: the format and version, the SHA-256 and size of
weights.bin (so a truncated or changed file is caught), each tensor's dtype, shape, offset and
size, and the shapes the model needs. Nothing is ever unpickled: JSON and raw bytes only.
``weights.bin`` is written first and ``manifest.json`` (which carries its checksum) last, each to a
temporary name and renamed, so a reader never sees a half-written bundle as valid.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

FORMAT = "lstmkit-runtime"
VERSION = 1
DTYPES = {"float32": np.float32, "int8": np.int8, "uint8": np.uint8}
ALIGN = 64


class BundleError(InputError):
    """A runtime bundle that cannot be used: one line naming the file and the problem."""


def write_bundle(
    folder: str | Path,
    arrays: dict[str, np.ndarray],
    model: dict[str, Any],
    quantized: dict[str, dict[str, Any]] | None = None,
    vocab: list[str] | None = None,
    normaliser: dict[str, Any] | None = None,
) -> Path:
    """Write a bundle (see the module docstring); returns the folder."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise BundleError(f"{folder}: exists and is not a folder; give a folder for the runtime bundle")
    folder.mkdir(parents=True, exist_ok=True)
    buf = bytearray()
    tensors: dict[str, Any] = {}
    for name, arr in arrays.items():
        dt = np.dtype(arr.dtype).name
        if dt not in DTYPES:
            raise BundleError(f"runtime bundle: tensor {name!r} has dtype {dt}; expected one of {', '.join(DTYPES)}")
        pad = (-len(buf)) % ALIGN
        buf.extend(b"\0" * pad)
        raw = np.ascontiguousarray(arr).astype(np.dtype(dt).newbyteorder("<"), copy=False).tobytes()
        tensors[name] = {"dtype": dt, "shape": list(arr.shape), "offset": len(buf), "nbytes": len(raw)}
        buf.extend(raw)
    data = bytes(buf)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "weights": {"file": "weights.bin", "nbytes": len(data), "sha256": hashlib.sha256(data).hexdigest()},
        "tensors": tensors,
        "quantized": quantized or {},
        "model": model,
        "vocab": vocab,
        "normaliser": normaliser,
    }
    # imported here: a device that only reads bundles carries runtime/ and errors.py, not atomic.py
    from .. import atomic

    atomic.write_bytes(folder / "weights.bin", data)
    atomic.write_json(folder / "manifest.json", manifest, indent=1)
    return folder


def read_bundle(folder: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """-> (manifest, arrays). Raises :class:`BundleError` for anything missing, truncated or changed."""
    folder = Path(folder)
    mpath = folder / "manifest.json"
    if not folder.is_dir():
        raise BundleError(
            f"{folder}: not a runtime bundle (no such folder); make one with 'lstmkit export RUN "
            "--format runtime --out DIR'"
        )
    try:
        man = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{mpath}: missing; {folder} is not a runtime bundle") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{mpath}: not valid JSON ({str(e).splitlines()[0]}); the file is damaged") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise BundleError(f"{mpath}: not an lstmkit runtime manifest (field 'format' is not {FORMAT!r})")
    if man.get("version") != VERSION:
        raise BundleError(f"{mpath}: unknown version {man.get('version')!r} (this runtime reads {VERSION})")
    w = man.get("weights")
    if not isinstance(w, dict) or w.get("file") != "weights.bin" or not isinstance(w.get("sha256"), str):
        raise BundleError(f"{mpath}: field 'weights' must name weights.bin with its sha256")
    wpath = folder / "weights.bin"
    try:
        data = wpath.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{wpath}: missing; export the bundle again") from None
    if len(data) != w.get("nbytes"):
        raise BundleError(
            f"{wpath}: {len(data)} bytes but the manifest says {w.get('nbytes')}; the file is truncated "
            "or from another export"
        )
    if hashlib.sha256(data).hexdigest() != w["sha256"]:
        raise BundleError(f"{wpath}: does not match the checksum in manifest.json; the file was changed or damaged")
    tensors = man.get("tensors")
    if not isinstance(tensors, dict):
        raise BundleError(f"{mpath}: field 'tensors' must be an object")
    arrays: dict[str, np.ndarray] = {}
    for name, t in tensors.items():
        where = f"{mpath}: tensor {name!r}"
        if not isinstance(t, dict) or t.get("dtype") not in DTYPES:
            raise BundleError(f"{where}: dtype must be one of {', '.join(DTYPES)}")
        shape, off, nb = t.get("shape"), t.get("offset"), t.get("nbytes")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise BundleError(f"{where}: shape must be a list of non-negative ints")
        if not isinstance(off, int) or not isinstance(nb, int) or off < 0 or off + nb > len(data):
            raise BundleError(f"{where}: offset/nbytes lie outside weights.bin")
        dt = np.dtype(DTYPES[t["dtype"]]).newbyteorder("<")
        if int(np.prod(shape, dtype=np.int64)) * dt.itemsize != nb:
            raise BundleError(f"{where}: {nb} bytes do not hold a {t['dtype']} array of shape {shape}")
        arrays[name] = np.frombuffer(data, dtype=dt, count=nb // dt.itemsize, offset=off).reshape(shape)
    if not isinstance(man.get("model"), dict):
        raise BundleError(f"{mpath}: field 'model' must be an object")
    q = man.get("quantized", {})
    if not isinstance(q, dict):
        raise BundleError(f"{mpath}: field 'quantized' must be an object")
    return man, arrays


__all__ = ["BundleError", "FORMAT", "VERSION", "read_bundle", "write_bundle"]
