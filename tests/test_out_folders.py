"""Issue 20 item 6: no command writes among a user's own files.

``--out`` naming an existing folder that holds files lstmkit did not write is refused with exit
status 2 and one line, and nothing is written there; ``--force`` writes anyway; an empty folder is
fine; an earlier output of the same kind (a run, an explorer page, a runtime bundle) keeps today's
behaviour.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_mystery_args

from lstmkit.cli import main
from lstmkit.errors import InputError
from lstmkit.outdir import check_out_folder


def _user_folder(tmp_path: Path) -> Path:
    d = tmp_path / "mine"
    d.mkdir()
    (d / "thesis.tex").write_text("my own work\n", encoding="utf-8")
    return d


def _untouched(d: Path) -> None:
    assert sorted(p.name for p in d.iterdir()) == ["thesis.tex"]
    assert (d / "thesis.tex").read_text(encoding="utf-8") == "my own work\n"


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], d: Path) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "thesis.tex" in err and "--force" in err, err
    _untouched(d)


def test_rule_itself(tmp_path):
    assert check_out_folder(tmp_path / "new", "x") == tmp_path / "new"  # not there yet: fine
    empty = tmp_path / "empty"
    empty.mkdir()
    check_out_folder(empty, "x")
    d = _user_folder(tmp_path)
    with pytest.raises(InputError, match="thesis.tex"):
        check_out_folder(d, "x")
    check_out_folder(d, "x", force=True)
    page = tmp_path / "page"
    (page / "png").mkdir(parents=True)
    (page / "index.html").write_text("<html>")
    (page / ".index.html.tmp-123").write_text("")  # an interrupted atomic write
    check_out_folder(page, "explore", own=("index.html", "png"), runs_ok=False)
    with pytest.raises(InputError, match="index.html"):
        check_out_folder(page, "export", own=("manifest.json", "weights.bin"), runs_ok=False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "notes.txt").write_text("")
    check_out_folder(run, "train")  # a run: its command decides (resume or refuse)
    with pytest.raises(InputError):
        check_out_folder(run, "explore", own=("index.html", "png"), runs_ok=False)
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(InputError, match="not a folder"):
        check_out_folder(f, "x", force=True)


def test_train_refuses_a_user_folder(tmp_path, capsys):
    d = _user_folder(tmp_path)
    _refused(["train", "mystery", "--out", str(d), "--max-steps", "2", *tiny_mystery_args()], capsys, d)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "mystery", "--out", str(empty), "--max-steps", "2", *tiny_mystery_args()]) == 0
    assert (empty / "config.json").is_file()
    # a run folder keeps today's behaviour: refused as "already holds a run", --resume continues it
    capsys.readouterr()
    assert main(["train", "mystery", "--out", str(empty), "--max-steps", "2", *tiny_mystery_args()]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "mystery", "--out", str(d), "--force", "--max-steps", "2", *tiny_mystery_args()]) == 0
    assert (d / "config.json").is_file() and (d / "thesis.tex").read_text(encoding="utf-8") == "my own work\n"


def test_explore_refuses_a_user_folder(trained_run, tmp_path, capsys):
    d = _user_folder(tmp_path)
    _refused(["explore", str(trained_run), "--out", str(d)], capsys, d)
    page = tmp_path / "page"
    assert main(["explore", str(trained_run), "--out", str(page)]) == 0
    assert main(["explore", str(trained_run), "--out", str(page)]) == 0  # its own earlier page: rewritten
    assert main(["explore", str(trained_run), "--out", str(d), "--force"]) == 0
    assert (d / "index.html").is_file()


def test_compress_refuses_a_user_folder(trained_run, tmp_path, capsys):
    d = _user_folder(tmp_path)
    _refused(["compress", str(trained_run), "--method", "quantize", "--out", str(d)], capsys, d)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["compress", str(trained_run), "--method", "quantize", "--out", str(empty)]) == 0
    assert main(["compress", str(trained_run), "--method", "quantize", "--out", str(empty)]) == 2  # a run: refused


def test_export_runtime_refuses_a_user_folder(trained_run, tmp_path, capsys):
    d = _user_folder(tmp_path)
    _refused(["export", str(trained_run), "--format", "runtime", "--out", str(d)], capsys, d)
    b = tmp_path / "bundle"
    assert main(["export", str(trained_run), "--format", "runtime", "--out", str(b)]) == 0
    assert main(["export", str(trained_run), "--format", "runtime", "--out", str(b)]) == 0  # its own bundle
    assert main(["export", str(trained_run), "--format", "runtime", "--out", str(d), "--force"]) == 0
    assert (d / "manifest.json").is_file()


def test_demo_refuses_a_user_folder(tmp_path, capsys):
    d = _user_folder(tmp_path)
    _refused(["demo", "--out", str(d), "--budget", "1", "--quiet"], capsys, d)
