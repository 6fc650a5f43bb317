"""Tests of the text task: user files (tiny, in tmp_path) and the Shakespeare corpus (parsed once)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lstmkit.data import Batch, DataError, make_task
from lstmkit.data.shakespeare import markdown_to_text

TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog!\n" for i in range(40))


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    p = tmp_path / "corpus.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


def test_positional_split_vocab_and_windows(text_file: Path) -> None:
    task = make_task("text", text_file=str(text_file), seq_len=16)
    n = len(TEXT)
    a, b = int(n * 0.9), int(n * 0.95)
    assert task.split_text("train") == TEXT[:a]  # type: ignore[attr-defined]
    assert task.split_text("val") == TEXT[a:b]  # type: ignore[attr-defined]
    assert task.split_text("test") == TEXT[b:]  # type: ignore[attr-defined]
    assert task.vocab == sorted(set(TEXT))
    assert task.input_size == task.output_size == len(set(TEXT))
    assert task.main_metric == "bits_per_char" and not task.higher_is_better
    batch = task.train_batch(8, np.random.default_rng(0))
    assert batch.x.shape == batch.y.shape == (8, 16)
    for row in range(8):
        x = task.decode(batch.x[row])  # type: ignore[attr-defined]
        y = task.decode(batch.y[row])  # type: ignore[attr-defined]
        assert x[1:] == y[:-1] and (x + y[-1]) in TEXT[:a]
    # the evaluation windows cover the split exactly once: inputs and next characters
    got_x, got_y = "", ""
    for eb in task.eval_batches("val", 3):
        for row in range(len(eb)):
            keep = eb.mask[row] if eb.mask is not None else torch.ones(eb.x.shape[1], dtype=torch.bool)
            got_x += task.decode(eb.x[row][keep])  # type: ignore[attr-defined]
            got_y += task.decode(eb.y[row][keep])  # type: ignore[attr-defined]
    assert got_x == TEXT[a : b - 1] and got_y == TEXT[a + 1 : b]
    assert task.render(batch.x[0]) == list(task.decode(batch.x[0]))  # type: ignore[attr-defined]
    assert task.encode("fox").tolist() == [task.vocab.index(c) for c in "fox"]  # type: ignore[attr-defined,union-attr]
    with pytest.raises(DataError):
        task.encode("fox§")  # type: ignore[attr-defined]


def test_metrics_and_baseline(text_file: Path) -> None:
    task = make_task("text", text_file=str(text_file), seq_len=7)
    V = task.output_size
    uniform = task.evaluate(lambda b: torch.zeros(len(b), b.x.shape[1], V), "val")
    assert uniform["nats_per_char"] == pytest.approx(math.log(V), rel=1e-6)
    assert uniform["bits_per_char"] == pytest.approx(math.log2(V), rel=1e-6)

    def perfect(b: Batch) -> torch.Tensor:
        return torch.nn.functional.one_hot(b.y, V).float() * 30.0

    assert task.evaluate(perfect, "test")["nats_per_char"] == pytest.approx(0.0, abs=1e-6)
    assert task.evaluate(perfect, "test")["accuracy"] == 1.0

    def perfect_then_lost(b: Batch) -> torch.Tensor:  # right on real steps, uniform on the padding
        out = perfect(b)
        if b.mask is not None:
            out[~b.mask] = 0.0
        return out

    assert any(b.mask is not None for b in task.eval_batches("val", 4))  # the last window is partial
    got = task.evaluate(perfect_then_lost, "val", batch_size=4)
    assert got["nats_per_char"] == pytest.approx(0.0, abs=1e-6) and got["accuracy"] == 1.0
    # baseline: add-one smoothed unigram of the training text, scored on the validation text
    n = len(TEXT)
    a, b = int(n * 0.9), int(n * 0.95)
    counts = {c: TEXT[:a].count(c) + 1 for c in sorted(set(TEXT))}
    total = sum(counts.values())
    nats = -sum(math.log(counts[c] / total) for c in TEXT[a + 1 : b]) / (b - a - 1)
    assert task.baseline()["nats_per_char"] == pytest.approx(nats)
    assert task.baseline()["bits_per_char"] == pytest.approx(nats / math.log(2))


def test_round_trip_and_changed_file(text_file: Path) -> None:
    task = make_task("text", text_file=str(text_file), seq_len=10, seed=2)
    again = make_task(**task.config())
    assert again.vocab == task.vocab
    assert torch.equal(again.eval_batches("val", 50)[0].x, task.eval_batches("val", 50)[0].x)
    text_file.write_text(TEXT.replace("fox", "cat"), encoding="utf-8")
    with pytest.raises(DataError, match="sha256"):
        make_task(**task.config())


def test_bad_text_files(tmp_path: Path) -> None:
    cases = {
        "missing": None,
        "empty": b"",
        "blank": b"  \n\n ",
        "latin1": "caf\u00e9 au lait\n".encode("latin-1") * 50,
    }
    for name, content in cases.items():
        p = tmp_path / f"{name}.txt"
        if content is not None:
            p.write_bytes(content)
        with pytest.raises(DataError) as e:
            make_task("text", text_file=str(p), seq_len=5)
        assert "\n" not in str(e.value) and str(p.name) in str(e.value)
    with pytest.raises(DataError):
        make_task("text", text_file=str(tmp_path), seq_len=5)  # a directory
    short = tmp_path / "short.txt"
    short.write_text("x" * 100, encoding="utf-8")
    with pytest.raises(DataError, match="seq_len"):
        make_task("text", text_file=str(short), seq_len=5)  # 5 characters of validation text
    with pytest.raises(DataError):
        make_task("text", text_file=str(short), seq_len=0)
    with pytest.raises(DataError):
        make_task("text", text_file=str(short), val_plays=["hamlet"])


MARKDOWN = """# The Tragedy of Tests

## ACT I

### SCENE I. A room.

_Enter FIRST TESTER and SECOND TESTER,
with Attendants_

**FIRST TESTER**$
_\\[Aside]_$
Is this a test$
that I see before me\\--or a bug?

**SECOND TESTER**$
It is verily a test. *Draws*$
Mark it _\\[Pointing]_ well.

_Exit FIRST TESTER_

And so it passes.

**ALL**$
[Within]_$
Amen.
""".replace("$", "  ")  # "$": the two trailing spaces of a line break


def test_markdown_to_text() -> None:
    assert markdown_to_text(MARKDOWN) == (
        "FIRST TESTER:\nIs this a test\nthat I see before me--or a bug?\n\n"
        "SECOND TESTER:\nIt is verily a test.\nMark it well.\nAnd so it passes.\n\n"
        "ALL:\nAmen.\n"
    )


def test_shakespeare_split_by_play() -> None:
    from lstmkit.data.shakespeare import shakespeare_plays

    task = make_task("text", seq_len=100, max_eval_chars=5000)
    plays = shakespeare_plays()
    assert len(plays) == 38
    split = task.plays  # type: ignore[attr-defined]
    assert split["val"] == ["julius-caesar", "the-tempest"] and split["test"] == ["macbeth", "twelfth-night"]
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(plays)
    assert not set(split["train"]) & set(split["val"] + split["test"])
    assert not set(split["val"]) & set(split["test"])
    ids = task._ids  # type: ignore[attr-defined]
    assert len(ids["val"]) == len("\n".join(plays[k] for k in split["val"]))
    assert len(ids["train"]) == len("\n".join(plays[k] for k in split["train"]))
    # the familiar plain form, no Markdown left
    macbeth = plays["macbeth"]
    assert macbeth.startswith("First Witch:\nWhen shall we three meet again\nIn thunder, lightning,")
    assert "Is this a dagger which I see before me," in macbeth
    corpus = "".join(plays.values())
    for mark in ("**", "_", "#", "\\", "[", "]"):
        assert mark not in corpus, mark
    assert "\nHAMLET:\n" in plays["hamlet"] and "Exeunt" not in plays["hamlet"]
    # evaluation is capped by max_eval_chars and starts at the start of Julius Caesar
    first = task.eval_batches("val", 8)[0]
    assert task.decode(first.x[0]) == plays["julius-caesar"][:100]  # type: ignore[attr-defined]
    assert sum(int(b.x.shape[0]) for b in task.eval_batches("val", 64)) == math.ceil(4999 / 100)
    base = task.baseline()["bits_per_char"]
    assert 4.0 < base < 5.0  # English characters under a unigram model: about 4.4 bits
    with pytest.raises(DataError):
        make_task("text", val_plays=["hamlet"], test_plays=["hamlet"])
    with pytest.raises(DataError):
        make_task("text", val_plays=["the-mousetrap"])
