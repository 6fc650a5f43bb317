"""The kernels' build cache (issue 20 item 1): two installs of lstmkit that share one cache share one
build and never make each other rebuild; a build says why it happens and how long it took.

The builds here are of a tiny extension (a module with one constant, no torch headers: about a
second) made by the same code path as the real kernels (``_build.build_extension``); each install is
a copy of the lstmkit sources in its own folder, run in its own process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lstmkit.kernels import _build

SRC = Path(__file__).resolve().parents[1] / "src"

TINY_CPP = r"""
// A tiny extension for the build-cache tests: a Python module with one constant.
#include <Python.h>
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define STR2(a) #a
#define STR(a) STR2(a)
static struct PyModuleDef tiny = {PyModuleDef_HEAD_INIT, STR(TORCH_EXTENSION_NAME), nullptr, -1, nullptr};
PyMODINIT_FUNC CAT(PyInit_, TORCH_EXTENSION_NAME)(void) {
    PyObject* m = PyModule_Create(&tiny);
    if (m) PyModule_AddIntConstant(m, "answer", ANSWER);
    return m;
}
"""

BUILD = """
import sys
from pathlib import Path
import lstmkit.kernels._build as b
assert b.__file__.startswith(sys.argv[1]), b.__file__  # this install's lstmkit, not another's
m = b.build_extension(Path(sys.argv[1]) / "tiny", "tinyext", ("-O0",), label="the tiny extension")
print(m.answer, b.last_build.built, b.last_build.folder)
"""

pytestmark = pytest.mark.skipif(_build._compiler() is None or not _build._find_ninja(), reason="no compiler or ninja")


def _install(root: Path, answer: int = 42) -> Path:
    """A copy of lstmkit's sources and of the tiny extension's, as a second clone would have."""
    shutil.copytree(SRC / "lstmkit", root / "lstmkit", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "tiny").mkdir()
    (root / "tiny" / "tiny.cpp").write_text(TINY_CPP)
    (root / "tiny" / "answer.h").write_text(f"#define ANSWER {answer}\n")
    (root / "tiny" / "tiny.cpp").write_text('#include "answer.h"\n' + TINY_CPP)
    return root


def _build_in(install: Path, cache: Path) -> tuple[int, bool, Path, str]:
    env = {**os.environ, "PYTHONPATH": str(install), "LSTMKIT_KERNEL_CACHE": str(cache)}
    r = subprocess.run(
        [sys.executable, "-c", BUILD, str(install)], env=env, capture_output=True, text=True, timeout=600, cwd=install
    )
    assert r.returncode == 0, r.stderr[-3000:]
    answer, built, folder = r.stdout.split()
    return int(answer), built == "True", Path(folder), r.stderr


def _link_count(folder: Path) -> int:
    """How often ninja linked the module in this folder (its log keeps one line per output built)."""
    log = folder / ".ninja_log"
    return sum(line.rstrip().split("\t")[3].endswith(".so") for line in log.read_text().splitlines()[1:])


def test_two_installs_share_one_build(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    a, b = _install(tmp_path / "a"), _install(tmp_path / "b")
    answer, built, folder, err = _build_in(a, cache)
    assert answer == 42 and built
    # one line: why, and how long it took
    assert err.count("\n") == 1, err
    assert err.startswith(f"lstmkit: building the tiny extension (no cached build yet in {cache}")
    assert " done in " in err and f"({folder})" in err
    so = next(folder.glob("tinyext_*.so"))
    stamp = so.stat().st_mtime_ns
    assert _link_count(folder) == 1
    ninja_file = (folder / "build.ninja").read_text()
    assert str(a) not in ninja_file  # the build file names only the cache's own copy of the sources
    # the second install, then the first again, then the second: no build, no line, the same module file
    for install in (b, a, b):
        answer, built, folder2, err = _build_in(install, cache)
        assert (answer, built, folder2, err) == (42, False, folder, "")
    assert so.stat().st_mtime_ns == stamp and _link_count(folder) == 1
    assert (folder / "build.ninja").read_text() == ninja_file
    info = json.loads((folder / "build.json").read_text())
    assert info["prefix"] == "tinyext" and info["facts"]["torch"] == __import__("torch").__version__


def test_changed_sources_build_anew_and_say_why(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    a, b = _install(tmp_path / "a"), _install(tmp_path / "b", answer=7)  # b changed a header
    answer, built, folder_a, _ = _build_in(a, cache)
    assert (answer, built) == (42, True)
    answer, built, folder_b, err = _build_in(b, cache)
    assert (answer, built) == (7, True)
    assert "building the tiny extension (no cached build for these kernel sources;" in err
    # both builds stay: neither install rebuilds after the other
    assert folder_b != folder_a and _build_in(a, cache)[:3] == (42, False, folder_a)
    assert _build_in(b, cache)[:3] == (7, False, folder_b)


def test_why_names_what_changed(tmp_path: Path) -> None:
    facts = {"sources": "s1", "flags": "-O3", "torch": "2.13.0", "python": "3.11.7", "python_build": "3.11.7 x",
             "cpu": "c1", "layout": "2"}  # fmt: skip

    def cached(name: str, built: float = 1.0, **changed: str) -> None:
        (tmp_path / name).mkdir()
        info = {"prefix": "p", "facts": {**facts, **changed}, "built": built}
        (tmp_path / name / "build.json").write_text(json.dumps(info))

    assert _build.why_build(facts, tmp_path, "p") == f"no cached build yet in {tmp_path}"
    cached("old", torch="2.12.0", python="3.10.1", python_build="3.10.1 y")
    assert _build.why_build(facts, tmp_path, "p") == "no cached build for torch 2.13.0 and Python 3.11.7"
    cached("newer", torch="2.12.0")  # the closest earlier build differs only in torch
    assert _build.why_build(facts, tmp_path, "p") == "no cached build for torch 2.13.0"
    cached("later", built=3.0, sources="s0")  # as close, and built later: it names the sources
    assert _build.why_build(facts, tmp_path, "p") == "no cached build for these kernel sources"
    # another extension's builds are not compared (this one differs in the flags only)
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "build.json").write_text(json.dumps({"prefix": "q", "facts": {**facts, "flags": "-O0"}}))
    assert _build.why_build(facts, tmp_path, "p") == "no cached build for these kernel sources"
