"""The training loop, run folders and exact resume, on tiny tasks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lstmkit
from lstmkit.data import make_task
from lstmkit.errors import InputError
from lstmkit.models import ModelConfig, build_model
from lstmkit.train import RunError, TrainConfig, TrainingStopped, load_run, resume, train

TINY = {"T": 20, "suspects": 4, "red_herrings": 1, "n_val": 64, "n_test": 64}


def _cfg(**kw):
    base = dict(
        task="mystery",
        task_params=dict(TINY),
        hidden_size=16,
        embedding_size=8,
        batch_size=8,
        max_steps=30,
        eval_every=10,
        log_every=5,
        lr=5e-3,
    )
    base.update(kw)
    return TrainConfig(**base)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def _ckpt(run: Path, prefix: str) -> dict[str, torch.Tensor]:
    """The tensors named ``prefix``… in the run's last checkpoint, the prefix dropped from their names."""
    info = json.loads((run / "train_state.json").read_text())
    t = load_file(str(run / info["checkpoint"]))
    return {k[len(prefix) :]: v for k, v in t.items() if k.startswith(prefix)}


def _last_ckpt_model(run: Path) -> dict[str, torch.Tensor]:
    return _ckpt(run, "model.")


def test_run_folder_contents_and_load(tmp_path):
    res = train(_cfg(), tmp_path / "r", progress=False)
    run = tmp_path / "r"
    for name in (
        "config.json",
        "model.safetensors",
        "vocab.json",
        "metrics.jsonl",
        "train_state.json",
        "result.json",
        "plots/loss.png",
        "plots/accuracy.png",
    ):
        assert (run / name).exists(), name
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["lstmkit_version"] == lstmkit.__version__ and cfg["task"]["name"] == "mystery"
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if r["split"] == "val"] == [10, 20, 30]
    assert recs[-1]["split"] == "test"
    # weights are named as torch.nn.LSTM's state_dict inside the model
    assert "rnn.weight_ih_l0" in _weights(run) and "rnn.bias_hh_l0" in _weights(run)
    loaded = lstmkit.load(run)
    assert loaded.evaluate("test") == pytest.approx(res.test)
    assert loaded.vocab is not None and "who?" in loaded.vocab


def test_same_seed_same_weights_and_exact_resume(tmp_path):
    train(_cfg(), tmp_path / "a", progress=False)
    train(_cfg(), tmp_path / "b", progress=False)
    wa, wb = _last_ckpt_model(tmp_path / "a"), _last_ckpt_model(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # interrupted after 10 steps (a checkpoint), then resumed to 30: the same weights bit for bit
    train(_cfg(max_steps=10), tmp_path / "c", progress=False)
    res = resume(tmp_path / "c", max_steps=30, progress=False)
    wc = _last_ckpt_model(tmp_path / "c")
    assert res.steps == 30
    assert all(torch.equal(wa[k], wc[k]) for k in wa)
    val_a = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    val_c = [json.loads(x) for x in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    strip = lambda rs: [{k: v for k, v in r.items() if k != "time"} for r in rs if r["split"] != "test"]  # noqa: E731
    assert strip(val_a) == strip(val_c)
    # another seed gives other weights (the check above can fail)
    train(_cfg(seed=1), tmp_path / "d", progress=False)
    wd = _last_ckpt_model(tmp_path / "d")
    assert not all(torch.equal(wa[k], wd[k]) for k in wa)


def test_ema_is_the_moving_average_of_the_trained_weights_and_resumes_exactly(tmp_path):
    """ema = d: after step k the average is a_k = d * a_(k-1) + (1 - d) * w_k, w_k the weights the
    optimizer left (the same as a run without ema: the average does not change training); the
    validated and saved weights are the average; a resumed run continues it bit for bit."""
    d = 0.6
    raw = {}
    for n in (1, 2, 3):  # runs without ema, stopped after n steps: w_n
        train(_cfg(max_steps=n, eval_every=n), tmp_path / f"raw{n}", progress=False)
        raw[n] = _last_ckpt_model(tmp_path / f"raw{n}")
    avg = {}
    for n in (1, 3):
        train(_cfg(max_steps=n, eval_every=n, ema=d), tmp_path / f"ema{n}", progress=False)
        avg[n] = _ckpt(tmp_path / f"ema{n}", "ema.")
        # training itself is unchanged by the average
        assert all(torch.equal(v, raw[n][k]) for k, v in _last_ckpt_model(tmp_path / f"ema{n}").items())
        # one evaluation, at the end: the saved weights are the average
        saved = _weights(tmp_path / f"ema{n}")
        assert all(torch.equal(saved[k], avg[n][k]) for k in saved)
    for k in raw[1]:
        a0 = (avg[1][k] - (1 - d) * raw[1][k]) / d  # the start, from the first step's average
        want = a0
        for n in (1, 2, 3):
            want = d * want + (1 - d) * raw[n][k]
        torch.testing.assert_close(avg[3][k], want, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(avg[3][k], raw[3][k])  # the average is not the last weights
    # exact resume: 10 steps, then on to 30, against 30 straight
    train(_cfg(ema=0.9), tmp_path / "straight", progress=False)
    train(_cfg(ema=0.9, max_steps=10), tmp_path / "resumed", progress=False)
    resume(tmp_path / "resumed", max_steps=30, progress=False)
    a, b = _ckpt(tmp_path / "straight", "ema."), _ckpt(tmp_path / "resumed", "ema.")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(InputError, match="ema must be a decay in"):
        _cfg(ema=1.0)


def test_refuses_to_overwrite_a_run(tmp_path):
    train(_cfg(max_steps=10), tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="already holds a run; continue it with --resume"):
        train(_cfg(), tmp_path / "r", progress=False)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    from lstmkit.data.mystery import MysteryTask

    calls = {"n": 0}
    original = MysteryTask.loss

    def flaky(self, output, batch):
        calls["n"] += 1
        loss = original(self, output, batch)
        return loss * float("nan") if calls["n"] == 15 else loss

    monkeypatch.setattr(MysteryTask, "loss", flaky)
    with pytest.raises(TrainingStopped, match=r"step 15: the loss became nan; the last good checkpoint \(step 10\)"):
        train(_cfg(), tmp_path / "r", progress=False)
    info = json.loads((tmp_path / "r" / "train_state.json").read_text())
    assert info["step"] == 10
    monkeypatch.setattr(MysteryTask, "loss", original)
    res = resume(tmp_path / "r", progress=False)
    assert res.steps == 30


def test_early_stopping_on_target(tmp_path):
    res = train(_cfg(max_steps=200, target=0.0), tmp_path / "r", progress=False)
    assert res.steps == 10 and "reached target" in res.stopped_because


@pytest.mark.parametrize("arch", ["gru", "rnn"])
def test_baseline_architectures_train(tmp_path, arch):
    res = train(_cfg(arch=arch, max_steps=10), tmp_path / arch, progress=False)
    assert 0 <= res.test["accuracy"] <= 1
    run = load_run(tmp_path / arch)
    assert type(run.model.rnn).__name__ == arch.upper()


@pytest.mark.parametrize(
    "task,params,target",
    [
        ("adding", {"T": 12, "n_val": 32, "n_test": 32}, "regress_last"),
        ("copy", {"T": 6, "n_val": 32, "n_test": 32}, "class_steps"),
        ("reber", {"n_val": 16, "n_test": 16}, "multilabel_steps"),
        ("temporal-order", {"n_val": 16, "n_test": 16}, "class_last"),
    ],
)
def test_every_head_trains_a_few_steps(tmp_path, task, params, target):
    res = train(
        TrainConfig(
            task=task, task_params=params, hidden_size=8, embedding_size=4, batch_size=4, max_steps=4, eval_every=2
        ),
        tmp_path / task,
        progress=False,
    )
    assert load_run(tmp_path / task).model_config.target == target
    assert all(math.isfinite(v) for v in res.test.values())


def test_text_lm_train_sample_and_tied_weights(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 200, encoding="utf-8")
    cfg = TrainConfig(
        task="text",
        task_params={"text_file": str(text), "seq_len": 20},
        hidden_size=16,
        embedding_size=16,
        tie_weights=True,
        batch_size=8,
        max_steps=20,
        eval_every=10,
        lr=1e-2,
    )
    res = train(cfg, tmp_path / "lm", progress=False)
    assert "bits_per_char" in res.test
    assert res.test["bits_per_char"] == pytest.approx(res.test["nats_per_char"] / math.log(2))
    run = load_run(tmp_path / "lm")
    assert run.model.head.weight is run.model.embedding.weight  # type: ignore[union-attr]
    s = run.sample("the ", length=30, temperature=0.5, seed=1)
    assert s.startswith("the ") and len(s) == 34 and set(s) <= set(run.vocab or [])
    assert run.sample("the ", length=30, temperature=0.5, seed=1) == s  # seeded
    greedy = run.sample("the ", length=10, temperature=0)
    assert len(greedy) == 14
    # characters outside the vocabulary are fed as the stand-in (a space), as explore does (issue 20)
    assert "X" not in (run.vocab or []) and " " in (run.vocab or [])
    assert run.sample("XYZ", length=5, seed=3) == "XYZ" + run.sample("   ", length=5, seed=3)[3:]


def test_head_reads_last_valid_step():
    """With lengths, a sequence classifier reads the output at lengths-1 (checked against slicing)."""
    cfg = ModelConfig(
        input_type="tokens", input_size=5, output_size=3, target="class_last", hidden_size=6, embedding_size=4
    )
    m = build_model(cfg).eval()
    x = torch.randint(0, 5, (3, 9))
    lengths = torch.tensor([9, 4, 1])
    out = m(x, lengths)
    for b in range(3):
        alone = m(x[b : b + 1, : lengths[b]])
        assert torch.allclose(out[b], alone[0], atol=1e-6)


def test_model_config_errors():
    with pytest.raises(ValueError, match="LSTM variants need arch='lstm'"):
        ModelConfig(
            input_type="tokens",
            input_size=5,
            output_size=3,
            target="class_last",
            arch="gru",
            variants={"peephole": True},
        )
    with pytest.raises(ValueError, match="tie_weights needs hidden_size"):
        ModelConfig(
            input_type="tokens",
            input_size=5,
            output_size=5,
            target="class_steps",
            hidden_size=8,
            embedding_size=4,
            tie_weights=True,
        )


def test_variants_train_through_the_loop(tmp_path):
    res = train(
        _cfg(max_steps=10, variants={"layer_norm": True, "peephole": True, "zoneout": 0.1}),
        tmp_path / "v",
        progress=False,
    )
    run = load_run(tmp_path / "v")
    assert run.model.rnn.layer_norm and run.model.rnn.peephole  # type: ignore[union-attr]
    assert 0 <= res.test["accuracy"] <= 1


def test_load_errors(tmp_path):
    with pytest.raises(RunError, match="not a run folder"):
        load_run(tmp_path / "missing")
    train(_cfg(max_steps=10), tmp_path / "r", progress=False)
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    cfg["format"] = 99
    (tmp_path / "r" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RunError, match="unknown config format 99"):
        load_run(tmp_path / "r")
    make_task("mystery", **TINY)  # the task itself is fine


def test_kernel_build_is_not_charged_to_the_time_budget(tmp_path, monkeypatch):
    """A first use builds the compiled kernels (about a minute on a fresh machine); train() does it
    before its clock starts, so a time budget buys training steps (make demo's LSTM once got one)."""
    import time

    from lstmkit import kernels

    calls = []

    def slow_build() -> bool:
        if not calls:
            time.sleep(1.5)  # the first call builds (in miniature); later calls answer from the cache
        calls.append(1)
        return False

    monkeypatch.setattr(kernels, "available", slow_build)
    res = train(_cfg(max_steps=100_000, max_time=1.0, eval_every=1000), tmp_path / "r", progress=False)
    assert calls and res.stopped_because == "max_time"
    assert res.steps > 5
