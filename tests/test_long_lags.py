"""Recipes for long time lags (issue 21): chrono initialisation, clipping by value, stateful (truncated
BPTT) training of the text task and evaluation with the state carried through a split."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import lstmkit
from lstmkit.data import make_task
from lstmkit.errors import InputError
from lstmkit.models import ModelConfig, build_model
from lstmkit.train import TrainConfig, resume, train
from lstmkit.train.evaluate import evaluate_carried, evaluate_model

# ----------------------------------------------------------------------------- chrono initialisation


def _chrono_rows(b_ih: torch.Tensor, b_hh: torch.Tensor, H: int) -> tuple[torch.Tensor, ...]:
    """(b_i, b_f, b_g, b_o) of the effective bias b_ih + b_hh, gate order i, f, g, o."""
    b = (b_ih + b_hh).detach().double()
    return b[:H], b[H : 2 * H], b[2 * H : 3 * H], b[3 * H :]


@pytest.mark.parametrize("t_max", [10, 1000])
def test_chrono_biases_follow_the_formula(t_max):
    H = 4000
    torch.manual_seed(0)
    m = lstmkit.LSTM(3, H, num_layers=2, chrono_init=t_max)
    torch.manual_seed(0)
    ref = nn.LSTM(3, H, num_layers=2)
    lim = 1 / math.sqrt(H)
    for k in range(2):
        b_ih, b_hh = getattr(m, f"bias_ih_l{k}"), getattr(m, f"bias_hh_l{k}")
        b_i, b_f, b_g, b_o = _chrono_rows(b_ih, b_hh, H)
        # b_f = log u, u in [1, T_max - 1]; b_i = -b_f
        u = torch.exp(b_f)
        assert float(u.min()) >= 1 - 1e-5 and float(u.max()) <= t_max - 1 + 1e-3
        assert torch.equal(b_i, -b_f)
        # u is uniform on [1, T_max - 1]: mean T_max / 2, sd (T_max - 2) / sqrt(12) (n = H draws)
        sd = (t_max - 2) / math.sqrt(12)
        assert abs(float(u.mean()) - t_max / 2) < 5 * sd / math.sqrt(H)
        # its quartiles where a uniform's are (each within a few binomial standard errors)
        for q in (0.25, 0.5, 0.75):
            frac = float((u < 1 + q * (t_max - 2)).double().mean())
            assert abs(frac - q) < 5 * math.sqrt(q * (1 - q) / H)
        # the chrono values are in bias_ih; bias_hh's input and forget rows are 0
        assert torch.count_nonzero(b_hh[: 2 * H]) == 0
        assert torch.equal(b_ih[H : 2 * H].double(), b_f)
        # the other gates keep torch's uniform init, and every weight is torch's under the same seed
        assert float(b_g.abs().max()) <= 2 * lim and float(b_o.abs().max()) <= 2 * lim
        for name in (f"weight_ih_l{k}", f"weight_hh_l{k}"):
            assert torch.equal(getattr(m, name), getattr(ref, name))
        for name in (f"bias_ih_l{k}", f"bias_hh_l{k}"):
            assert torch.equal(getattr(m, name)[2 * H :], getattr(ref, name)[2 * H :])


def test_chrono_is_deterministic_per_seed_and_off_by_default():
    def make(seed, **kw):
        torch.manual_seed(seed)
        return lstmkit.LSTM(4, 32, **kw)

    a, b, c = make(1, chrono_init=100), make(1, chrono_init=100), make(2, chrono_init=100)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.bias_ih_l0, c.bias_ih_l0)
    # default: torch's initialisation, bit for bit
    torch.manual_seed(1)
    ref = nn.LSTM(4, 32)
    plain = make(1)
    assert all(torch.equal(getattr(plain, n), getattr(ref, n)) for n, _ in ref.named_parameters())
    # the cell: same rule
    torch.manual_seed(3)
    cell = lstmkit.LSTMCell(4, 500, chrono_init=50)
    b_i, b_f, _, _ = _chrono_rows(cell.bias_ih, cell.bias_hh, 500)
    assert torch.equal(b_i, -b_f) and float(b_f.min()) >= 0 and float(torch.exp(b_f).max()) <= 49 + 1e-4
    assert torch.count_nonzero(cell.bias_hh[:1000]) == 0
    torch.manual_seed(3)
    again = lstmkit.LSTMCell(4, 500, chrono_init=50)
    assert torch.equal(cell.bias_ih, again.bias_ih)


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"chrono_init": 2}, "T_max > 2"),
        ({"chrono_init": float("inf")}, "T_max > 2"),
        ({"chrono_init": 100, "forget_bias": 1.0}, "give only one"),
        ({"chrono_init": 100, "coupled": True}, "coupled"),
        ({"chrono_init": 100, "bias": False}, "bias=True"),
    ],
)
def test_chrono_bad_input(kw, msg):
    with pytest.raises(InputError, match=msg):
        lstmkit.LSTM(3, 8, **kw)


def test_chrono_through_the_train_config_and_the_model():
    # adding's task default forget_bias 4 gives way to chrono_init given alone
    cfg = TrainConfig.for_task("adding", variants={"chrono_init": 1000}, max_steps=1)
    assert cfg.variants == {"chrono_init": 1000}
    mcfg = ModelConfig(
        input_type="vector",
        input_size=2,
        output_size=1,
        target="regress_last",
        hidden_size=64,
        variants=dict(cfg.variants),
    )
    torch.manual_seed(0)
    model = build_model(mcfg)
    assert model.rnn.chrono_init == 1000
    b_i, b_f, _, _ = _chrono_rows(model.rnn.bias_ih_l0, model.rnn.bias_hh_l0, 64)
    assert torch.equal(b_i, -b_f) and float(torch.exp(b_f).max()) <= 999 + 1e-3
    with pytest.raises(InputError, match="arch='lstm'"):
        build_model(
            ModelConfig(
                input_type="vector",
                input_size=2,
                output_size=1,
                target="regress_last",
                arch="gru",
                variants={"chrono_init": 100},
            )
        )


def test_chrono_and_clip_mode_on_the_command_line(tmp_path):
    from lstmkit.cli import main

    out = tmp_path / "r"
    rc = main(
        [
            "train",
            "adding",
            "--length",
            "12",
            "--n-val",
            "16",
            "--n-test",
            "16",
            "--hidden-size",
            "8",
            "--max-steps",
            "2",
            "--eval-every",
            "2",
            "--chrono-init",
            "50",
            "--clip-mode",
            "value",
            "--clip",
            "0.5",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    cfg = json.loads((out / "config.json").read_text())["train"]
    assert cfg["variants"] == {"chrono_init": 50.0} and cfg["clip_mode"] == "value"


def test_clip_mode_value_clamps_each_gradient_entry(tmp_path, monkeypatch):
    seen: list[tuple[float, float]] = []
    real_step = torch.optim.AdamW.step

    def spy(self, *a, **k):  # the largest gradient entry and the global norm the optimizer sees
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        top = max(float(g.abs().max()) for g in grads)
        norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))
        seen.append((top, norm))
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    base = dict(
        task="adding",
        task_params={"T": 12, "n_val": 16, "n_test": 16},
        hidden_size=8,
        max_steps=3,
        eval_every=3,
        lr=1e-2,
    )
    train(TrainConfig(**base, clip=1e-4, clip_mode="value"), tmp_path / "v", progress=False)
    # by value: every entry in [-clip, clip], some at the bound, so the norm is well above clip
    assert seen and all(top == pytest.approx(1e-4, rel=1e-6) and norm > 2e-4 for top, norm in seen)
    seen.clear()
    train(TrainConfig(**base, clip=1e-4), tmp_path / "n", progress=False)
    # by norm (the default): the global norm at clip, so every entry is below it
    assert seen and all(norm == pytest.approx(1e-4, rel=1e-4) and top < 1e-4 for top, norm in seen)
    with pytest.raises(InputError, match="clip_mode"):
        TrainConfig(clip_mode="max")


# ----------------------------------------------------------------------------- stateful text


def _text_file(tmp_path: Path, n: int = 30000) -> Path:
    rng = np.random.default_rng(5)
    words = ["alpha ", "beta ", "gamma ", "delta\n", "eps ", "zeta, "]
    text = "".join(words[i] for i in rng.integers(0, len(words), n // 5))
    p = tmp_path / "t.txt"
    p.write_text(text, encoding="utf-8")
    return p


def test_stateful_batches_are_consecutive_and_stay_in_the_training_text(tmp_path):
    p = _text_file(tmp_path)
    task = make_task("text", text_file=str(p), seq_len=25)
    train_text = p.read_text(encoding="utf-8")[: int(len(p.read_text(encoding="utf-8")) * 0.9)]
    assert task.split_text("train") == train_text
    B, T = 7, 25
    S = len(train_text) // B
    n_win = task.stream_windows(B)
    assert n_win == (S - 1) // T
    prev = None
    for k in range(n_win + 2):
        b = task.stream_batch(B, k)
        kk = k % n_win
        assert b.meta["first"] == (kk == 0)
        starts = b.meta["start"].tolist()
        assert starts == [r * S + kk * T for r in range(B)]
        for r in range(B):
            s = starts[r]
            # x and y are the training text at s and one character on (the independent decoding)
            assert task.decode(b.x[r]) == train_text[s : s + T]
            assert task.decode(b.y[r]) == train_text[s + 1 : s + T + 1]
            # a row's windows never leave its stretch (so never the training text either)
            assert r * S <= s and s + T + 1 <= (r + 1) * S <= len(train_text)
        if prev is not None and kk != 0:
            # window k+1 of each row starts where window k ended: its first input is k's last target
            assert torch.equal(b.x[:, 0], prev.y[:, -1])
            assert b.meta["start"].tolist() == [s + T for s in prev.meta["start"].tolist()]
        prev = b
    with pytest.raises(InputError, match="smaller batch_size"):
        task.stream_windows(len(train_text) // 20)


def test_stateful_needs_a_stream_task(tmp_path):
    cfg = TrainConfig(
        task="adding", task_params={"T": 12, "n_val": 16, "n_test": 16}, hidden_size=8, max_steps=2, stateful=True
    )
    with pytest.raises(InputError, match="pass --no-stateful"):
        train(cfg, tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "config.json").exists()


def _stateless_model(vocab: int) -> nn.Module:
    """A language model whose output at step t depends on x_t only: W_hh = 0 (h_{t-1} is not used) and
    forget gate σ(-1e4) = 0 (c_{t-1} is not used)."""
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(
            input_type="tokens",
            input_size=vocab,
            output_size=vocab,
            target="class_steps",
            hidden_size=16,
            embedding_size=8,
        )
    )
    with torch.no_grad():
        model.rnn.weight_hh_l0.zero_()
        model.rnn.bias_ih_l0[16:32] = -1e4
        model.rnn.bias_hh_l0[16:32] = 0
    return model


def test_carried_evaluation_equals_windowed_for_a_model_without_memory(tmp_path):
    task = make_task("text", text_file=str(_text_file(tmp_path)), seq_len=30, max_eval_chars=1234)
    model = _stateless_model(task.input_size)
    # the model has no memory: a sequence scored alone equals its tail scored after a prefix
    x = task.encode("alpha beta gamma").unsqueeze(0)
    with torch.no_grad():
        assert torch.allclose(model(x)[:, 6:], model(x[:, 6:]), atol=1e-6)
    for split in ("val", "test"):
        win = evaluate_model(model, task, split, batch_size=16)
        for rows in (1, 3, 40):
            car = evaluate_carried(model, task, split, rows=rows, chunk=17)
            assert car["nats_carried"] == pytest.approx(win["nats_per_char"], rel=1e-6)
            assert car["bits_carried"] == pytest.approx(win["bits_per_char"], rel=1e-6)
            assert car["accuracy_carried"] == pytest.approx(win["accuracy"], rel=1e-9)
    # every target once, in order: the carried rows hold the split's text
    full = task.carried_eval_set("val", 3)
    ids = task._ids["val"][:1234]
    assert full.y[full.mask].tolist() == ids[1:].tolist() and full.x[full.mask].tolist() == ids[:-1].tolist()
    # a model with memory scores differently carried (the equality above can fail)
    torch.manual_seed(0)
    mem = build_model(
        ModelConfig(
            input_type="tokens",
            input_size=task.input_size,
            output_size=task.input_size,
            target="class_steps",
            hidden_size=16,
            embedding_size=8,
        )
    )
    with torch.no_grad():
        mem.rnn.weight_hh_l0.mul_(20)
    a = evaluate_model(mem, task, "val", batch_size=16)["nats_per_char"]
    b = evaluate_carried(mem, task, "val", rows=3)["nats_carried"]
    assert abs(a - b) > 1e-4


def _stateful_cfg(text: Path, **kw) -> TrainConfig:
    base = dict(
        task="text",
        task_params={"text_file": str(text), "seq_len": 20, "max_eval_chars": 600},
        hidden_size=16,
        embedding_size=8,
        batch_size=8,
        max_steps=24,
        eval_every=8,
        log_every=4,
        lr=1e-2,
        stateful=True,
        eval_batch_size=8,
    )
    base.update(kw)
    return TrainConfig(**base)


def _ckpt(run: Path) -> dict[str, torch.Tensor]:
    info = json.loads((run / "train_state.json").read_text())
    return load_file(str(run / info["checkpoint"]))


def test_stateful_training_resumes_exactly(tmp_path):
    # a short text: 8 rows x 3 windows per pass, so the 24 steps wrap (state reset) several times
    text = _text_file(tmp_path, 600)
    task = make_task("text", text_file=str(text), seq_len=20)
    n_win = task.stream_windows(8)
    assert 2 <= n_win < 24 and 8 % n_win != 0  # the interruption falls mid-pass, with a state carried
    ra = train(_stateful_cfg(text), tmp_path / "a", progress=False)
    train(_stateful_cfg(text, max_steps=8), tmp_path / "c", progress=False)
    ca = _ckpt(tmp_path / "c")
    assert "carry.0" in ca and "carry.1" in ca and ca["carry.0"].shape == (1, 8, 16)
    rc = resume(tmp_path / "c", max_steps=24, progress=False)
    wa, wc = _ckpt(tmp_path / "a"), _ckpt(tmp_path / "c")
    assert set(wa) == set(wc) and all(torch.equal(wa[k], wc[k]) for k in wa)
    assert ra.val == rc.val and ra.test == rc.test
    assert "nats_carried" in ra.val and "nats_carried" in ra.test and "nats_per_char" in ra.val
    recs = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert all("nats_carried" in r for r in recs if r["split"] == "val")
    # the carried state matters: a run that resets it at the resume gives other weights
    train(_stateful_cfg(text, max_steps=8), tmp_path / "d", progress=False)
    info = json.loads((tmp_path / "d" / "train_state.json").read_text())
    t = load_file(str(tmp_path / "d" / info["checkpoint"]))
    from safetensors.torch import save_file

    save_file({k: v for k, v in t.items() if not k.startswith("carry.")}, str(tmp_path / "d" / info["checkpoint"]))
    import hashlib

    info["sha256"] = hashlib.sha256((tmp_path / "d" / info["checkpoint"]).read_bytes()).hexdigest()
    (tmp_path / "d" / "train_state.json").write_text(json.dumps(info))
    resume(tmp_path / "d", max_steps=24, progress=False)
    wd = _ckpt(tmp_path / "d")
    assert not all(torch.equal(wa[k], wd[k]) for k in wa if k.startswith("model."))


def test_windowed_text_runs_report_both_figures_and_are_unchanged(tmp_path):
    text = _text_file(tmp_path, 600)
    cfg = _stateful_cfg(text, stateful=False, max_steps=4, eval_every=4)
    res = train(cfg, tmp_path / "w", progress=False)
    assert "nats_carried" in res.test and "nats_per_char" in res.test
    recs = [json.loads(x) for x in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    assert not any("nats_carried" in r for r in recs if r["split"] == "val")  # periodic: windowed only


# ----------------------------------------------------------------------------- --init-from (curricula over T)


def _adding_run(path: Path, T: int, **kw) -> TrainConfig:
    cfg = TrainConfig(
        task="adding", task_params={"T": T, "n_val": 16, "n_test": 16}, hidden_size=8, max_steps=1, eval_every=1, **kw
    )
    train(cfg, path, progress=False, log=lambda s: None)
    return cfg


def test_init_from_starts_where_the_source_run_ended(tmp_path):
    # the source trains 30 steps at T 12 with a large learning rate, so its weights are far from any fresh
    # initialisation; the second run at T 30 starts from them and takes one step of lr 1e-12 (AdamW moves
    # each entry by about lr), so it must hold the source's weights; a run without init_from must not
    src = tmp_path / "src"
    train(
        TrainConfig(task="adding", task_params={"T": 12, "n_val": 16, "n_test": 16}, hidden_size=8, lr=0.05,
                    max_steps=30, eval_every=30),
        src, progress=False, log=lambda s: None,
    )  # fmt: skip
    _adding_run(tmp_path / "next", 30, lr=1e-12, weight_decay=0.0, init_from=str(src), seed=3)
    _adding_run(tmp_path / "fresh", 30, lr=1e-12, weight_decay=0.0, seed=0)
    a = load_file(src / "model.safetensors")
    b = load_file(tmp_path / "next" / "model.safetensors")
    c = load_file(tmp_path / "fresh" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-9, rtol=0)
    assert max(float((c[k] - a[k]).abs().max()) for k in a) > 0.01
    saved = json.loads((tmp_path / "next" / "config.json").read_text())["train"]
    assert saved["init_from"] == str(src) and saved["task_params"]["T"] == 30


def test_init_from_bad_input_writes_nothing(tmp_path, capsys):
    from lstmkit.cli import main

    src = tmp_path / "src"
    _adding_run(src, 12)
    base = ["train", "adding", "--length", "12", "--max-steps", "1", "--quiet"]
    rc = main([*base, "--hidden-size", "16", "--init-from", str(src), "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert rc == 2 and "the run's model differs from this one" in err
    # which weight is named first depends on the order the state dict is checked in; any named one must
    # carry the source's hidden size 8 (4 * 8 = 32 rows) against the 16 (64 rows) asked for
    m = re.search(r"has shape \(([\d, ]+)\) but the model needs \(([\d, ]+)\)", err)
    assert m, err
    have = [int(d) for d in m.group(1).replace(" ", "").split(",") if d]
    need = [int(d) for d in m.group(2).replace(" ", "").split(",") if d]
    assert have != need and (8 in have or 32 in have) and (16 in need or 64 in need)
    assert not (tmp_path / "a").exists()
    rc = main([*base, "--init-from", str(tmp_path / "nothing"), "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert rc == 2 and "not a run folder" in err and err.count("\n") == 1
    assert not (tmp_path / "b").exists()
