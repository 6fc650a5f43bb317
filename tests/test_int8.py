"""The int8 kernel (lstmkit.kernels.Int8Stream, LSTM.use_int8, quantize's calibration) against an
independent NumPy oracle of its published arithmetic: weights coded per output row
(lstmkit.runtime.quant), matrix inputs coded per step to 7-bit codes in [-63, 63] (x: max|x| / 63
per row; h: the fixed step 1/63), exact integer products, float gates and cell."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import lstmkit
import lstmkit.kernels
from lstmkit.compress import compress
from lstmkit.runtime.quant import quantize_rows
from lstmkit.train import load_run

pytestmark = pytest.mark.skipif(
    os.environ.get("LSTMKIT_NO_KERNELS", "") not in ("", "0"), reason="kernels disabled by environment"
)


def _sig(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


A = 63  # the largest activation code


def _code_dynamic(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    amax = np.abs(v).max(axis=1, keepdims=True).astype(np.float32)
    inv = np.where(amax > 0, np.float32(A) / np.maximum(amax, np.float32(1e-30)), np.float32(0)).astype(np.float32)
    q = np.clip(np.rint((v * inv).astype(np.float32)), -A, A)
    return q, (amax / np.float32(A)).astype(np.float32)


def oracle(layers: list[dict[str, np.ndarray]], xs: np.ndarray, h0=None, c0=None) -> tuple[np.ndarray, ...]:
    """xs (T, B, I) -> (y (T, B, H), h (L, B, H), c (L, B, H)), step by step in float64."""
    T, B, _ = xs.shape
    H = layers[0]["q_hh"].shape[1]
    hs = [np.zeros((B, H)) if h0 is None else h0[k].astype(np.float64) for k in range(len(layers))]
    cs = [np.zeros((B, H)) if c0 is None else c0[k].astype(np.float64) for k in range(len(layers))]
    ys = []
    for t in range(T):
        inp = xs[t].astype(np.float32)
        for k, w in enumerate(layers):
            xq, sx = _code_dynamic(inp)
            hq = np.clip(np.rint((hs[k].astype(np.float32) * np.float32(A)).astype(np.float32)), -A, A)
            ax = xq @ w["q_ih"].astype(np.float64).T  # exact: integers below 2^53
            ah = hq @ w["q_hh"].astype(np.float64).T
            pre = w["s_ih"] * sx * ax + w["s_hh"] / float(A) * ah + w["bias"]
            i, f, g, o = np.split(pre, 4, axis=1)
            cs[k] = _sig(f) * cs[k] + _sig(i) * np.tanh(g)
            hs[k] = _sig(o) * np.tanh(cs[k])
            inp = hs[k].astype(np.float32)
        ys.append(inp)
    return np.stack(ys), np.stack(hs), np.stack(cs)


def codes_of(lstm: lstmkit.LSTM) -> list[dict[str, np.ndarray]]:
    out = []
    for k in range(lstm.num_layers):
        d: dict[str, np.ndarray] = {}
        for part in ("ih", "hh"):
            d[f"q_{part}"], d[f"s_{part}"] = quantize_rows(getattr(lstm, f"weight_{part}_l{k}").detach().numpy(), 8)
        d["bias"] = (getattr(lstm, f"bias_ih_l{k}") + getattr(lstm, f"bias_hh_l{k}")).detach().numpy()
        out.append(d)
    return out


def as_kernel_layers(layers: list[dict[str, np.ndarray]]) -> list[dict[str, torch.Tensor]]:
    return [{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in d.items()} for d in layers]


@pytest.mark.parametrize(
    "I,H,L,B", [(1, 1, 1, 1), (5, 7, 1, 1), (13, 21, 2, 3), (64, 128, 1, 1), (17, 40, 3, 5), (64, 128, 2, 4)]
)
def test_int8_stream_matches_the_oracle(I, H, L, B):
    torch.manual_seed(I * 100 + H)
    lstm = lstmkit.LSTM(I, H, num_layers=L)
    with torch.no_grad():
        for p in lstm.parameters():
            p.mul_(3.0)  # larger weights: saturating gates, large codes
    layers = codes_of(lstm)
    xs = (np.random.default_rng(0).normal(size=(9, B, I)) * 2).astype(np.float32)
    s = lstmkit.kernels.Int8Stream(as_kernel_layers(layers), B)
    y = s.sequence(torch.from_numpy(xs)).numpy()
    ref_y, ref_h, ref_c = oracle(layers, xs)
    np.testing.assert_allclose(y, ref_y, atol=2e-5)
    h, c = s.state
    np.testing.assert_allclose(h.numpy(), ref_h, atol=2e-5)
    np.testing.assert_allclose(c.numpy(), ref_c, atol=1e-4)
    s.reset()
    steps = np.stack([s.step(torch.from_numpy(xs[t])).numpy() for t in range(len(xs))])
    np.testing.assert_array_equal(steps, y)  # the streaming step is the sequence's step


def test_int8_zero_input_and_threads():
    torch.manual_seed(1)
    lstm = lstmkit.LSTM(6, 16, num_layers=2)
    layers = codes_of(lstm)
    xs = np.zeros((4, 3, 6), np.float32)
    xs[2, 1] = 0.5  # rows of zeros have scale 0, codes 0
    ys = []
    for nt in (1, 2):
        s = lstmkit.kernels.Int8Stream(as_kernel_layers(layers), 3, num_threads=-nt)
        ys.append(s.sequence(torch.from_numpy(xs)).numpy())
    np.testing.assert_allclose(ys[0], oracle(layers, xs)[0], atol=2e-5)
    np.testing.assert_array_equal(ys[0], ys[1])


@pytest.mark.parametrize("batch_first", [False, True])
def test_use_int8_forward_runs_the_kernel(batch_first):
    torch.manual_seed(2)
    lstm = lstmkit.LSTM(10, 24, num_layers=2, batch_first=batch_first).eval()
    x = torch.randn(3, 7, 10) if batch_first else torch.randn(7, 3, 10)
    h0, c0 = torch.rand(2, 3, 24) - 0.5, torch.randn(2, 3, 24)
    lstm.use_int8()
    assert lstm.int8_enabled
    with torch.no_grad():
        y, (h, c) = lstm(x, (h0, c0))
    assert lstm.backend == "int8"
    xs = (x.transpose(0, 1) if batch_first else x).numpy()
    ry, rh, rc = oracle(codes_of(lstm), xs, h0.numpy(), c0.numpy())
    got = y.transpose(0, 1) if batch_first else y
    np.testing.assert_allclose(got.numpy(), ry, atol=2e-5)
    np.testing.assert_allclose(h.numpy(), rh, atol=2e-5)
    np.testing.assert_allclose(c.numpy(), rc, atol=1e-4)
    # close to the float model: int8 coding costs little on these sizes
    lstm.use_int8(False)
    with torch.no_grad():
        yf, _ = lstm(x, (h0, c0))
    assert lstm.backend == "torch"
    assert (yf - y).abs().max().item() < 0.05


def test_use_int8_unbatched_and_stream():
    torch.manual_seed(3)
    lstm = lstmkit.LSTM(5, 9).eval().use_int8()
    x = torch.randn(6, 5)
    with torch.no_grad():
        y, (h, c) = lstm(x)
    assert lstm.backend == "int8" and y.shape == (6, 9) and h.shape == (1, 9)
    ry, _, _ = oracle(codes_of(lstm), x.numpy()[:, None, :])
    np.testing.assert_allclose(y.numpy(), ry[:, 0], atol=2e-5)
    s = lstm.stream(1)
    assert type(s).__name__ == "Int8Stream"
    steps = torch.stack([s.step(x[t]) for t in range(6)])
    torch.testing.assert_close(steps, y, atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"shape \(1, 5\) or \(5,\), got \(4,\); x_t must be a CPU float32"):
        s.step(torch.randn(4))


def test_int8_only_where_it_applies():
    torch.manual_seed(4)
    lstm = lstmkit.LSTM(4, 8).use_int8()
    x = torch.randn(5, 2, 4)
    lstm(x)  # training mode: the float path (it keeps gradients)
    assert lstm.backend == "torch"
    lstm.eval()
    y, _ = lstm(x)  # eval, but gradients wanted (grad mode on, parameters require grad)
    assert lstm.backend == "torch" and y.requires_grad
    with torch.no_grad():
        lstm(x)
        assert lstm.backend == "int8"
        _, _, _tr = lstm(x, return_gates=True)
        assert lstm.backend != "int8"  # traces come from the float kernels
        lstm(x, (torch.full((1, 2, 8), 2.0), torch.zeros(1, 2, 8)))  # h0 outside (-1, 1): codes cannot hold it
        assert lstm.backend == "torch"


def test_int8_follows_weight_changes_and_copies():
    torch.manual_seed(5)
    lstm = lstmkit.LSTM(4, 8).eval().use_int8()
    x = torch.randn(5, 2, 4)
    with torch.no_grad():
        y1, _ = lstm(x)
        lstm.weight_hh_l0.mul_(-1.5)
        y2, _ = lstm(x)
    np.testing.assert_allclose(y2.numpy(), oracle(codes_of(lstm), x.numpy())[0], atol=2e-5)
    assert not torch.allclose(y1, y2)
    twin = copy.deepcopy(lstm)
    with torch.no_grad():
        torch.testing.assert_close(twin(x)[0], y2, atol=0, rtol=0)
    assert twin.backend == "int8"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"peephole": True}, "plain cell"),
        ({"proj_size": 3}, "projection"),
        ({"bidirectional": True}, "one direction"),
        ({"dtype": torch.float64}, "float32"),
    ],
)
def test_use_int8_refuses_what_it_cannot_run(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lstmkit.LSTM(4, 8, **kwargs).use_int8()


# ----------------------------------------------------------------------------- quantize's calibration


def _trained_run(tmp_path: Path) -> Path:
    from lstmkit.train import TrainConfig, train

    cfg = TrainConfig(
        task="mystery",
        task_params={"T": 12, "suspects": 4, "red_herrings": 1, "n_val": 64, "n_test": 64},
        hidden_size=16,
        embedding_size=8,
        batch_size=16,
        max_steps=60,
        eval_every=60,
    )
    train(cfg, tmp_path / "base", progress=False)
    return tmp_path / "base"


@pytest.mark.slow  # trains, quantizes and calibrates a run
def test_quantize_calibrates_and_the_run_loads_with_the_kernel(tmp_path: Path):
    base = _trained_run(tmp_path)
    res = compress(base, "quantize", tmp_path / "q8")
    info = json.loads((tmp_path / "q8" / "config.json").read_text())["compress"]
    cal = info["calibration"]
    assert cal["metric"] == "accuracy" and cal["tolerance"] == 0.005
    within = cal["float_inputs"] - cal["int8_inputs"] <= 0.005 * cal["float_inputs"]
    assert info["int8_kernel"] == cal["within"] == within
    run = load_run(tmp_path / "q8")
    assert run.model.rnn.int8_enabled == info["int8_kernel"]
    assert run.evaluate("val") == pytest.approx(res["val"])
    # forced either way
    compress(base, "quantize", tmp_path / "q8f", activations="float")
    assert not load_run(tmp_path / "q8f").model.rnn.int8_enabled
    compress(base, "quantize", tmp_path / "q8i", activations="int8")
    r8 = load_run(tmp_path / "q8i")
    assert r8.model.rnn.int8_enabled
    with torch.no_grad():
        r8.model(torch.zeros(2, 12, dtype=torch.int64))
    assert r8.model.rnn.backend == "int8"
    with pytest.raises(ValueError, match="needs --bits 8"):
        compress(base, "quantize", tmp_path / "q4", bits=4, activations="int8")
