"""Loading never runs code; damaged and wrong files get one line naming the file and the problem,
exit status 2, and nothing is overwritten."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from lstmkit.cli import main
from lstmkit.train import RunError, load_run, resume

SRC = Path(__file__).resolve().parents[1] / "src" / "lstmkit"


def test_no_code_executing_loaders_in_the_source():
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            assert "weights_only=True" in m.group(1), f"{path}: torch.load without weights_only=True"
        assert not re.search(r"^\s*import pickle|^\s*from pickle", text, re.M), f"{path} imports pickle"
        assert "allow_pickle=True" not in text, f"{path}: numpy load with pickles"


def _hashes(d: Path) -> dict[str, str]:
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()
    }


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize(
    "field,value,words",
    [
        ("hidden_size", "abc", "hidden_size must be a positive int"),
        ("lr", -1.0, "lr must be a positive number"),
        ("arch", "transformer", "arch must be lstm, gru or rnn"),
        ("surprise", 1, "unknown field 'surprise'"),
    ],
)
def test_config_validation_names_the_field(trained_run, tmp_path, field, value, words):
    run = _copy(trained_run, tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    section = "model" if field in ("hidden_size",) else "train"
    cfg[section][field] = value
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RunError, match=re.escape(words)) as e:
        load_run(run)
    assert "config.json" in str(e.value)


@pytest.mark.parametrize(
    "damage,words",
    [
        ("truncate_ckpt", "truncated or damaged"),
        ("flip_ckpt", "does not match its recorded checksum"),
        ("state_version", "unknown training-state version 7"),
        ("state_json", "not valid JSON"),
        ("config_version", "unknown config format"),
    ],
)
def test_damaged_checkpoint_on_resume(trained_run, tmp_path, damage, words, capsys):
    run = _copy(trained_run, tmp_path)
    info = json.loads((run / "train_state.json").read_text())
    ckpt = run / info["checkpoint"]
    if damage == "truncate_ckpt":
        data = ckpt.read_bytes()
        ckpt.write_bytes(data[: len(data) // 3])
        info.pop("sha256")
        (run / "train_state.json").write_text(json.dumps(info))
    elif damage == "flip_ckpt":
        data = bytearray(ckpt.read_bytes())
        data[-5] ^= 0xFF
        ckpt.write_bytes(bytes(data))
    elif damage == "state_version":
        info["version"] = 7
        (run / "train_state.json").write_text(json.dumps(info))
    elif damage == "state_json":
        (run / "train_state.json").write_text('{"version": 1, "step"')
    elif damage == "config_version":
        cfg = json.loads((run / "config.json").read_text())
        cfg["format"] = 42
        (run / "config.json").write_text(json.dumps(cfg))
    before = _hashes(run)
    with pytest.raises(RunError, match=re.escape(words)):
        resume(run, max_steps=20, progress=False)
    assert _hashes(run) == before, "a failed resume changed the run folder"
    capsys.readouterr()
    assert main(["train", "mystery", "--resume", str(run), "--max-steps", "20", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err
    assert _hashes(run) == before


def test_wrong_shape_weights(trained_run, tmp_path, capsys):
    run = _copy(trained_run, tmp_path)
    from safetensors.torch import load_file, save_file

    w = load_file(str(run / "model.safetensors"))
    w["head.weight"] = w["head.weight"][:, :3].contiguous()
    save_file(w, str(run / "model.safetensors"))
    before = _hashes(run)
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors" in err and "head.weight" in err and "shape" in err
    assert _hashes(run) == before


def test_a_pickle_in_place_of_weights_is_refused_not_run(trained_run, tmp_path, capsys):
    run = _copy(trained_run, tmp_path)
    marker = tmp_path / "pwned"
    # a pickle that would create a file if anything unpickled it
    payload = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."
    (run / "model.safetensors").write_bytes(payload)
    assert main(["evaluate", str(run)]) == 2
    assert not marker.exists()
    assert "not a valid safetensors file" in capsys.readouterr().err
