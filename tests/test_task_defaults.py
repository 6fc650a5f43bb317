"""Issue 20 item 3: each task's defaults give a real model, and `lstmkit train TASK --help` shows them."""

from __future__ import annotations

import re

import pytest

from lstmkit.cli import _train_config, build_parser, main
from lstmkit.train import TrainConfig


def _help(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    return re.sub(r"\s+", " ", capsys.readouterr().out)  # argparse wraps lines


def test_default_text_run_is_the_benchmarked_model():
    """The model of `lstmkit train text` with no options: H 512, embedding 64 (BENCHMARKS.md's
    Shakespeare run), checked on the built model's own modules, not the config alone."""
    import torch

    from lstmkit.data import make_task
    from lstmkit.models import build_model
    from lstmkit.train.config import model_config_for

    cfg = _train_config(build_parser(["train", "text"]).parse_args(["train", "text"]))
    assert (cfg.hidden_size, cfg.embedding_size, cfg.batch_size, cfg.lr) == (512, 64, 32, 4e-3)
    assert cfg.stateful and cfg.schedule == "cosine"  # the 1.394 nats/char recipe (BENCHMARKS.md)
    off = build_parser(["train", "text"]).parse_args(["train", "text", "--no-stateful"])
    assert _train_config(off).stateful is False
    task = make_task("text", seed=0, **cfg.task_params)
    model = build_model(model_config_for(cfg, task))
    lstm = torch.nn.LSTM(64, 512)  # the oracle: the shapes torch gives an LSTM of that size
    assert model.rnn.weight_hh_l0.shape == lstm.weight_hh_l0.shape == (4 * 512, 512)
    assert model.rnn.weight_ih_l0.shape == lstm.weight_ih_l0.shape == (4 * 512, 64)
    assert model.embedding.weight.shape == (len(task.vocab), 64)


def test_flags_override_task_defaults_and_variants_merge():
    args = ["train", "adding", "--hidden-size", "7", "--peephole"]
    cfg = _train_config(build_parser(args).parse_args(args))
    assert cfg.hidden_size == 7 and cfg.batch_size == 50 and cfg.weight_decay == 0.0
    assert cfg.variants == {"forget_bias": 4.0, "peephole": True}
    args = ["train", "adding", "--forget-bias", "2"]
    assert _train_config(build_parser(args).parse_args(args)).variants["forget_bias"] == 2.0
    # the library keeps its generic defaults unless asked for a task's
    assert TrainConfig(task="text").hidden_size == 64
    assert TrainConfig.for_task("text").hidden_size == 512


def test_help_of_a_task_shows_its_defaults(capsys):
    text = _help(capsys, ["train", "text", "--help"])
    for flag, default in [
        ("--hidden-size", "512"),
        ("--embedding-size", "64"),
        ("--seq-len", "100"),
        ("--lr", "0.004"),
        ("--eval-every", "500"),
        ("--text-file", "Shakespeare's plays"),
    ]:
        pattern = re.escape(flag) + r" [A-Z_]+ (?:(?! --).)*\(default: " + re.escape(default) + r"\)"
        assert re.search(pattern, text), flag
    assert "--window" not in text and "--length" not in text  # other tasks' data flags are hidden

    csv = _help(capsys, ["train", "csv", "--help"])
    assert re.search(r"--window WINDOW (?:(?! --).)*\(default: from the detected season", csv)
    assert re.search(r"--horizon HORIZON (?:(?! --).)*\(default: one detected season", csv)
    assert re.search(r"--hidden-size HIDDEN_SIZE (?:(?! --).)*\(default: 64\)", csv)

    adding = _help(capsys, ["train", "adding", "--help"])
    assert re.search(r"--length LENGTH (?:(?! --).)*\(default: 100\)", adding)
    assert re.search(r"--forget-bias FORGET_BIAS (?:(?! --).)*\(default: 4\)", adding)


def test_help_without_a_task_lists_each_tasks_defaults(capsys):
    text = _help(capsys, ["train", "--help"])
    assert re.search(r"--hidden-size HIDDEN_SIZE hidden units \(default: 64; [^)]*text 512", text)
    assert "lstmkit train TASK --help" in text
