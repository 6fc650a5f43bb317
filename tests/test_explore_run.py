"""`explore_run` on trained runs: a language model (next-character probabilities, characters outside
the vocabulary) and a vector task."""

from __future__ import annotations

import json
import re

import pytest

from lstmkit.explore.run import explore_run
from lstmkit.train import TrainConfig, train


def _page_data(html: str) -> dict:
    m = re.search(r'<script type="application/json"[^>]*>(.*?)</script>', html, re.S)
    assert m, "no embedded data"
    text = m.group(1).replace("\\u003c", "<").replace("\\u003e", ">").replace("\\u0026", "&")
    return json.loads(text)


def test_language_model_page(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("abcabcabd " * 300, encoding="utf-8")
    train(
        TrainConfig(
            task="text",
            task_params={"text_file": str(text), "seq_len": 16},
            hidden_size=8,
            embedding_size=4,
            batch_size=4,
            max_steps=6,
            eval_every=3,
        ),
        tmp_path / "lm",
        progress=False,
    )
    info = explore_run(tmp_path / "lm", input_text="abcaZbc", out=tmp_path / "page")
    assert info["unknown"] == 1
    html = info["page"].read_text(encoding="utf-8")
    data = _page_data(html)
    assert data["next_probs"] and len(data["next_probs"]) == 7
    assert "⚠Z" in data["tokens"]


def test_vector_task_page_and_text_refused(tmp_path):
    train(
        TrainConfig(
            task="adding",
            task_params={"T": 10, "n_val": 8, "n_test": 8},
            hidden_size=8,
            batch_size=4,
            max_steps=4,
            eval_every=2,
        ),
        tmp_path / "add",
        progress=False,
    )
    info = explore_run(tmp_path / "add", sample=3, out=tmp_path / "p")
    assert info["page"].exists() and info["summary"] is None
    with pytest.raises(ValueError, match="takes numbers, not text"):
        explore_run(tmp_path / "add", input_text="hello")
    with pytest.raises(ValueError, match="--sample must be an index"):
        explore_run(tmp_path / "add", sample=99)
