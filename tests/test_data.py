"""Tests of lstmkit.data: the synthetic tasks, the shared interface, determinism and bad input.

The oracles are written here, independently of the generators: grammars, positions and targets are
re-derived from the token strings or feature values of each generated sequence.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lstmkit.data import TASK_NAMES, Batch, DataError, Task, make_task
from lstmkit.data.mystery import ALIBI_PREFIX, CLUE_PREFIX, QUESTION
from lstmkit.errors import InputError

SMALL: dict[str, dict[str, Any]] = {
    "adding": {"T": 30, "n_val": 50, "n_test": 40},
    "adding-1997": {"T": 30, "form": "1997", "n_val": 50, "n_test": 40},
    "copy": {"T": 15, "n_val": 50, "n_test": 40},
    "temporal-order": {"n_val": 50, "n_test": 40},
    "temporal-order-6b": {"variant": "6b", "n_val": 50, "n_test": 40},
    "reber": {"n_val": 30, "n_test": 20},
    "mystery": {"T": 30, "n_val": 50, "n_test": 40},
}


def small(key: str, seed: int = 0) -> Task:
    return make_task(key.split("-6b")[0].split("-1997")[0], seed=seed, **SMALL[key])


def exact_predictor(task: Task) -> Any:
    """Model outputs that are exactly right, built from the batch's own targets."""

    def predict(b: Batch) -> torch.Tensor:
        if task.target == "class_last":
            return torch.nn.functional.one_hot(b.y, task.output_size).float() * 20.0
        if task.target == "class_steps":
            return torch.nn.functional.one_hot(b.y, task.output_size).float() * 20.0
        if task.target == "multilabel_steps":
            return (b.y * 2.0 - 1.0) * 20.0
        return b.y.clone()

    return predict


# ----------------------------------------------------------------------------- the interface


@pytest.mark.parametrize("key", list(SMALL))
def test_interface(key: str) -> None:
    task = small(key)
    assert task.name in TASK_NAMES
    # what each task is, from its paper: the adding problem regresses a sum at the end, the copy task
    # recalls a symbol per step, the temporal order and the mystery classify the whole sequence, the
    # embedded Reber grammar predicts the set of legal next symbols
    assert (task.input_type, task.target) == {
        "adding": ("vector", "regress_last"),
        "copy": ("tokens", "class_steps"),
        "temporal-order": ("tokens", "class_last"),
        "reber": ("tokens", "multilabel_steps"),
        "mystery": ("tokens", "class_last"),
    }[task.name]
    json.dumps(task.config())
    b = task.train_batch(5, np.random.default_rng(1))
    assert len(b) == 5
    if task.input_type == "tokens":
        assert b.x.dtype == torch.int64 and b.x.dim() == 2
        assert task.vocab is not None and len(task.vocab) == task.input_size
        assert int(b.x.max()) < task.input_size and int(b.x.min()) >= 0
    else:
        assert b.x.dtype == torch.float32 and b.x.shape[2] == task.input_size
    if b.lengths is not None:
        assert b.lengths.dtype == torch.int64 and int(b.lengths.max()) <= b.x.shape[1]
    if b.mask is not None:
        assert b.mask.dtype == torch.bool and b.mask.shape == b.x.shape[:2]
    # loss: scalar, differentiable, finite
    out = torch.randn(task.expected_output_shape(b), requires_grad=True)
    loss = task.loss(out, b)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert out.grad is not None and out.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        task.loss(torch.zeros(5, task.output_size + 1, 2), b)
    # evaluate and baseline name the main metric; a perfect predictor attains the best value
    metrics = task.evaluate(exact_predictor(task), "val", batch_size=16)
    assert task.main_metric in metrics and task.main_metric in task.baseline()
    best = metrics[task.main_metric]
    assert best == pytest.approx(1.0 if task.higher_is_better else 0.0, abs=1e-6)
    assert len(task.render(b.x[0])) == b.x.shape[1]


@pytest.mark.parametrize("key", list(SMALL))
def test_determinism_and_round_trip(key: str) -> None:
    task = small(key, seed=3)
    a = task.train_batch(6, np.random.default_rng(7))
    b = task.train_batch(6, np.random.default_rng(7))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    first = task.eval_batches("test", 16)
    again = task.eval_batches("test", 16)
    rebuilt = make_task(**task.config()).eval_batches("test", 16)
    assert sum(len(x) for x in first) == task.config()["n_test"]
    for u, v, w in zip(first, again, rebuilt, strict=True):
        assert torch.equal(u.x, v.x) and torch.equal(u.x, w.x) and torch.equal(u.y, w.y)
    # a batch size that does not divide the set gives the same sequences
    whole = task.eval_batches("test", 1000)[0]
    assert torch.equal(first[0].x, whole.x[:16, : first[0].x.shape[1]])
    other = small(key, seed=4).eval_batches("test", 16)[0]
    val = task.eval_batches("val", 16)[0]
    assert not torch.equal(other.x, first[0].x) or not torch.equal(other.y, first[0].y)
    assert val.x.shape != first[0].x.shape or not torch.equal(val.x, first[0].x)


def test_trimmed_eval_batches_keep_their_targets() -> None:
    task = make_task("reber", n_val=40, n_test=10)
    for b in task.eval_batches("val", 7):
        assert b.lengths is not None and b.mask is not None
        assert b.x.shape[1] == int(b.lengths.max())
        assert b.y.shape[:2] == b.x.shape and b.mask.shape == b.x.shape


# ----------------------------------------------------------------------------- adding


def test_adding_modern_form() -> None:
    T = 31
    task = make_task("adding", T=T)
    b = task.train_batch(400, np.random.default_rng(0))
    x = b.x.double().numpy()
    values, markers = x[..., 0], x[..., 1]
    assert x.shape == (400, T, 2) and b.lengths is None
    assert values.min() >= 0.0 and values.max() <= 1.0
    assert set(np.unique(markers)) == {0.0, 1.0}
    half = math.ceil(T / 2)
    for row in range(400):
        marked = np.flatnonzero(markers[row] == 1.0)
        assert len(marked) == 2 and marked[0] < half <= marked[1]
        assert b.y[row, 0].item() == pytest.approx(values[row, marked].sum(), abs=1e-5)
    # both halves are used all over: the positions are uniform, not fixed
    pos = b.meta["marker_pos"].numpy()
    assert pos[:, 0].min() == 0 and pos[:, 0].max() == half - 1
    assert pos[:, 1].min() == half and pos[:, 1].max() == T - 1


def test_adding_modern_baseline_is_one_sixth() -> None:
    task = make_task("adding", T=20, n_val=4000)
    assert task.baseline() == {"mse": pytest.approx(1 / 6)}
    mse = task.evaluate(lambda b: torch.ones(len(b), 1), "val")["mse"]
    assert mse == pytest.approx(1 / 6, abs=0.015)


def test_adding_1997_form() -> None:
    T = 40
    task = make_task("adding", T=T, form="1997")
    b = task.train_batch(500, np.random.default_rng(0))
    assert b.lengths is not None
    lens = b.lengths.numpy()
    assert lens.min() >= T and lens.max() <= T + T // 10 and len(set(lens)) > 1
    x = b.x.double().numpy()
    first_marked = 0
    for row in range(500):
        n = lens[row]
        values, markers = x[row, :n, 0], x[row, :n, 1]
        assert np.all(x[row, n:] == 0.0)
        assert values.min() >= -1.0 and values.max() <= 1.0
        marked = np.flatnonzero(markers == 1.0)
        assert len(marked) == 2
        assert marked[0] < 10 and marked[1] < T // 2
        others = np.setdiff1d(np.arange(n), marked)
        expect = np.zeros(len(others))
        expect[others == 0] = -1.0
        expect[others == n - 1] = -1.0
        assert np.array_equal(markers[others], expect)
        if 0 in marked:
            first_marked += 1
            assert values[0] == 0.0
        target = 0.5 + values[marked].sum() / 4.0
        assert b.y[row, 0].item() == pytest.approx(target, abs=1e-5)
    assert 0 < first_marked < 150  # rare, but it happens (about 10% of sequences)


def test_adding_1997_baseline_and_success_rate() -> None:
    task = make_task("adding", T=20, form="1997", n_val=20000)
    base = task.baseline()
    got = task.evaluate(lambda b: torch.full((len(b), 1), 0.5), "val", batch_size=5000)
    assert got["mse"] == pytest.approx(base["mse"], abs=0.0015)
    assert got["success_rate"] == pytest.approx(base["success_rate"], abs=0.01)
    near = task.evaluate(lambda b: b.y + 0.039, "val", batch_size=5000)
    far = task.evaluate(lambda b: b.y - 0.041, "val", batch_size=5000)
    assert near["success_rate"] == 1.0 and far["success_rate"] == 0.0
    assert near["mse"] == pytest.approx(0.039**2, rel=1e-3)


# ----------------------------------------------------------------------------- copy


def test_copy_layout_and_targets() -> None:
    T = 12
    task = make_task("copy", T=T)
    b = task.train_batch(50, np.random.default_rng(0))
    x, y = b.x.numpy(), b.y.numpy()
    assert x.shape == (50, T + 20) and y.shape == (50, T + 20)
    assert task.vocab is not None and task.vocab[9] == "go"
    for row in range(50):
        symbols = x[row, :10]
        assert symbols.min() >= 1 and symbols.max() <= 8
        assert np.all(x[row, 10 : T + 9] == 0)  # T - 1 blanks
        assert x[row, T + 9] == 9  # the marker
        assert np.all(x[row, T + 10 :] == 0)
        assert np.all(y[row, : T + 10] == 0)
        assert np.array_equal(y[row, T + 10 :], symbols)


def test_copy_memoryless_baseline() -> None:
    T = 30
    task = make_task("copy", T=T, n_val=64)
    assert task.baseline()["ce"] == pytest.approx(10 * math.log(8) / (T + 20))

    def memoryless(b: Batch) -> torch.Tensor:
        out = torch.full((len(b), T + 20, 9), -1e4)
        out[:, : T + 10, 0] = 0.0  # blanks are certain until the marker
        out[:, T + 10 :, 1:] = 0.0  # then a uniform guess among the 8 symbols
        return out

    got = task.evaluate(memoryless, "val")
    assert got["ce"] == pytest.approx(10 * math.log(8) / (T + 20), rel=1e-5)


# ----------------------------------------------------------------------------- temporal order

CLASSES_6A = {"XX": 0, "XY": 1, "YX": 2, "YY": 3}
CLASSES_6B = {"XXX": 0, "XXY": 1, "XYX": 2, "XYY": 3, "YXX": 4, "YXY": 5, "YYX": 6, "YYY": 7}


@pytest.mark.parametrize(
    ("variant", "windows", "classes"),
    [("6a", [(10, 20), (50, 60)], CLASSES_6A), ("6b", [(10, 20), (33, 43), (66, 76)], CLASSES_6B)],
)
def test_temporal_order(variant: str, windows: list[tuple[int, int]], classes: dict[str, int]) -> None:
    task = make_task("temporal-order", variant=variant)
    assert task.output_size == len(classes) and task.baseline() == {"accuracy": 1 / len(classes)}
    b = task.train_batch(300, np.random.default_rng(0))
    assert b.lengths is not None and task.vocab is not None
    seen = set()
    for row in range(300):
        n = int(b.lengths[row])
        assert 100 <= n <= 110
        s = task.render(b.x[row])
        assert s[0] == "E" and s[n - 1] == "B" and all(c == "<pad>" for c in s[n:])
        relevant = [i for i, c in enumerate(s[:n]) if c in "XY"]
        assert len(relevant) == len(windows)
        for i, (lo, hi) in zip(relevant, windows):
            assert lo <= i <= hi
        assert all(c in "abcd" for i, c in enumerate(s[1 : n - 1], 1) if i not in relevant)
        word = "".join(s[i] for i in relevant)
        assert int(b.y[row]) == classes[word]
        seen.add(word)
    assert seen == set(classes)
    assert task.class_names() == list(classes)


# ----------------------------------------------------------------------------- reber

# The embedded Reber grammar written out as one automaton: state -> {symbol: next state}. The inner
# Reber states are tagged with the branch (T or P) taken after the first B, which is how the final
# T/P is remembered. "end" accepts nothing more.
_INNER = {
    "b": {"B": "0"},
    "0": {"T": "1", "P": "2"},
    "1": {"S": "1", "X": "3"},
    "2": {"T": "2", "V": "4"},
    "3": {"X": "2", "S": "5"},
    "4": {"P": "3", "V": "5"},
    "5": {"E": "out"},
}
EMBEDDED: dict[str, dict[str, str]] = {"start": {"B": "top"}, "top": {"T": "T:b", "P": "P:b"}, "end": {}}
for _branch in "TP":
    for _s, _edges in _INNER.items():
        EMBEDDED[f"{_branch}:{_s}"] = {sym: f"{_branch}:{nxt}" for sym, nxt in _edges.items()}
    EMBEDDED[f"{_branch}:out"] = {_branch: "last"}
EMBEDDED["last"] = {"E": "end"}


def check_reber_batch(b: Batch) -> list[str]:
    """Walk every string of the batch through EMBEDDED; check inputs, targets, mask and lengths."""
    symbols = "BTSXPVE"
    assert b.lengths is not None and b.mask is not None
    strings = []
    for row in range(len(b)):
        n = int(b.lengths[row])
        ids = b.x[row].tolist()
        assert all(i == 7 for i in ids[n:])  # padding
        assert b.mask[row].tolist() == [True] * n + [False] * (b.x.shape[1] - n)
        assert float(b.y[row, n:].abs().sum()) == 0.0
        state, text = "start", ""
        for t in range(n):
            sym = symbols[ids[t]]
            assert sym in EMBEDDED[state], f"{text + sym!r} leaves the grammar"
            state = EMBEDDED[state][sym]
            text += sym
            legal = {symbols[j] for j in range(7) if b.y[row, t, j] == 1.0}
            assert legal == set(EMBEDDED[state]), f"after {text!r}"
        # the target after the last input is E (the final symbol), which ends the string
        assert EMBEDDED[state] == {"E": "end"}
        strings.append(text + "E")
    return strings


def test_reber_grammar_and_targets() -> None:
    task = make_task("reber", n_val=64, n_test=64)
    strings = check_reber_batch(task.train_batch(200, np.random.default_rng(0)))
    assert any(s[1] == "T" for s in strings) and any(s[1] == "P" for s in strings)
    assert _walk("BPBTSXXVPSEPE") == "end"  # the oracle accepts the example of TASKS.md
    with pytest.raises(KeyError):
        _walk("BPBTSXXVPSETE")  # and rejects a wrong final branch symbol
    val = [s for b in task.eval_batches("val", 10) for s in check_reber_batch(b)]
    test = [s for b in task.eval_batches("test", 10) for s in check_reber_batch(b)]
    assert len(val) == len(set(val)) == 64 and len(test) == len(set(test)) == 64
    assert not set(val) & set(test)


def _walk(s: str) -> str:
    state = "start"
    for sym in s:
        state = EMBEDDED[state][sym]
    return state


def test_reber_fixed_training_set_is_disjoint() -> None:
    task = make_task("reber", n_val=20, n_test=20, n_train=30)
    train = set(check_reber_batch(task.train_batch(300, np.random.default_rng(0))))
    assert len(train) <= 30
    batches = task.eval_batches("val", 64) + task.eval_batches("test", 64)
    held_out = {s for b in batches for s in b.meta["strings"]}
    assert not train & held_out


def test_reber_string_accuracy() -> None:
    task = make_task("reber", n_val=200, n_test=10)
    assert task.baseline() == {"string_accuracy": 0.5}
    perfect = task.evaluate(exact_predictor(task), "val")
    assert perfect["string_accuracy"] == 1.0 and perfect["step_accuracy"] == 1.0

    def forgets_branch(b: Batch) -> torch.Tensor:
        # Right everywhere except after the inner E, where it cannot tell T from P: says both.
        out = (b.y * 2.0 - 1.0) * 20.0
        assert b.lengths is not None
        for row in range(len(b)):
            out[row, int(b.lengths[row]) - 2, 1] = 20.0  # T
            out[row, int(b.lengths[row]) - 2, 4] = 20.0  # P
        return out

    def guesses_t(b: Batch) -> torch.Tensor:
        out = (b.y * 2.0 - 1.0) * 20.0
        assert b.lengths is not None
        for row in range(len(b)):
            out[row, int(b.lengths[row]) - 2, [1, 4]] = torch.tensor([20.0, -20.0])
        return out

    assert task.evaluate(forgets_branch, "val")["string_accuracy"] == 0.0
    strings = [s for b in task.eval_batches("val", 256) for s in b.meta["strings"]]
    share_t = sum(s[1] == "T" for s in strings) / len(strings)
    assert task.evaluate(guesses_t, "val")["string_accuracy"] == pytest.approx(share_t)
    assert 0.35 < share_t < 0.65


# ----------------------------------------------------------------------------- mystery


def read_story(words: list[str]) -> tuple[str, dict[str, int], dict[str, int]]:
    """The culprit of a story read from its words alone, and the clue and alibi positions by name."""
    clues: dict[str, int] = {}
    alibis: dict[str, int] = {}
    for i, w in enumerate(words):
        if w.startswith(CLUE_PREFIX):
            who = w.removeprefix(CLUE_PREFIX)
            assert who not in clues, "one clue per suspect"
            clues[who] = i
        elif w.startswith(ALIBI_PREFIX):
            who = w.removeprefix(ALIBI_PREFIX)
            assert who not in alibis, "one alibi per suspect"
            alibis[who] = i
    free = [s for s in clues if s not in alibis]
    assert len(free) == 1, "exactly one clued suspect without an alibi"
    return free[0], clues, alibis


@pytest.mark.parametrize(("T", "suspects", "herrings"), [(100, 4, 2), (12, 6, 3), (5, 2, 0)])
def test_mystery_stories(T: int, suspects: int, herrings: int) -> None:
    task = make_task("mystery", T=T, suspects=suspects, red_herrings=herrings, filler_words=7)
    assert task.output_size == suspects and task.baseline() == {"accuracy": 1 / (1 + herrings)}
    names = ["butler", "maid", "gardener", "cook", "chauffeur", "nanny", "doctor", "colonel"][:suspects]
    b = task.train_batch(300, np.random.default_rng(0))
    assert b.x.shape == (300, T)
    fillers: set[str] = set()
    clue_first = 0
    for row in range(300):
        words = task.render(b.x[row])
        assert words[-1] == QUESTION and QUESTION not in words[:-1]
        culprit, clues, alibis = read_story(words)
        assert len(clues) == 1 + herrings and len(alibis) == herrings
        assert set(alibis) <= set(clues) and set(clues) <= set(names)
        assert all(clues[s] < alibis[s] for s in alibis), "an alibi comes after its clue"
        assert names[int(b.y[row])] == culprit
        fillers |= {w for w in words if not w.startswith((CLUE_PREFIX, ALIBI_PREFIX)) and w != QUESTION}
        # meta agrees with the words
        assert int(b.meta["culprit"][row]) == int(b.y[row])
        assert b.meta["clue_pos"][row].tolist() == [clues[names[int(i)]] for i in b.meta["suspects"][row]]
        assert sorted(b.meta["alibi_pos"][row].tolist()) == sorted(alibis.values())
        assert int(b.meta["question_pos"][row]) == T - 1
        if herrings and clues[culprit] < min(clues[s] for s in alibis):
            clue_first += 1
    assert len(fillers) <= 7 and not fillers & set(names)
    assert set(b.y.tolist()) == set(range(suspects))  # every suspect is the culprit sometimes
    if herrings:
        assert 0 < clue_first < 300  # the culprit's clue is sometimes first, sometimes not


def test_mystery_vocabulary_is_pinned() -> None:
    """The words users type into the explorer (`--input "the rain clue:butler who?"`), pinned once here."""
    task = make_task("mystery", T=5, suspects=2, red_herrings=0, filler_words=2, n_val=2, n_test=2)
    assert task.vocab == ["the", "rain", "clue:butler", "clue:maid", "alibi:butler", "alibi:maid", "who?"]


def test_mystery_baseline_is_a_guess_among_the_clued() -> None:
    task = make_task("mystery", T=50, suspects=6, red_herrings=2, n_val=3000)
    gen = torch.Generator().manual_seed(0)

    def guess_clued(b: Batch) -> torch.Tensor:
        pick = torch.randint(0, 3, (len(b),), generator=gen)
        choice = b.meta["suspects"][torch.arange(len(b)), pick]
        return torch.nn.functional.one_hot(choice, 6).float()

    assert task.evaluate(guess_clued, "val")["accuracy"] == pytest.approx(1 / 3, abs=0.03)
    assert task.evaluate(exact_predictor(task), "val")["accuracy"] == 1.0


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("addition", {}),
        ("adding", {"length": 10}),
        ("adding", {"T": 1}),
        ("adding", {"T": 19, "form": "1997"}),
        ("adding", {"form": "1998"}),
        ("adding", {"T": "100"}),
        ("adding", {"T": 10.5}),
        ("adding", {"T": True}),
        ("adding", {"n_val": 0}),
        ("copy", {"T": 0}),
        ("temporal-order", {"variant": "6c"}),
        ("reber", {"n_test": 0}),
        ("mystery", {"T": 5, "red_herrings": 2}),
        ("mystery", {"suspects": 13}),
        ("mystery", {"suspects": 3, "red_herrings": 3}),
        ("mystery", {"filler_words": 0}),
        ("mystery", {"seed_": 1}),
        ("csv", {}),
    ],
)
def test_bad_parameters(name: str, params: dict[str, Any]) -> None:
    with pytest.raises(DataError) as e:
        make_task(name, **params)
    msg = str(e.value)
    assert msg and "\n" not in msg
    assert isinstance(e.value, InputError)  # the CLI prints it as one line and exits 2


def test_bad_seed_and_split() -> None:
    with pytest.raises(DataError):
        make_task("copy", seed=-1)
    task = make_task("copy", T=5, n_val=4, n_test=4)
    with pytest.raises(DataError):
        task.eval_batches("train", 4)  # type: ignore[arg-type]
    with pytest.raises(DataError):
        task.train_batch(0, np.random.default_rng(0))


def test_underscore_alias() -> None:
    assert make_task("temporal_order").name == "temporal-order"


@pytest.mark.slow  # a fresh interpreter imports torch
def test_no_corpus_loaded_on_import() -> None:
    code = (
        "import lstmkit.data, lstmkit.data.shakespeare as s; "
        "assert s.shakespeare_plays.cache_info().currsize == 0; print('ok')"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr
