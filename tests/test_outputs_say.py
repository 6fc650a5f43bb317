"""Issue 20 item 7: outputs say what they are.

evaluate names its split; compress prints the sizes before and after and the change in quality; an
ONNX export of a quantized run keeps int8 weights (DequantizeLinear before the standard LSTM
operator, run in onnxruntime, the file about 4x smaller); sample and explore feed characters
outside the vocabulary as the same stand-in and name them; the NumPy runtime's command line takes
plain text for character models.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_run

from lstmkit.cli import main

TEXT = "to be, or not to be: that is the question. " * 40


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A character language model with random weights over TEXT's characters."""
    d = tmp_path_factory.mktemp("lm")
    f = d / "t.txt"
    f.write_text(TEXT, encoding="utf-8")
    return make_run(d / "run", task="text", task_params={"text_file": str(f), "seq_len": 16}, hidden=16)


def test_evaluate_names_its_split(trained_run, capsys):
    for split, word in (("test", "test"), ("val", "validation")):
        assert main(["evaluate", str(trained_run), "--split", split]) == 0
        first = capsys.readouterr().out.splitlines()[0]
        assert first == f"split: {split} ({word} set, 32 sequences)"  # the run's n_val = n_test = 32


def test_compress_prints_sizes_and_quality_change(trained_run, tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["compress", str(trained_run), "--method", "quantize", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    before = (trained_run / "model.safetensors").stat().st_size
    after = (out / "model.safetensors").stat().st_size
    m = re.search(r"size: ([\d.]+) kB -> ([\d.]+) kB of weights on disk \(([\d.]+)x\)", text)
    assert m, text
    assert float(m.group(1)) == pytest.approx(before / 1e3, abs=0.05)
    assert float(m.group(2)) == pytest.approx(after / 1e3, abs=0.05)
    assert float(m.group(3)) == pytest.approx(after / before, abs=0.005)
    old = json.loads((trained_run / "result.json").read_text())["test"]["accuracy"]
    new = json.loads((out / "result.json").read_text())["test"]["accuracy"]
    assert f"accuracy {old:.4g} -> {new:.4g} ({new - old:+.3g})" in text


def _ort(path: Path, x: np.ndarray, H: int) -> np.ndarray:
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    h = np.zeros((1, x.shape[0], H), np.float32)
    return s.run(None, {"x": x, "h0": h, "c0": h})[0]


def test_onnx_of_a_quantized_run_keeps_int8_weights(tmp_path, capsys):
    import onnx

    from lstmkit.compress import compress
    from lstmkit.export.onnx import build_onnx
    from lstmkit.export.spec import model_spec
    from lstmkit.runtime.quant import quantize_rows
    from lstmkit.train import load_run

    src = make_run(tmp_path / "f", hidden=128)
    compress(src, "quantize", tmp_path / "q", activations="float")
    assert main(["export", str(src), "--format", "onnx", "--out", str(tmp_path / "f.onnx")]) == 0
    out = capsys.readouterr().out
    assert "weights: float32" in out and "--bits 8" in out  # a float run says so, and how to shrink it
    assert main(["export", str(tmp_path / "q"), "--format", "onnx", "--out", str(tmp_path / "q.onnx")]) == 0
    assert "weights: int8 codes" in capsys.readouterr().out
    model = onnx.load(str(tmp_path / "q.onnx"))
    ops = [n.op_type for n in model.graph.node]
    lstm = next(n for n in model.graph.node if n.op_type == "LSTM")
    made_by = {o: n for n in model.graph.node for o in n.output}
    # W and R of the standard LSTM operator come from int8 codes through DequantizeLinear
    for name in lstm.input[1:3]:
        n = made_by[name]
        while n.op_type == "Reshape":
            n = made_by[n.input[0]]
        assert n.op_type == "DequantizeLinear"
        codes = next(i for i in model.graph.initializer if i.name == n.input[0])
        assert codes.data_type == onnx.TensorProto.INT8
    assert ops.count("DequantizeLinear") == 3  # W, R, the embedding (the head stays float: see onnx_int8)
    ratio = (tmp_path / "f.onnx").stat().st_size / (tmp_path / "q.onnx").stat().st_size
    assert ratio > 3.3, ratio  # about 4x smaller (scales, biases and the graph are float)
    # the oracle: the quantized run's own weights (q · s per row) in a float ONNX graph
    run = load_run(tmp_path / "q")
    float_onnx = tmp_path / "deq.onnx"
    float_onnx.write_bytes(build_onnx(model_spec(run)).SerializeToString())
    x = np.random.default_rng(0).integers(0, run.model_config.input_size, size=(4, 12))
    y_q, y_f = _ort(tmp_path / "q.onnx", x, 128), _ort(float_onnx, x, 128)
    np.testing.assert_allclose(y_q, y_f, rtol=1e-5, atol=1e-5)
    # and those weights are the saved codes: re-quantizing them gives the same codes
    w = model_spec(run).arrays["rnn.weight_hh_l0"]
    q, s = quantize_rows(w, 8)
    np.testing.assert_allclose(q.astype(np.float32) * s[:, None], w, rtol=0, atol=1e-6)


def test_sample_and_explore_share_the_stand_in_rule(lm_run, tmp_path, capsys):
    from lstmkit.train import load_run

    run = load_run(lm_run)
    assert "é" not in (run.vocab or []) and "Z" not in (run.vocab or [])
    assert main(["sample", str(lm_run), "--prompt", "to béZ", "--length", "5", "--seed", "1"]) == 0
    cap = capsys.readouterr()
    # the oracle: the same prompt with the stand-in (a space) typed in place of each unknown character
    assert cap.out.rstrip("\n") == "to béZ" + run.sample("to b  ", 5, 0.8, None, 1)[6:]
    note = cap.err.strip()
    assert note == "2 input items are outside the model's vocabulary ('é', 'Z'): fed as the stand-in ' '"
    assert main(["explore", str(lm_run), "--input", "to béZ", "--out", str(tmp_path / "x")]) == 0
    out = capsys.readouterr().out
    assert note + ", marked ⚠ on the page" in out  # the same rule and the same words


def test_runtime_cli_takes_plain_text(lm_run, tmp_path, capsys):
    from lstmkit.runtime.__main__ import main as rt_main
    from lstmkit.train import load_run

    bundle = tmp_path / "b"
    assert main(["export", str(lm_run), "--format", "runtime", "--out", str(bundle)]) == 0
    capsys.readouterr()
    run = load_run(lm_run)
    vocab = run.vocab or []
    text = "to be or"  # spaces are characters too
    assert rt_main([str(bundle), "--text", text]) == 0
    y = np.array(json.loads(capsys.readouterr().out.splitlines()[-1]))
    ids = torch.tensor([[vocab.index(c) for c in text]])  # the oracle: ids by hand, the torch model
    with torch.no_grad():
        want = run.model.eval()(ids).numpy()
    assert y.shape == want.shape == (1, len(text), len(vocab))
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
    assert rt_main([str(bundle), "--text", "to bé Zz"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'é', 'Z', 'z'" in err and "2 distinct" not in err


def test_float_summary_suggests_int8_only_where_the_lstm_operator_is(tmp_path):
    """--bits 8 needs the standard ONNX LSTM operator: a layer-norm model exports as a loop, and its
    summary must not suggest an option that would refuse it."""
    import torch

    import lstmkit
    from lstmkit.export.onnx_int8 import onnx_weight_summary

    x = torch.randn(2, 5, 3)
    for kw, hint in (({}, True), ({"layer_norm": True}, False)):
        path = tmp_path / f"m{len(kw)}.onnx"
        torch.onnx.export(lstmkit.LSTM(3, 4, batch_first=True, **kw).eval(), (x,), str(path), dynamo=False)
        assert ("--bits 8" in onnx_weight_summary(path)) is hint
