"""The command line: each bad input gives one line on stderr and exit status 2; good input works."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_mystery_args

from lstmkit.cli import main
from lstmkit.data.mystery import CLUE_PREFIX, QUESTION
from lstmkit.errors import InputError

TINY = [*tiny_mystery_args(hidden=8, embedding=4, batch=4), "--eval-every", "5"]


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, f"expected one line on stderr, got: {err!r}"
    return err


@pytest.fixture(scope="module")
def mystery_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "m"
    assert main(["train", "mystery", "--out", str(out), "--max-steps", "5", *TINY]) == 0
    return out


def _csv(tmp_path: Path, text: str) -> str:
    p = tmp_path / "d.csv"
    p.write_text(text, encoding="utf-8")
    return str(p)


GOOD_CSV = "t,y,z\n" + "".join(f"{i},{(i * 7) % 13},{i % 5}\n" for i in range(200))


@pytest.mark.parametrize(
    "args,words",
    [
        (["train", "nosuchtask", "--out", "{tmp}/o"], "unknown task 'nosuchtask'"),
        (["train", "text", "--text-file", "/nonexistent/file.txt", "--out", "{tmp}/o"], "/nonexistent/file.txt"),
        (["train", "mystery", "--length", "-3", "--out", "{tmp}/o"], "T=-3"),
        (["evaluate", "/nonexistent/run"], "not a run folder"),
        (["sample", "/nonexistent/run"], "not a run folder"),
        (["explore", "/nonexistent/run"], "not a run folder"),
        (["compress", "/nonexistent/run", "--method", "quantize", "--out", "{tmp}/c"], "not a run folder"),
        (["export", "/nonexistent/run", "--format", "runtime", "--out", "{tmp}/b"], "not a run folder"),
        (["export", "/nonexistent/run", "--format", "onnx", "--bits", "4", "--out", "{tmp}/m.onnx"], "--bits"),
        (["demo", "--budget", "0", "--out", "{tmp}/d"], "--budget"),
    ],
)
def test_bad_input_exits_2(args, words, capsys, tmp_path):
    """A bad input of each command: exit 2 and one line naming it (argparse's own errors: bench below)."""
    assert main([a.replace("{tmp}", str(tmp_path)) for a in args]) == 2
    err = _err(capsys)
    assert err.startswith(f"lstmkit {args[0]}: error: ") and words in err and "Traceback" not in err
    if args[0] == "demo":
        assert not (tmp_path / "d").exists()  # the demo checks its budget before it writes anything


def test_unknown_option_of_bench_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--slow"])
    assert e.value.code == 2
    assert "unrecognized arguments: --slow" in _err(capsys)


def _raise(exc: BaseException):
    def fail(*args, **kwargs):
        raise exc

    return fail


@pytest.mark.parametrize(
    "exc,status",
    [
        (ValueError("shapes (3, 4) and (5, 6) not aligned"), 1),  # a library bug, not the user's input
        (RuntimeError("boom"), 1),
        (KeyError("hidden_size"), 1),
        (InputError("--quick takes no value"), 2),
        (FileNotFoundError(2, "No such file or directory", "x.csv"), 2),
        (PermissionError(13, "Permission denied", "runs/x"), 2),
        (NotADirectoryError(20, "Not a directory", "runs/x/y"), 2),
        (FileExistsError(17, "File exists", "runs/x"), 2),  # --out names a file
    ],
)
def test_exit_status_tells_bug_from_bad_input(exc, status, monkeypatch, capsys):
    """Exit 2 only for bad input (InputError, a missing or unreadable file); any other exception is a bug:
    exit 1, the traceback and a line saying so."""
    import lstmkit.bench

    monkeypatch.setattr(lstmkit.bench, "run", _raise(exc))
    assert main(["bench", "--quick"]) == status
    err = capsys.readouterr().err
    if status == 2:
        assert len(err.strip().splitlines()) == 1 and err.startswith("lstmkit bench: error: "), err
        assert "Traceback" not in err
    else:
        assert "Traceback (most recent call last)" in err and "bug in lstmkit" in err, err
        assert f"lstmkit bench: internal error: {type(exc).__name__}" in err
    with pytest.raises(type(exc)):  # --debug: the exception itself, whatever it is
        main(["--debug", "bench", "--quick"])


def test_out_is_a_file_exits_2(tmp_path, capsys):
    (tmp_path / "f").write_text("not a folder")
    assert main(["train", "mystery", "--out", str(tmp_path / "f"), *TINY, "--max-steps", "1"]) == 2
    assert str(tmp_path / "f") in _err(capsys)


def test_library_bug_in_a_command_exits_1(mystery_run, monkeypatch, capsys):
    """A plain ValueError raised deep inside a command (here the evaluation of the task) is a bug: exit 1."""
    from lstmkit.data.base import Task

    monkeypatch.setattr(Task, "evaluate", _raise(ValueError("operands could not be broadcast together")))
    capsys.readouterr()
    assert main(["evaluate", str(mystery_run)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "internal error: ValueError: operands could not be broadcast" in err


def test_unknown_option_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "mystery", "--no-such-option"])
    assert e.value.code == 2
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content,words",
    [
        (b"", "empty"),
        (b"\xff\xfe\x00bad bytes \xc3\x28", "UTF-8"),
    ],
)
def test_bad_text_files(content, words, tmp_path, capsys):
    p = tmp_path / "t.txt"
    p.write_bytes(content)
    assert main(["train", "text", "--text-file", str(p), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert words in _err(capsys)


@pytest.mark.parametrize(
    "text,extra,words",
    [
        (GOOD_CSV, ["--target", "nope"], "nope"),
        (GOOD_CSV, ["--target", "y", "--features", "z,missing"], "missing"),
        ("t,y\n" + "".join(f"{i},{i}\n" for i in range(50)) + "50,abc\n", ["--target", "y"], "abc"),
        ("t,y\n" + "".join(f"{i},{i % 3}\n" for i in range(10)), ["--target", "y", "--window", "24"], "window"),
        (
            "d,y\n" + "".join(f"2020-01-{i:02d},{i % 7}\n" for i in range(1, 29)) + "2020-01-28,3\n",
            ["--target", "y", "--date", "d"],
            "twice",
        ),
        ("t,y\n" + "".join(f"{i},\n" for i in range(100)), ["--target", "y"], "no"),  # only missing values
        ("t,y\n" + "".join(f"{i},{i % 7}\n" for i in range(100)) + "100,inf\n", ["--target", "y"], "inf"),
    ],
)
def test_bad_csv(text, extra, words, tmp_path, capsys):
    args = ["train", "csv", "--csv", _csv(tmp_path, text), *extra, "--out", str(tmp_path / "o"), "--quiet"]
    assert main(args) == 2
    err = _err(capsys)
    assert words.lower() in err.lower()


def test_train_evaluate_explore(mystery_run, capsys, tmp_path):
    capsys.readouterr()
    assert main(["evaluate", str(mystery_run)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("split: test (test set, 32 sequences)\naccuracy ")  # names the split it scored
    assert main(["explore", str(mystery_run), "--out", str(tmp_path / "x"), "--png"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "x" / "index.html").exists() and "Mystery report" in out
    story = f"the rain {CLUE_PREFIX}butler zzz {QUESTION}"
    assert main(["explore", str(mystery_run), "--input", story, "--out", str(tmp_path / "y")]) == 0
    out = capsys.readouterr().out
    assert "1 input items are outside the model's vocabulary" in out
    html = (tmp_path / "y" / "index.html").read_text(encoding="utf-8")
    assert "⚠zzz" in html or "\\u26a0zzz" in html
    assert main(["explore", str(mystery_run), "--input", "   "]) == 2
    assert "input is empty" in _err(capsys)
    assert main(["sample", str(mystery_run)]) == 2
    assert "needs a language-model run" in _err(capsys)


def test_damaged_run_files(mystery_run, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(mystery_run, run)
    (run / "model.safetensors").write_bytes((mystery_run / "model.safetensors").read_bytes()[:100])
    assert main(["evaluate", str(run)]) == 2
    assert "model.safetensors" in _err(capsys)
    shutil.copy(mystery_run / "model.safetensors", run / "model.safetensors")
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"]["hidden_size"] = 9  # weights from "another run"
    (run / "config.json").write_text(json.dumps(cfg))
    assert main(["evaluate", str(run)]) == 2
    err = _err(capsys)
    assert "config.json" in err or "model.safetensors" in err
    assert re.search(r"has shape \(.*\) but the model needs \(.*\)", err), err
    (run / "config.json").write_text("{ not json")
    assert main(["evaluate", str(run)]) == 2
    assert "not valid JSON" in _err(capsys)


def test_resume_through_cli(mystery_run, tmp_path, capsys):
    run = tmp_path / "r"
    shutil.copytree(mystery_run, run)
    assert main(["train", "mystery", "--resume", str(run), "--max-steps", "10", "--quiet"]) == 0
    assert json.loads((run / "train_state.json").read_text())["step"] == 10


def test_subprocess_exit_status_and_help(tmp_path):
    env = {**os.environ, "LSTMKIT_NO_KERNELS": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "lstmkit.cli", "train", "mystery", "--length", "0", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "T=0" in r.stderr
    r = subprocess.run([sys.executable, "-m", "lstmkit.cli", "--help"], capture_output=True, text=True, env=env)
    assert r.returncode == 0
    for cmd in ("demo", "train", "evaluate", "sample", "explore", "bench"):
        assert cmd in r.stdout
