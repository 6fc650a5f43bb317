"""Build and cache of the compiled fused kernels (one torch C++ extension).

The extension is compiled on first use with ``torch.utils.cpp_extension.load`` into a build folder
named by a hash of everything that changes the binary: the sources, the flags, the torch and Python
versions and the CPU's feature flags (the build uses ``-march=native``, so a binary is only reused
on the kind of CPU that built it). Two processes that build at once share torch's file lock on that
folder. Nothing is built at import time of lstmkit.

Environment:
    LSTMKIT_NO_KERNELS=1        pretend no compiler exists (the kernels report unavailable)
    LSTMKIT_KERNEL_CACHE=DIR    where build folders go (default ~/.cache/lstmkit/kernels)
    LSTMKIT_KERNEL_VERBOSE=1    show the compiler's output
    LSTMKIT_KERNEL_SIMD=avx2    on a CPU with AVX-512 or AVX-VNNI, build the code of an AVX2 + FMA
                                CPU instead (8 float lanes instead of 16, vpmaddubsw instead of
                                vpdpbusd: for comparing the two, and for testing the AVX2 code on
                                such a CPU); a separate build folder
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from types import ModuleType

import torch

# -fvisibility=hidden: the module exports only its init function, so its inline and template
# functions are never resolved to another loaded copy of the kernels (e.g. an older build).
_FLAG_SETS: tuple[tuple[str, ...], ...] = (
    ("-O3", "-march=native", "-fopenmp", "-fvisibility=hidden"),
    # a compiler that knows neither -march=native nor OpenMP still gets a working (slower) kernel
    ("-O3",),
)

_lock = threading.Lock()
_module: ModuleType | None = None
_error: str | None = None
_tried = False


def _src_dir() -> Path:
    return Path(__file__).resolve().parent


def _sources() -> list[Path]:
    """The translation units of the extension: every .cpp file of this folder."""
    return sorted(_src_dir().glob("*.cpp"))


def _hashed_files() -> list[Path]:
    """Everything the binary is built from (every .cpp and .h of this folder): the build key covers
    them all, so a change to any source or header builds anew."""
    return sorted([*_src_dir().glob("*.cpp"), *_src_dir().glob("*.h")])


def _cpu_signature() -> str:
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.machine()}|{platform.processor()}|{flags}"


def cache_root() -> Path:
    env = os.environ.get("LSTMKIT_KERNEL_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "lstmkit" / "kernels"


def _build_dir(key: str) -> Path:
    """The build folder of one source hash; a temporary folder if the cache is not writable."""
    d = cache_root() / key
    try:
        d.mkdir(parents=True, exist_ok=True)
        return d
    except OSError:
        d = Path(tempfile.gettempdir()) / f"lstmkit-kernels-{os.getuid() if hasattr(os, 'getuid') else 0}" / key
        d.mkdir(parents=True, exist_ok=True)
        return d


def build_key(flags: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for path in _hashed_files():
        h.update(path.name.encode())
        h.update(path.read_bytes())
    h.update(" ".join(flags).encode())
    h.update(torch.__version__.encode())
    h.update(sys.version.encode())
    h.update(_cpu_signature().encode())
    return h.hexdigest()[:16]


def _find_ninja() -> bool:
    """Make sure `ninja` is on PATH (a venv's bin folder is not, when python is run by path)."""
    if shutil.which("ninja"):
        return True
    candidates = [str(Path(sys.executable).parent)]
    try:
        import ninja  # type: ignore[import-not-found]

        candidates.insert(0, str(ninja.BIN_DIR))
    except Exception:
        pass
    for d in candidates:
        if (Path(d) / "ninja").exists():
            os.environ["PATH"] = d + os.pathsep + os.environ.get("PATH", "")
            return True
    return False


def _compiler() -> str | None:
    cxx = os.environ.get("CXX", "c++")
    return shutil.which(cxx) or shutil.which("g++") or shutil.which("clang++")


def _simd_flags() -> tuple[str, ...]:
    v = os.environ.get("LSTMKIT_KERNEL_SIMD", "").strip().lower()
    if v in ("", "native", "auto"):
        return ()
    if v == "avx2":  # -march=native minus AVX-512 and AVX-VNNI: the code an AVX2 + FMA CPU gets
        return ("-mno-avx512f", "-mno-avxvnni")
    raise RuntimeError(f"LSTMKIT_KERNEL_SIMD={v!r} is not known: use 'avx2' or leave it unset")


def _build() -> ModuleType:
    from torch.utils import cpp_extension

    if _compiler() is None:
        raise RuntimeError("no C++ compiler found (install g++ or set CXX)")
    if not _find_ninja():
        raise RuntimeError("the ninja build tool is missing (pip install ninja)")
    verbose = os.environ.get("LSTMKIT_KERNEL_VERBOSE", "") not in ("", "0")
    sources = [str(p) for p in _sources()]
    last: Exception | None = None
    for flags in _FLAG_SETS:
        flags = flags + _simd_flags()
        key = build_key(flags)
        build_dir = _build_dir(key)
        name = f"lstmkit_fused_{key}"
        if not any(build_dir.glob(f"{name}*.so")):
            print("building lstmkit fused kernels (first use, ~1 min)…", file=sys.stderr, flush=True)
        ldflags = ["-fopenmp"] if "-fopenmp" in flags else []
        try:
            return cpp_extension.load(
                name=name,
                sources=sources,
                extra_cflags=list(flags),
                extra_ldflags=ldflags,
                extra_include_paths=[str(_src_dir())],
                build_directory=str(build_dir),
                verbose=verbose,
            )
        except Exception as e:  # compiler error, missing headers, ...
            last = e
            # Retry with plain flags only when the flags themselves were refused.
            msg = str(e)
            if not any(w in msg for w in ("march", "openmp", "omp.h", "unrecognized")):
                break
    assert last is not None
    raise last


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    first = next((ln for ln in text if "error" in ln.lower()), text[0] if text else type(e).__name__)
    return f"{type(e).__name__}: {first.strip()[:300]}"


def load() -> ModuleType | None:
    """The compiled module, building it on first call; None (and reason() set) if it cannot be built."""
    global _module, _error, _tried
    if _tried:
        return _module
    with _lock:
        if _tried:
            return _module
        if os.environ.get("LSTMKIT_NO_KERNELS", "") not in ("", "0"):
            _error = "disabled by the environment variable LSTMKIT_NO_KERNELS"
        else:
            try:
                _module = _build()
            except Exception as e:
                _error = "the fused kernels could not be built: " + _one_line(e)
                _module = None
        _tried = True
    return _module


def reason() -> str | None:
    return _error


def _reset_for_tests() -> None:
    """Forget the cached result so that the next load() looks again (tests only)."""
    global _module, _error, _tried
    with _lock:
        _module, _error, _tried = None, None, False
