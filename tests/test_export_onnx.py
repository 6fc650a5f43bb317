"""ONNX export: gate-order conversion both ways, onnxruntime against torch on unseen shapes (every variant),
refusals (int8 weights: the operator's variants only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from conftest import make_run

import lstmkit
from lstmkit.compress import compress
from lstmkit.data.mystery import QUESTION
from lstmkit.export import ExportError, export_onnx, from_onnx_gates, to_onnx_gates
from lstmkit.export.onnx import peephole_from_onnx, peephole_to_onnx
from lstmkit.models import ModelConfig, SequenceModel
from lstmkit.train import load_run


def _session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def test_gate_order_hand_checked_both_ways():
    # H = 1: the four rows are the gates; lstmkit i, f, g, o -> ONNX i, o, f, c (c is lstmkit's g)
    w = np.array([[1.0], [2.0], [3.0], [4.0]], np.float32)  # i=1 f=2 g=3 o=4
    assert to_onnx_gates(w)[:, 0].tolist() == [1.0, 4.0, 2.0, 3.0]
    assert from_onnx_gates(np.array([[1.0], [4.0], [2.0], [3.0]], np.float32))[:, 0].tolist() == [1, 2, 3, 4]
    r = np.random.default_rng(0).normal(size=(12, 5)).astype(np.float32)
    assert np.array_equal(from_onnx_gates(to_onnx_gates(r)), r)
    assert np.array_equal(to_onnx_gates(from_onnx_gates(r)), r)
    # peepholes: lstmkit rows p_i, p_f, p_o -> ONNX P = [p_i, p_o, p_f]
    p = np.array([[1.0, 1.5], [2.0, 2.5], [3.0, 3.5]], np.float32)
    assert peephole_to_onnx(p).tolist() == [1.0, 1.5, 3.0, 3.5, 2.0, 2.5]
    assert np.array_equal(peephole_from_onnx(peephole_to_onnx(p)), p)


def _model(target: str, layers: int, variants: dict[str, Any], tokens: bool) -> SequenceModel:
    cfg = ModelConfig(
        input_type="tokens" if tokens else "vector",
        input_size=11,
        output_size=5,
        target=target,
        hidden_size=7,
        num_layers=layers,
        embedding_size=6,
        variants=variants,
    )
    m = SequenceModel(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.4)
    return m


CASES = [
    ("class_last", 1, {}, True),
    ("class_last", 2, {"peephole": True}, True),
    ("class_steps", 2, {}, True),
    ("class_steps", 1, {"coupled": True}, True),
    ("regress_last", 2, {"peephole": True, "coupled": True}, False),
    ("multilabel_steps", 1, {"weight_drop": 0.3}, False),  # weight drop is training-only: exports plain
]


@pytest.mark.slow  # each case one torch.onnx.export (dynamo), ~5-10 s on 2 cores
@pytest.mark.parametrize("target,layers,variants,tokens", CASES)
def test_onnxruntime_matches_torch(tmp_path: Path, target: str, layers: int, variants: dict[str, Any], tokens: bool):
    m = _model(target, layers, variants, tokens)
    export_onnx(m, tmp_path / "m.onnx")
    sess = _session(tmp_path / "m.onnx")
    for B, T in ((1, 1), (5, 13), (2, 4)):  # nothing about the shapes is fixed at export
        x = torch.randint(0, 11, (B, T)) if tokens else torch.randn(B, T, 11)
        h0 = torch.randn(layers, B, 7) * 0.5
        c0 = torch.randn(layers, B, 7) * 0.5
        with torch.no_grad():
            y, (hn, cn) = m(x, state=(h0, c0), return_state=True)
        got = sess.run(["y", "h_n", "c_n"], {"x": x.numpy(), "h0": h0.numpy(), "c0": c0.numpy()})
        for g, want in zip(got, (y, hn, cn)):
            assert g.shape == tuple(want.shape)
            np.testing.assert_allclose(g, want.numpy(), rtol=1e-4, atol=2e-5)


@pytest.mark.slow  # each case one torch.onnx.export (dynamo), ~5-10 s on 2 cores
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_bare_lstm_bidirectional(tmp_path: Path, bidirectional: bool, batch_first: bool):
    lstm = lstmkit.LSTM(4, 5, 2, batch_first=batch_first, bidirectional=bidirectional).eval()
    export_onnx(lstm, tmp_path / "l.onnx")
    sess = _session(tmp_path / "l.onnx")
    D = 2 if bidirectional else 1
    x = torch.randn(3, 6, 4)  # (B, T, I) or (T, B, I)
    B = 3 if batch_first else 6
    h0, c0 = torch.randn(2 * D, B, 5), torch.randn(2 * D, B, 5)
    with torch.no_grad():
        y, (hn, cn) = lstm(x, (h0, c0))
    got = sess.run(None, {"x": x.numpy(), "h0": h0.numpy(), "c0": c0.numpy()})
    for g, want in zip(got, (y, hn, cn)):
        np.testing.assert_allclose(g, want.numpy(), rtol=1e-4, atol=2e-5)


@pytest.mark.slow  # each case one torch.onnx.export (dynamo), ~5-10 s on 2 cores
@pytest.mark.parametrize("variants,proj", [({"layer_norm": True}, 0), ({"zoneout": (0.2, 0.1)}, 0), ({}, 3)])
def test_onnxruntime_runs_what_the_operator_cannot_express(tmp_path: Path, variants: dict[str, Any], proj: int):
    # layer norm, zoneout (its expectation) and projections: an ONNX Scan over the reference step
    cfg = ModelConfig(
        input_type="tokens",
        input_size=9,
        output_size=3,
        target="class_last",
        hidden_size=6,
        embedding_size=4,
        variants=variants,
        proj_size=proj,
    )
    m = SequenceModel(cfg).eval()
    export_onnx(m, tmp_path / "m.onnx")
    assert "Scan" in {n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    sess = _session(tmp_path / "m.onnx")
    for B, T in ((1, 1), (4, 9)):
        x = torch.randint(0, 9, (B, T))
        h0, c0 = torch.randn(1, B, proj or 6) * 0.5, torch.randn(1, B, 6) * 0.5
        with torch.no_grad():
            want = m(x, state=(h0, c0), return_state=True)
        got = sess.run(["y", "h_n", "c_n"], {"x": x.numpy(), "h0": h0.numpy(), "c0": c0.numpy()})
        for g, w in zip(got, (want[0], *want[1])):
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-4, atol=1e-5)


def test_int8_weights_refuse_what_the_operator_cannot_express(tmp_path: Path):
    cfg = ModelConfig(
        input_type="tokens", input_size=9, output_size=3, target="class_last", variants={"layer_norm": True}
    )
    with pytest.raises(ExportError, match="cannot express layer_norm") as e:
        export_onnx(SequenceModel(cfg), tmp_path / "m.onnx", bits=8)
    assert "\n" not in str(e.value) and "--format runtime" in str(e.value)
    assert not (tmp_path / "m.onnx").exists()


def test_refuses_gru(tmp_path: Path):
    cfg = ModelConfig(input_type="tokens", input_size=9, output_size=3, target="class_last", arch="gru")
    with pytest.raises(ExportError, match="only LSTM models export"):
        export_onnx(SequenceModel(cfg), tmp_path / "m.onnx")


def test_run_folder_file_is_valid_and_atomic(tmp_path: Path):
    run = make_run(tmp_path / "r", hidden=8, layers=2)
    path = export_onnx(run, tmp_path / "out" / "m.onnx")
    onnx.checker.check_model(onnx.load(str(path)))
    assert [p.name for p in path.parent.iterdir()] == ["m.onnx"]  # no temporary file left behind
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert QUESTION in meta["vocab"] and meta["target"] == "class_last"
    r = load_run(run)
    batch = r.task.eval_batches("test", 16)[0]
    with torch.no_grad():
        want = r.model(batch.x, batch.lengths)
    z = np.zeros((2, len(batch), 8), np.float32)
    got = _session(path).run(["y"], {"x": batch.x.numpy(), "h0": z, "c0": z})[0]
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=2e-5)
    with pytest.raises(ExportError, match="is a folder"):
        export_onnx(run, tmp_path / "out")


def test_quantized_run_exports_its_dequantized_weights(tmp_path: Path):
    run = make_run(tmp_path / "r")
    compress(run, "quantize", tmp_path / "q", activations="float", evaluate=False)  # ONNX's LSTM: float inputs
    path = export_onnx(tmp_path / "q", tmp_path / "q.onnx")
    r = load_run(tmp_path / "q")
    x = torch.randint(0, r.model_config.input_size, (3, 7))
    z = np.zeros((1, 3, 8), np.float32)
    with torch.no_grad():
        want = r.model(x)
    np.testing.assert_allclose(
        _session(path).run(["y"], {"x": x.numpy(), "h0": z, "c0": z})[0], want.numpy(), rtol=1e-4, atol=2e-5
    )


def test_cli_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from lstmkit.cli import main

    run = make_run(tmp_path / "r", variants={"layer_norm": True})
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "ln.onnx")]) == 0
    assert (tmp_path / "ln.onnx").exists()  # layer norm exports (an ONNX Scan), since issue 19
    assert main(["export", str(run), "--format", "onnx", "--bits", "8", "--out", str(tmp_path / "q.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot express layer_norm" in err
    run2 = make_run(tmp_path / "r2")
    assert main(["export", str(run2), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").exists()
    (run2 / "model.safetensors").write_bytes((run2 / "model.safetensors").read_bytes()[:50])
    assert main(["export", str(run2), "--format", "onnx", "--out", str(tmp_path / "m2.onnx")]) == 2
    assert "truncated or damaged" in capsys.readouterr().err
