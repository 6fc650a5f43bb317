"""The NumPy runtime: against the torch model, float32 and int8/int4, whole sequence and streaming, and
in a subprocess where importing torch fails."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import make_run

import lstmkit
import lstmkit.runtime as rt
from lstmkit.compress import compress
from lstmkit.errors import InputError
from lstmkit.export import export_runtime
from lstmkit.models import ModelConfig, SequenceModel
from lstmkit.train import load_run

RUNTIME_DIR = Path(rt.__file__).parent


def _model(target: str, variants: dict[str, Any], layers: int = 2, proj: int = 0, tokens: bool = True) -> SequenceModel:
    cfg = ModelConfig(
        input_type="tokens" if tokens else "vector",
        input_size=11,
        output_size=5,
        target=target,
        hidden_size=7,
        num_layers=layers,
        embedding_size=6,
        variants=variants,
        proj_size=proj,
    )
    m = SequenceModel(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.4)
    return m


VARIANTS = [
    {},
    {"peephole": True},
    {"coupled": True},
    {"layer_norm": True},
    {"zoneout": (0.1, 0.3)},
    {"peephole": True, "layer_norm": True, "zoneout": 0.2},
]


@pytest.mark.parametrize("variants", VARIANTS, ids=lambda v: "+".join(v) or "plain")
@pytest.mark.parametrize("target", ["class_last", "class_steps"])
def test_runtime_matches_torch(tmp_path: Path, variants: dict[str, Any], target: str):
    m = _model(target, variants, proj=3 if "peephole" in variants else 0)
    export_runtime(m, tmp_path / "b")
    model = rt.load(tmp_path / "b")
    x = torch.randint(0, 11, (4, 9))
    h0, c0 = torch.randn(2, 4, 3 if "peephole" in variants else 7) * 0.5, torch.randn(2, 4, 7) * 0.5
    with torch.no_grad():
        y, (hn, cn) = m(x, state=(h0, c0), return_state=True)
    got, (gh, gc) = model.run(x.numpy(), state=(h0.numpy(), c0.numpy()), return_state=True)
    np.testing.assert_allclose(got, y.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gh, hn.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gc, cn.numpy(), rtol=1e-4, atol=1e-5)


def test_streaming_equals_torch_prefixes(tmp_path: Path):
    m = _model("class_last", {"peephole": True})
    export_runtime(m, tmp_path / "b")
    stream = rt.load(tmp_path / "b").stream(batch_size=3)
    x = torch.randint(0, 11, (3, 6))
    for t in range(6):
        y_t = stream.step(x[:, t].numpy())
        with torch.no_grad():
            want = m(x[:, : t + 1])  # the prediction if the story ended at step t
        np.testing.assert_allclose(y_t, want.numpy(), rtol=1e-4, atol=1e-5)
    stream.reset()
    np.testing.assert_allclose(stream.step(x[:, 0].numpy()), m(x[:, :1]).detach().numpy(), rtol=1e-4, atol=1e-5)
    single = rt.load(tmp_path / "b").stream()
    assert single.step(np.int64(3)).shape == (5,)


@pytest.mark.parametrize("proj", [0, 3])
@pytest.mark.parametrize(
    "variants", VARIANTS + [{"coupled": True, "peephole": True, "zoneout": 0.2}], ids=lambda v: "+".join(v) or "plain"
)
def test_streaming_matches_torch_every_variant(tmp_path: Path, variants: dict[str, Any], proj: int):
    """The stream's own weight layout (gates reordered, products fused) against the torch model."""
    m = _model("class_steps", variants, proj=proj)
    export_runtime(m, tmp_path / "b")
    stream = rt.load(tmp_path / "b").stream(batch_size=3)
    x = torch.randint(0, 11, (3, 9))
    with torch.no_grad():
        want, (hn, cn) = m(x, return_state=True)  # (B, T, O): step t sees only the prefix
    got = np.stack([stream.step(x[:, t].numpy()) for t in range(9)], axis=1)  # outputs kept across steps
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)
    gh, gc = stream.state
    np.testing.assert_allclose(gh, hn.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gc, cn.numpy(), rtol=1e-4, atol=1e-5)
    assert np.abs(got).max() > 0.01
    with pytest.raises(ValueError, match="token ids must be in"):
        stream.step(np.array([0, 11, 2]))
    with pytest.raises(ValueError, match="batch size 3"):
        stream.step(np.array([0, 1]))


@pytest.mark.parametrize("bits", [None, 8, 4])
def test_streaming_bare_lstm_and_vector_head_against_whole_sequence(tmp_path: Path, bits: int | None):
    """Quantized streams run on weights dequantized once; the oracle is the runtime's whole-sequence
    path, which multiplies by the codes and scales (and is checked against torch above)."""
    lstm = lstmkit.LSTM(5, 8, 2, proj_size=3, peephole=True).eval()
    model = rt.load(export_runtime(lstm, tmp_path / "bare", bits=bits))
    x = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    want = model.run(x)  # (T, P) unbatched
    one = model.stream()
    got = np.stack([one.step(x[t]) for t in range(6)])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    if bits is None:
        with torch.no_grad():
            np.testing.assert_allclose(got, lstm(torch.from_numpy(x))[0].numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="expected 5 input features"):
        one.step(np.zeros(4, np.float32))
    head = _model("class_steps", {"layer_norm": True, "zoneout": 0.3}, layers=1, tokens=False)
    model = rt.load(export_runtime(head, tmp_path / "head", bits=bits))
    xb = np.random.default_rng(1).standard_normal((2, 7, 11))
    want = model.run(xb)  # (B, T, O)
    s = model.stream(batch_size=2)
    got = np.stack([s.step(xb[:, t]) for t in range(7)], axis=1)  # float64 input, cast as run() does
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    s.reset()
    np.testing.assert_allclose(s.step(xb[:, 0]), want[:, 0], rtol=1e-4, atol=1e-5)


def test_vector_input_with_lengths_and_unbatched(tmp_path: Path):
    m = _model("regress_last", {}, layers=1, tokens=False)
    export_runtime(m, tmp_path / "b")
    model = rt.load(tmp_path / "b")
    x = torch.randn(3, 8, 11)
    lengths = torch.tensor([8, 3, 1])
    with torch.no_grad():
        want = m(x, lengths)
    np.testing.assert_allclose(model.run(x.numpy(), lengths=lengths.numpy()), want.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.run(x[1].numpy()), m(x[1:2]).detach().numpy()[0], rtol=1e-4, atol=1e-5)


def test_bidirectional_bare_lstm(tmp_path: Path):
    lstm = lstmkit.LSTM(4, 5, 2, bidirectional=True).eval()
    export_runtime(lstm, tmp_path / "b")
    model = rt.load(tmp_path / "b")
    x = torch.randn(7, 2, 4)
    with torch.no_grad():
        y, _ = lstm(x)
    np.testing.assert_allclose(model.run(x.numpy()), y.numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="bidirectional"):
        model.stream()


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_bundle_matches_the_quantized_run(tmp_path: Path, bits: int):
    run = make_run(tmp_path / "r", hidden=16)
    # float matrix inputs, as the NumPy runtime computes (the int8 kernel's own coding: test_int8.py)
    compress(run, "quantize", tmp_path / "q", bits=bits, activations="float", evaluate=False)
    export_runtime(tmp_path / "q", tmp_path / "b")  # the run's own bits
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert man["quantized"]["rnn.weight_hh_l0"]["bits"] == bits
    assert man["tensors"]["rnn.weight_hh_l0.q"]["dtype"] == ("int8" if bits == 8 else "uint8")
    model = rt.load(tmp_path / "b")
    assert model.quantized
    q = load_run(tmp_path / "q")
    batch = q.task.eval_batches("val", 32)[0]
    with torch.no_grad():
        want = q.model(batch.x, batch.lengths)
    np.testing.assert_allclose(model.run(batch.x.numpy()), want.numpy(), rtol=1e-4, atol=1e-5)
    fast = rt.load(tmp_path / "b", fast=True)
    np.testing.assert_allclose(fast.run(batch.x.numpy()), want.numpy(), rtol=1e-4, atol=1e-5)
    f32 = export_runtime(run, tmp_path / "f")
    assert (f32 / "weights.bin").stat().st_size > (tmp_path / "b" / "weights.bin").stat().st_size * (
        2 if bits == 8 else 3
    )


def test_tampered_and_truncated_bundles(tmp_path: Path):
    export_runtime(_model("class_last", {}), tmp_path / "b")
    w = tmp_path / "b" / "weights.bin"
    good = w.read_bytes()
    w.write_bytes(good[:-10])
    with pytest.raises(rt.BundleError, match="truncated"):
        rt.load(tmp_path / "b")
    w.write_bytes(good[:100] + bytes([good[100] ^ 1]) + good[101:])
    with pytest.raises(rt.BundleError, match="checksum") as e:
        rt.load(tmp_path / "b")
    assert "\n" not in str(e.value) and isinstance(e.value, InputError)  # the CLI: one line, exit 2
    w.write_bytes(good)
    man = tmp_path / "b" / "manifest.json"
    text = man.read_text()
    man.write_text(text[: len(text) // 2])
    with pytest.raises(rt.BundleError, match="not valid JSON"):
        rt.load(tmp_path / "b")
    d = json.loads(text)
    d["tensors"]["rnn.weight_hh_l0"]["shape"] = [28, 8]
    man.write_text(json.dumps(d))
    with pytest.raises(rt.BundleError, match="do not hold"):
        rt.load(tmp_path / "b")
    with pytest.raises(rt.BundleError, match="no such folder"):
        rt.load(tmp_path / "nothing")


# What the runtime needs from lstmkit to read and run bundles on a device without torch: the package root
# (its torch imports are lazy), the exception base of bad input and the target kinds (atomic.py only to write
# bundles). The test ships only these.
RUNTIME_NEEDS = ("__init__.py", "errors.py", "targets.py", "runtime")

TORCH_FREE = r"""
import importlib, importlib.abc, json, sys


class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"{name} is not available on this device")
        return None

sys.meta_path.insert(0, NoTorch())
try:
    import torch  # noqa
    raise SystemExit("torch imported")
except ImportError:
    pass
shipped, bundle, x_file, out_file = sys.argv[1:5]
sys.path.insert(0, shipped)
import lstmkit.runtime as rt
assert rt.__file__.startswith(shipped), rt.__file__
import numpy as np
x = np.load(x_file, allow_pickle=False)
m = rt.load(bundle)
y = m.run(x)
s = m.stream(batch_size=x.shape[0])
steps = np.stack([s.step(x[:, t]) for t in range(x.shape[1])], axis=1)
np.savez(out_file, y=y, steps=steps)
main = importlib.import_module("lstmkit.runtime.__main__").main
code = main([bundle + "_missing"])
assert not any(k == "torch" or k.startswith("torch.") for k in sys.modules), "torch got imported"
print(json.dumps({"cli_missing": code}))
"""


def test_runtime_runs_where_torch_cannot_be_imported(tmp_path: Path):
    m = _model("class_steps", {"peephole": True})
    export_runtime(m, tmp_path / "b", bits=8)
    x = torch.randint(0, 11, (2, 7))
    np.save(tmp_path / "x.npy", x.numpy())
    script = tmp_path / "torch_free.py"
    script.write_text(TORCH_FREE)
    shipped = tmp_path / "device" / "lstmkit"  # only what the runtime needs, copied as a device would get it
    shipped.mkdir(parents=True)
    for name in RUNTIME_NEEDS:
        src = RUNTIME_DIR.parent / name
        if src.is_dir():
            shutil.copytree(src, shipped / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, shipped / name)
    proc = subprocess.run(
        [
            sys.executable,
            str(script),
            str(shipped.parent),
            str(tmp_path / "b"),
            str(tmp_path / "x.npy"),
            str(tmp_path / "out.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"cli_missing": 2}
    assert "lstmkit.runtime: error:" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    got = np.load(tmp_path / "out.npz", allow_pickle=False)
    # oracle: the torch model with the same int8 weights (quantized by the compress path)
    from lstmkit.compress.quantize import quantize_state

    _, deq, _ = quantize_state(m.state_dict(), 8)
    mq = SequenceModel(m.cfg).eval()
    mq.load_state_dict(deq)
    with torch.no_grad():
        want = mq(x).numpy()
    np.testing.assert_allclose(got["y"], want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["steps"], want, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        assert np.abs(got["y"] - m(x).numpy()).max() < 0.05  # and int8 stays close to float32


def test_cli_export_runtime(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from lstmkit.cli import main

    run = make_run(tmp_path / "r", variants={"layer_norm": True})  # ONNX refuses it; the runtime runs it
    assert main(["export", str(run), "--format", "runtime", "--out", str(tmp_path / "b"), "--bits", "8"]) == 0
    r = load_run(run)
    batch = r.task.eval_batches("val", 8)[0]
    with torch.no_grad():
        want = r.model(batch.x, batch.lengths).numpy()
    assert np.abs(rt.load(tmp_path / "b").run(batch.x.numpy()) - want).max() < 0.05
    assert main(["export", str(run), "--format", "onnx", "--bits", "8", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "int8 weights cannot express layer_norm" in capsys.readouterr().err  # ONNX int8: plain LSTM operator
