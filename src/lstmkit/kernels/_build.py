"""Build and cache of the compiled fused kernels (one torch C++ extension).

Set-up builds them (``make setup`` runs ``python -m lstmkit.kernels build``), so that no user
command waits for the compiler. A build folder is named by a hash of everything that changes the
binary: the sources, the flags, the torch and Python versions and the CPU's feature flags (the
build uses ``-march=native``, so a binary is only reused on the kind of CPU that built it). The
folder holds its own copy of the sources (``src/``) and is built from there, so its ninja file names
only paths inside the folder: two installs of lstmkit (two clones, two virtual environments with the
same torch) that share the cache share one build and never make each other rebuild. A finished
build writes ``build.json``; a folder with it and the module is loaded directly, without running
the build tool. When a build does happen, one line on stderr says why (no cached build for these
sources, this torch, ...) and how long it took. Two processes that build at once share torch's file
lock on the folder. Nothing is built at import time of lstmkit.

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
import importlib.util
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

# -fvisibility=hidden: the module exports only its init function, so its inline and template
# functions are never resolved to another loaded copy of the kernels (e.g. an older build).
_FLAG_SETS: tuple[tuple[str, ...], ...] = (
    ("-O3", "-march=native", "-fopenmp", "-fvisibility=hidden"),
    # a compiler that knows neither -march=native nor OpenMP still gets a working (slower) kernel
    ("-O3",),
)
# The layout of a build folder (part of the key): 2 = sources copied into src/, build.json when done.
_LAYOUT = "2"
_PREFIX = "lstmkit_fused"
_INFO = "build.json"

_lock = threading.Lock()
_module: ModuleType | None = None
_error: str | None = None
_tried = False


@dataclass
class BuildReport:
    """What the last :func:`build_extension` call did: ``built`` False when it loaded a cached build."""

    name: str
    folder: Path
    built: bool
    why: str = ""
    seconds: float = 0.0


last_build: BuildReport | None = None


def _src_dir() -> Path:
    return Path(__file__).resolve().parent


def _sources(src_dir: Path | None = None) -> list[Path]:
    """The translation units of the extension: every .cpp file of the folder."""
    return sorted((src_dir or _src_dir()).glob("*.cpp"))


def _hashed_files(src_dir: Path | None = None) -> list[Path]:
    """Everything the binary is built from (every .cpp and .h of the folder): the build key covers
    them all, so a change to any source or header builds anew."""
    d = src_dir or _src_dir()
    return sorted([*d.glob("*.cpp"), *d.glob("*.h")])


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
    """The build folder of one key; a temporary folder if the cache is not writable."""
    d = cache_root() / key
    try:
        d.mkdir(parents=True, exist_ok=True)
        return d
    except OSError:
        d = Path(tempfile.gettempdir()) / f"lstmkit-kernels-{os.getuid() if hasattr(os, 'getuid') else 0}" / key
        d.mkdir(parents=True, exist_ok=True)
        return d


def _facts(flags: tuple[str, ...], src_dir: Path | None = None) -> dict[str, str]:
    """What a build depends on, one entry each (hashed into the key; compared to say why a build runs)."""
    h = hashlib.sha256()
    for path in _hashed_files(src_dir):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return {
        "sources": h.hexdigest()[:16],
        "flags": " ".join(flags),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "python_build": sys.version,
        "cpu": hashlib.sha256(_cpu_signature().encode()).hexdigest()[:16],
        "layout": _LAYOUT,
    }


def build_key(flags: tuple[str, ...], src_dir: Path | None = None) -> str:
    h = hashlib.sha256(json.dumps(_facts(flags, src_dir), sort_keys=True).encode())
    return h.hexdigest()[:16]


_WHAT = {
    "sources": "these kernel sources",
    "torch": "torch {torch}",
    "python": "Python {python}",
    "python_build": "this Python build",
    "cpu": "this CPU",
    "flags": "the flags {flags}",
}


def why_build(facts: dict[str, str], root: Path, prefix: str) -> str:
    """Why a build is needed, in words: the facts that differ from the closest earlier build of
    ``prefix`` in the cache ``root`` (e.g. ``no cached build for torch 2.13.0``)."""
    best: tuple[int, float, list[str]] | None = None
    for info in root.glob(f"*/{_INFO}"):
        try:
            old = json.loads(info.read_text(encoding="utf-8"))
            if old.get("prefix") != prefix or not isinstance(old.get("facts"), dict):
                continue
            built = float(old.get("built", 0.0))
        except (OSError, ValueError, TypeError):
            continue
        diff = [k for k in _WHAT if old["facts"].get(k) != facts.get(k)]
        if "python" in diff and "python_build" in diff:
            diff.remove("python_build")
        cand = (len(diff), -built, diff)
        if diff and (best is None or cand[:2] < best[:2]):
            best = cand
    if best is None:
        return f"no cached build yet in {root}"
    return "no cached build for " + " and ".join(_WHAT[k].format(**facts) for k in best[2])


def _copy_sources(src_dir: Path, dest: Path, files: list[Path]) -> None:
    """Copy ``files`` into ``dest``, leaving a file that is already there with the same bytes
    untouched (its time stamp is what the build tool compares); each write is atomic."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in files:
        data = path.read_bytes()
        target = dest / path.name
        try:
            if target.read_bytes() == data:
                continue
        except OSError:
            pass
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{path.name}.tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)


def _import(name: str, path: Path) -> ModuleType:
    """Load the built module ``name`` from ``path`` (as torch.utils.cpp_extension.load does)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the built module {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_info(folder: Path, info: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{_INFO}.tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1)
    os.replace(tmp, folder / _INFO)


def build_extension(
    src_dir: Path,
    prefix: str,
    flags: tuple[str, ...],
    ldflags: tuple[str, ...] = (),
    *,
    verbose: bool = False,
    label: str = "the fused kernels",
) -> ModuleType:
    """The extension built from every .cpp (and .h) of ``src_dir``, from the cache when it holds a
    finished build for the same key; otherwise built (in the cache folder, from a copy of the sources)
    with one line on stderr saying why and how long it took. Sets :data:`last_build`."""
    global last_build
    from torch.utils import cpp_extension

    facts = _facts(flags, src_dir)
    key = build_key(flags, src_dir)
    folder = _build_dir(key)
    name = f"{prefix}_{key}"
    so = folder / f"{name}.so"
    if so.exists() and (folder / _INFO).exists():
        module = _import(name, so)
        last_build = BuildReport(name, folder, built=False)
        return module
    why = why_build(facts, folder.parent, prefix)
    start = f"lstmkit: building {label} ({why}; about 1-2 min)..."
    print(start, end="\n" if verbose else "", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        files = _hashed_files(src_dir)
        _copy_sources(src_dir, folder / "src", files)
        local = folder / "src"
        module = cpp_extension.load(
            name=name,
            sources=[str(local / p.name) for p in files if p.suffix == ".cpp"],
            extra_cflags=list(flags),
            extra_ldflags=list(ldflags),
            extra_include_paths=[str(local)],
            build_directory=str(folder),
            verbose=verbose,
        )
    except BaseException:
        print(" failed", file=sys.stderr, flush=True)
        raise
    seconds = time.perf_counter() - t0
    _write_info(folder, {"prefix": prefix, "name": name, "facts": facts, "built": time.time(), "seconds": seconds,
                         "built_from": str(src_dir)})  # fmt: skip
    print(f"{'' if verbose else ' '}done in {seconds:.0f} s ({folder})", file=sys.stderr, flush=True)
    last_build = BuildReport(name, folder, built=True, why=why, seconds=seconds)
    return module


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
    if _compiler() is None:
        raise RuntimeError("no C++ compiler found (install g++ or set CXX)")
    if not _find_ninja():
        raise RuntimeError("the ninja build tool is missing (pip install ninja)")
    verbose = os.environ.get("LSTMKIT_KERNEL_VERBOSE", "") not in ("", "0")
    last: Exception | None = None
    for flags in _FLAG_SETS:
        flags = flags + _simd_flags()
        ldflags = ("-fopenmp",) if "-fopenmp" in flags else ()
        try:
            return build_extension(_src_dir(), _PREFIX, flags, ldflags, verbose=verbose)
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
