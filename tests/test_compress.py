"""Compression: quantization, pruning, low-rank, distillation, against hand-checked expectations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import make_run
from safetensors.torch import load_file

import lstmkit
from lstmkit.compress import compress
from lstmkit.compress.distill import soft_loss
from lstmkit.compress.lowrank import energy_rank, factorise
from lstmkit.compress.prune import magnitude_mask, shrink_state, zhu_gupta
from lstmkit.models import SequenceModel
from lstmkit.runtime.quant import dequantize_rows, pack_int4, quantize_rows, unpack_int4
from lstmkit.train import RunError, load_run


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path / "base")


# ----------------------------------------------------------------------------- quantization math


def test_quantize_rows_hand_checked():
    w = np.array([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [3.0, 1.5, -0.75]], np.float32)
    q, s = quantize_rows(w, 8)
    np.testing.assert_allclose(s, [1 / 127, 1.0, 3 / 127], rtol=1e-6)
    # 0.5·127 = 63.5 and 1.5/3·127 = 63.5 round half to even -> 64; 0.25·127 = 31.75 -> 32
    assert q.tolist() == [[64, -127, 32], [0, 0, 0], [127, 64, -32]]
    assert q.dtype == np.int8 and s.dtype == np.float32
    q4, s4 = quantize_rows(np.array([[0.7, -0.25, 0.05, 0.35]], np.float32), 4)
    np.testing.assert_allclose(s4, [0.1], rtol=1e-6)
    # 0.7/0.1 = 7, -2.5 -> -2 (half to even), 0.5 -> 0, 3.5 -> 4
    assert q4.tolist() == [[7, -2, 0, 4]]
    np.testing.assert_allclose(dequantize_rows(q4, s4), [[0.7, -0.2, 0.0, 0.4]], rtol=1e-6)


def test_quantize_error_is_at_most_half_a_step():
    w = np.random.default_rng(0).normal(size=(16, 40)).astype(np.float32)
    for bits in (8, 4):
        q, s = quantize_rows(w, bits)
        assert np.abs(q).max() == 2 ** (bits - 1) - 1  # each row's largest weight maps to ±q_max
        assert np.all(np.abs(dequantize_rows(q, s) - w) <= s[:, None] / 2 + 1e-7)


def test_int4_packing_layout_and_round_trip():
    q = np.array([[-7, 7, 0]], np.int8)
    # stored as q + 8 = 1, 15, 8 (and 8 for the padding column); low nibble = even column
    assert pack_int4(q).tolist() == [[0xF1, 0x88]]
    r = np.random.default_rng(1).integers(-7, 8, size=(5, 9)).astype(np.int8)
    assert np.array_equal(unpack_int4(pack_int4(r), 9), r)
    with pytest.raises(ValueError):
        pack_int4(np.array([[8]], np.int8))


def test_quantize_bits_refused():
    with pytest.raises(ValueError, match="bits must be 8 or 4"):
        quantize_rows(np.ones((2, 2), np.float32), 3)


# ----------------------------------------------------------------------------- quantize a run


def test_quantize_run_folder(run: Path, tmp_path: Path):
    res = compress(run, "quantize", tmp_path / "q8")
    out = tmp_path / "q8"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["compress"]["method"] == "quantize" and cfg["compress"]["bits"] == 8
    t = load_file(str(out / "model.safetensors"))
    assert t["rnn.weight_ih_l0.q"].dtype == torch.int8 and t["rnn.weight_ih_l0.scale"].dtype == torch.float32
    assert "rnn.weight_ih_l0" not in t and t["rnn.bias_ih_l0"].dtype == torch.float32
    # the loaded model's weights are exactly q · s
    src = load_run(run)
    q8 = load_run(out)
    w = src.model.rnn.weight_hh_l0.detach().numpy()
    q, s = quantize_rows(w, 8)
    assert np.array_equal(q8.model.rnn.weight_hh_l0.detach().numpy(), dequantize_rows(q, s))
    assert q8.evaluate("val") == pytest.approx(res["val"])
    # a matrix of C columns: 4C bytes per row in float32, C + 4 in int8 with its scale
    assert set(cfg["compress"]["quantized"]) == {
        "embedding.weight",
        "rnn.weight_ih_l0",
        "rnn.weight_hh_l0",
        "head.weight",
    }
    for k in cfg["compress"]["quantized"]:
        rows, cols = src.model.state_dict()[k].shape
        assert t[f"{k}.q"].numel() + 4 * t[f"{k}.scale"].numel() == rows * (cols + 4)


def test_quantize_is_3_5x_smaller_for_real_sizes(tmp_path: Path):
    make_run(tmp_path / "base", hidden=64)
    compress(tmp_path / "base", "quantize", tmp_path / "q8", evaluate=False)
    w = load_file(str(tmp_path / "base" / "model.safetensors"))["rnn.weight_hh_l0"]
    t = load_file(str(tmp_path / "q8" / "model.safetensors"))
    assert w.numel() * 4 / (t["rnn.weight_hh_l0.q"].numel() + 4 * t["rnn.weight_hh_l0.scale"].numel()) >= 3.5


@pytest.mark.parametrize("variants", [{}, {"peephole": True, "layer_norm": True}])
def test_quantize_stores_the_lstm_biases_once(tmp_path: Path, variants: dict[str, Any]):
    """b_ih + b_hh saved once as bias_ih (bias_hh comes back as zeros): the outputs equal a model with
    the dequantized weights and the two original biases, and the file is smaller by one bias vector."""
    base = make_run(tmp_path / "base", hidden=16, layers=2, variants=variants)
    compress(base, "quantize", tmp_path / "q8", evaluate=False, activations="float")
    cfg = json.loads((tmp_path / "q8" / "config.json").read_text())
    assert cfg["compress"]["merged_biases"] == ["rnn.bias_hh_l0", "rnn.bias_hh_l1"]
    t = load_file(str(tmp_path / "q8" / "model.safetensors"))
    assert "rnn.bias_hh_l0" not in t and "rnn.bias_hh_l1" not in t
    src, q8 = load_run(base), load_run(tmp_path / "q8")
    for k in (0, 1):
        b_ih, b_hh = (getattr(src.model.rnn, f"bias_{p}_l{k}").detach() for p in ("ih", "hh"))
        assert torch.equal(getattr(q8.model.rnn, f"bias_ih_l{k}").detach(), b_ih + b_hh)
        assert torch.equal(getattr(q8.model.rnn, f"bias_hh_l{k}").detach(), torch.zeros_like(b_hh))
    # the oracle: the source model with its weight matrices replaced by their int8 values
    oracle = src.model
    with torch.no_grad():
        for name in cfg["compress"]["quantized"]:
            p = oracle.get_parameter(name)
            q, sc = quantize_rows(p.detach().numpy(), 8)
            p.copy_(torch.from_numpy(dequantize_rows(q, sc)))
    batch = src.task.eval_batches("val", 8)[0]
    with torch.no_grad():
        want = oracle.eval()(batch.x, batch.lengths)
        got = q8.model.eval()(batch.x, batch.lengths)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_quantize_int4_loads(run: Path, tmp_path: Path):
    compress(run, "quantize", tmp_path / "q4", bits=4)
    q4 = load_run(tmp_path / "q4")
    w = load_run(run).model.rnn.weight_ih_l0.detach().numpy()
    q, s = quantize_rows(w, 4)
    assert np.array_equal(q4.model.rnn.weight_ih_l0.detach().numpy(), dequantize_rows(q, s))


def test_quantizing_a_quantized_run_is_refused(run: Path, tmp_path: Path):
    compress(run, "quantize", tmp_path / "q8")
    with pytest.raises(ValueError, match="already quantized"):
        compress(tmp_path / "q8", "quantize", tmp_path / "q8b")
    with pytest.raises(ValueError, match="already holds a run"):
        compress(run, "quantize", tmp_path / "q8")
    with pytest.raises(ValueError, match="is the source run"):
        compress(run, "quantize", run)


def test_tampered_quantized_weights(run: Path, tmp_path: Path):
    compress(run, "quantize", tmp_path / "q8")
    p = tmp_path / "q8" / "model.safetensors"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated or damaged") as e:
        load_run(tmp_path / "q8")
    assert "\n" not in str(e.value)


def test_lstmkit_load_rebuilds_compressed_runs(run: Path, tmp_path: Path):
    """The public loader (lstmkit.load, which evaluate, sample, explore and export use) rebuilds the
    float weights of quantized and low-rank runs: q · s and the truncated SVD, computed here with NumPy."""
    compress(run, "quantize", tmp_path / "q8", activations="float", evaluate=False)
    compress(run, "lowrank", tmp_path / "lr", rank=2, steps=0, evaluate=False)
    w = load_file(str(run / "model.safetensors"))["rnn.weight_hh_l0"].numpy().astype(np.float64)
    q, s = quantize_rows(w.astype(np.float32), 8)
    got = lstmkit.load(tmp_path / "q8").model.rnn.weight_hh_l0.detach().numpy()
    assert np.array_equal(got, q.astype(np.float32) * s[:, None])
    u, sv, vt = np.linalg.svd(w, full_matrices=False)
    best_rank2 = (u[:, :2] * sv[:2]) @ vt[:2]
    got = lstmkit.load(tmp_path / "lr").model.rnn.weight_hh_l0.detach().numpy()
    np.testing.assert_allclose(got, best_rank2, rtol=0, atol=1e-5)
    # a damaged record of the compression is a RunError naming config.json, not a crash
    cfg = json.loads((tmp_path / "q8" / "config.json").read_text())
    cfg["compress"]["bits"] = 3
    (tmp_path / "q8" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RunError, match=r"config\.json: field 'compress' needs 'quantized' names and bits 8 or 4"):
        lstmkit.load(tmp_path / "q8")


# ----------------------------------------------------------------------------- pruning


def test_zhu_gupta_schedule_hand_values():
    s = [zhu_gupta(t, 0.8, 0, 100, 10) for t in (0, 10, 50, 55, 100, 150)]
    # 0.8 (1 - (1 - t/100)^3): 0, 0.8·0.271 = 0.2168, 0.8·0.875 = 0.7, constant to the next update, 0.8
    assert s == pytest.approx([0.0, 0.2168, 0.7, 0.7, 0.8, 0.8])


def test_magnitude_mask_counts():
    w = torch.tensor([[0.1, -3.0, 0.2], [-0.05, 2.0, 0.0]])
    m = magnitude_mask(w, 0.5)
    assert m.tolist() == [[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]]
    assert int((magnitude_mask(torch.randn(40, 25), 0.3) == 0).sum()) == 300


def test_prune_unstructured_sparsity_held(run: Path, tmp_path: Path):
    res = compress(run, "prune", tmp_path / "p", sparsity=0.6, steps=8, batch_size=4)
    m = load_run(tmp_path / "p").model
    for name in ("weight_ih_l0", "weight_hh_l0"):
        w = getattr(m.rnn, name)
        assert int((w == 0).sum()) == round(0.6 * w.numel()), name
    assert res["sparsity"]["rnn.weight_ih_l0"] == pytest.approx(round(0.6 * 32 * 6) / (32 * 6))


def test_prune_one_shot_keeps_largest(run: Path, tmp_path: Path):
    compress(run, "prune", tmp_path / "p", sparsity=0.5, steps=0)
    before = load_run(run).model.rnn.weight_hh_l0.detach()
    after = load_run(tmp_path / "p").model.rnn.weight_hh_l0.detach()
    kept = after != 0
    assert before[kept].abs().min() >= before[~kept].abs().max()
    assert torch.equal(after[kept], before[kept])


def test_structured_prune_removes_dead_units_exactly(tmp_path: Path):
    """A unit whose output nobody reads can be removed without changing the model's outputs."""
    make_run(tmp_path / "base", hidden=6, layers=2)
    src = load_run(tmp_path / "base")
    sd = {k: v.clone() for k, v in src.model.state_dict().items()}
    H = 6
    dead = [1, 4]
    for k in range(2):  # unit j feeds W_hh's column j, the next layer's W_ih column j or the head
        for j in dead:
            sd[f"rnn.weight_hh_l{k}"][:, j] = 0
            nxt = "rnn.weight_ih_l1" if k == 0 else "head.weight"
            sd[nxt][:, j] = 0
    keep = [torch.tensor([0, 2, 3, 5])] * 2
    small_sd = shrink_state(sd, keep, H, 2)
    assert small_sd["rnn.weight_ih_l0"].shape == (16, 6) and small_sd["rnn.weight_hh_l1"].shape == (16, 4)
    assert torch.equal(small_sd["rnn.bias_ih_l0"][4:8], sd["rnn.bias_ih_l0"][6 + torch.tensor([0, 2, 3, 5])])
    import dataclasses

    big = SequenceModel(src.model_config).eval()
    big.load_state_dict(sd)
    small = SequenceModel(dataclasses.replace(src.model_config, hidden_size=4)).eval()
    small.load_state_dict(small_sd)
    x = torch.randint(0, src.model_config.input_size, (3, 10))
    with torch.no_grad():
        torch.testing.assert_close(small(x), big(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("score", ["weights", "activity"])
def test_prune_structured_run(tmp_path: Path, score: str):
    make_run(tmp_path / "base", hidden=8, variants={"peephole": True})
    res = compress(tmp_path / "base", "prune", tmp_path / "u", units=0.5, score=score, steps=4, batch_size=4)
    r = load_run(tmp_path / "u")
    assert r.model_config.hidden_size == 4 and r.model.rnn.weight_peephole_l0.shape == (3, 4)
    assert res["params"] < res["source_params"]
    assert set(res["val"]) == set(r.evaluate("val"))


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_prune_bad_sparsity(run: Path, tmp_path: Path, bad: float):
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        compress(run, "prune", tmp_path / "p", sparsity=bad)


# ----------------------------------------------------------------------------- low rank


def test_factorise_hand_checked():
    w = torch.zeros(4, 3)
    w[0, 0], w[1, 1], w[2, 2] = 3.0, 2.0, 1.0
    a, b = factorise(w, 2)
    assert a.shape == (4, 2) and b.shape == (2, 3)
    expect = torch.zeros(4, 3)
    expect[0, 0], expect[1, 1] = 3.0, 2.0
    torch.testing.assert_close(a @ b, expect, atol=1e-6, rtol=0)
    # cumulative energies 9, 13, 14 of 14: 0.643, 0.929, 1
    s = torch.tensor([3.0, 2.0, 1.0])
    assert [energy_rank(s, e) for e in (0.5, 0.9, 0.92, 0.93, 1.0)] == [1, 2, 2, 3, 3]
    with pytest.raises(ValueError, match="rank 4 is larger than the 4x3 matrix"):
        factorise(w, 4)


def test_lowrank_run(run: Path, tmp_path: Path):
    res = compress(run, "lowrank", tmp_path / "lr", rank=2, steps=4, batch_size=4)
    t = load_file(str(tmp_path / "lr" / "model.safetensors"))
    assert t["rnn.weight_hh_l0.u"].shape == (32, 2) and t["rnn.weight_hh_l0.v"].shape == (2, 8)
    r = load_run(tmp_path / "lr")
    torch.testing.assert_close(r.model.rnn.weight_hh_l0.detach(), t["rnn.weight_hh_l0.u"] @ t["rnn.weight_hh_l0.v"])
    assert torch.linalg.matrix_rank(r.model.rnn.weight_ih_l0.detach()) <= 2
    # W_ih (32x6) and W_hh (32x8) become rank-2 factors: 2·(32 + 6) and 2·(32 + 8) parameters
    assert res["params"] == res["source_params"] - 32 * 6 - 32 * 8 + 2 * (32 + 6) + 2 * (32 + 8)


def test_lowrank_bad_input(run: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="larger than the 32x6 matrix"):
        compress(run, "lowrank", tmp_path / "lr", rank=7)
    with pytest.raises(ValueError, match="exactly one of"):
        compress(run, "lowrank", tmp_path / "lr", rank=2, energy=0.9)
    with pytest.raises(ValueError, match="energy must be in"):
        compress(run, "lowrank", tmp_path / "lr", energy=1.5)
    assert not (tmp_path / "lr" / "config.json").exists()


# ----------------------------------------------------------------------------- distillation


def test_soft_loss_zero_when_equal_and_positive_otherwise():
    z = torch.randn(4, 5)
    assert float(soft_loss(z, z, "class_last", 2.0, None)) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_loss(z, z + torch.randn(4, 5), "class_last", 2.0, None)) > 0
    # regression: the squared error to the teacher's prediction
    assert float(soft_loss(torch.zeros(2, 1), torch.ones(2, 1) * 3, "regress_last", 1.0, None)) == pytest.approx(9.0)


def test_distill_run(run: Path, tmp_path: Path):
    res = compress(run, "distill", tmp_path / "s", hidden_size=4, steps=4, batch_size=4)
    r = load_run(tmp_path / "s")
    assert r.model_config.hidden_size == 4 and res["params"] < res["source_params"]
    cfg = json.loads((tmp_path / "s" / "config.json").read_text())
    assert cfg["compress"]["method"] == "distill" and cfg["compress"]["source"] == str(run)


def test_unknown_method_and_option(run: Path, tmp_path: Path):
    with pytest.raises(ValueError, match="method must be one of"):
        compress(run, "zip", tmp_path / "z")
    with pytest.raises(ValueError, match="does not take that option"):
        compress(run, "quantize", tmp_path / "z", rank=3)


# ----------------------------------------------------------------------------- CLI


def test_cli_compress(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from lstmkit.cli import main

    assert main(["compress", str(run), "--method", "quantize", "--out", str(tmp_path / "q")]) == 0
    assert "compressed run" in capsys.readouterr().out
    assert main(["compress", str(tmp_path / "q"), "--method", "quantize", "--out", str(tmp_path / "q2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "already quantized" in err and len(err.splitlines()) == 1
    assert main(["compress", str(run), "--method", "lowrank", "--rank", "99", "--out", str(tmp_path / "l")]) == 2
    assert "larger than" in capsys.readouterr().err
