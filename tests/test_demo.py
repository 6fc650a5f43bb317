"""The main job end to end with a tiny budget: both runs, the table, the explorer page, the report."""

from __future__ import annotations

import pytest

from lstmkit.cli import main


@pytest.mark.slow  # trains two models twice
def test_demo_tiny_budget(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--budget", "3", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "LSTM (lstmkit, 64 units)" in text and "vanilla RNN (64 units)" in text and "chance" in text
    assert (out / "lstm" / "explore" / "index.html").exists()
    assert (out / "rnn" / "model.safetensors").exists()
    assert "Mystery report" in text
    # running it again replaces the previous demo's runs
    assert main(["demo", "--out", str(out), "--budget", "2", "--quiet"]) == 0
