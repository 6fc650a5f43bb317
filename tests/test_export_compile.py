"""Graph capture (issue 19 items 2, 3): torch.compile(fullgraph=True), torch.export and torch.onnx.export
(dynamo and TorchScript) of models holding lstmkit.LSTM / LSTMCell, against torch.nn.LSTM with copied
weights or lstmkit's eager reference path (the step-by-step equations, not the kernels), on shapes the
capture never saw."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.export import Dim

import lstmkit
from lstmkit import kernels
from lstmkit.core import ops  # noqa: F401  (registers torch.ops.lstmkit.*)

needs_kernels = pytest.mark.skipif(not kernels.available(), reason="the fused kernels are unavailable here")


class StateIO(nn.Module):
    """(x, h0, c0) -> (y, h_n, c_n), the signature exported."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y, (hn, cn) = self.m(x, (h, c))
        return y, hn, cn


def _perturbed(m: nn.Module) -> nn.Module:
    """Peepholes and layer-norm shifts start at 0 / 1: move every parameter so that each one counts."""
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return m


def _inputs(m: Any, B: int, T: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    LD = m.num_layers * (2 if m.bidirectional else 1)
    x = torch.randn(B, T, m.input_size) if m.batch_first else torch.randn(T, B, m.input_size)
    return x, torch.randn(LD, B, m.proj_size or m.hidden_size) * 0.5, torch.randn(LD, B, m.hidden_size) * 0.5


def _grads(out: Any, m: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    y, (h, c) = out[0], out[1]
    loss = (y * torch.linspace(-1, 1, y.shape[-1])).sum() + (h**2).sum() + c.sum()
    return list(torch.autograd.grad(loss, [x, *m.parameters()]))


def _assert_matches_torch(got: Any, want: Any, m: nn.Module, ref: nn.Module, x: torch.Tensor) -> None:
    """lstmkit's (output, (h_n, c_n)) and gradients against torch.nn.LSTM's with the same weights."""
    for g, w in zip((got[0], *got[1]), (want[0], *want[1])):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
    for g, w in zip(_grads(got, m, x), _grads(want, ref, x)):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- torch.compile


@needs_kernels
def test_fused_layer_is_a_checked_custom_op():
    T, B, I, H = 4, 3, 5, 6
    args = [
        torch.randn(T, B, I, requires_grad=True),
        torch.randn(B, H, requires_grad=True),
        torch.randn(B, H, requires_grad=True),
        torch.randn(4 * H, I, requires_grad=True),
        torch.randn(4 * H, H, requires_grad=True),
        torch.randn(4 * H, requires_grad=True),
        torch.randn(4 * H, requires_grad=True),
        *[None] * 10,
        None,
        False,
        True,
        (1 << 7) - 1,
    ]
    # all of opcheck's tests: the schema, the autograd registration, the fake implementation, and the
    # outputs and gradients of AOTAutograd's trace (dynamic shapes) against the eager call
    torch.library.opcheck(torch.ops.lstmkit.fused_layer.default, args)
    torch.library.opcheck(torch.ops.lstmkit.zeros.default, (torch.randn(2, dtype=torch.float64), [3, 4]))
    assert torch.equal(torch.ops.lstmkit.zeros(torch.randn(2, dtype=torch.float64), [3, 4]), torch.zeros(3, 4).double())


def test_operators_without_the_kernels_say_why():
    # the schemas exist without the kernels (their CPU kernels come with them): a direct call then
    # gets lstmkit's one-line reason, not torch's "could not run ... with arguments from the 'CPU' backend"
    code = (
        "import torch\n"
        "from lstmkit.core import ops\n"
        "from lstmkit import kernels\n"
        "assert not kernels.available()\n"
        "try:\n"
        "    torch.ops.lstmkit.zeros(torch.randn(2), [2, 3])\n"
        "except RuntimeError as e:\n"
        "    print(e)\n"
    )
    env = {**os.environ, "LSTMKIT_NO_KERNELS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        "lstmkit::zeros: the fused kernels are unavailable here: "
        "disabled by the environment variable LSTMKIT_NO_KERNELS"
    ), out.stdout


@needs_kernels
def test_fused_layer_op_gradients_match_the_reference_and_its_saved_state_is_checked():
    # the operators' C++ autograd (forward op, backward op, the state kept under the handle) against
    # torch.nn.LSTM's gradients with the same weights, twice through a retained graph; a copy of the
    # handle (not one the forward made) must fail with the documented error, not read stray memory
    torch.manual_seed(0)
    T, B, I, H = 5, 3, 4, 6
    ref = nn.LSTM(I, H)
    x = torch.randn(T, B, I, requires_grad=True)
    h0, c0 = torch.randn(1, B, H, requires_grad=True), torch.randn(1, B, H, requires_grad=True)
    w = [ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, ref.bias_hh_l0]
    needs = (1 << 7) - 1
    y, h_t, c_t, gates, c_all, handle = torch.ops.lstmkit.fused_layer(
        x, h0[0], c0[0], *w, *[None] * 11, False, False, needs
    )
    assert gates.numel() == 0 and c_all.numel() == 0 and handle.dtype == torch.uint8
    y_ref, (h_ref, c_ref) = ref(x, (h0, c0))
    for got, want in ((y, y_ref), (h_t, h_ref[0]), (c_t, c_ref[0])):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    r = torch.randn(T, B, H)
    inputs = [x, h0, c0, *w]
    got = torch.autograd.grad((y * r).sum() + h_t.sum() * 2 - c_t.sum(), inputs, retain_graph=True)
    want = torch.autograd.grad((y_ref * r).sum() + h_ref.sum() * 2 - c_ref.sum(), inputs)
    for g, wv in zip(got, want):
        torch.testing.assert_close(g, wv, rtol=1e-4, atol=1e-6)
    again = torch.autograd.grad((y * r).sum() + h_t.sum() * 2 - c_t.sum(), inputs)  # retained: same state
    for g, g2 in zip(got, again):
        torch.testing.assert_close(g, g2, rtol=0, atol=0)
    diff = [x, h0[0], c0[0], *w, *[None] * 8]
    with pytest.raises(RuntimeError, match="saved state is gone"):
        torch.ops.lstmkit.fused_layer_backward(handle.clone(), r, None, None, diff, needs)


@needs_kernels
def test_compile_fullgraph_plain_matches_torch_lstm():
    torch.manual_seed(0)
    ref = nn.LSTM(4, 6, num_layers=2, batch_first=True)
    m = lstmkit.LSTM.from_torch(ref)
    compiled = torch.compile(m, fullgraph=True, dynamic=False)
    x = torch.randn(3, 9, 4, requires_grad=True)
    got = compiled(x)
    assert m.backend == "fused"
    _assert_matches_torch(got, ref(x), m, ref, x)


@needs_kernels
def test_compile_fullgraph_dropout_between_layers_draws_torchs_masks_with_fallback_random():
    # dropout between layers in a compiled module: with inductor's fallback_random the masks come from
    # torch's generator, so the same seed gives torch.nn.LSTM's outputs and gradients exactly (the
    # README's promise); without it inductor's own generator draws other masks
    import torch._inductor.config as inductor_config

    torch.manual_seed(0)
    ref = nn.LSTM(4, 6, num_layers=3, dropout=0.5).train()
    m = lstmkit.LSTM.from_torch(ref).train()
    x = torch.randn(7, 3, 4, requires_grad=True)
    with inductor_config.patch(fallback_random=True):
        compiled = torch.compile(m, fullgraph=True, dynamic=False)
        torch.manual_seed(11)
        got = compiled(x)
    assert m.backend == "fused"
    torch.manual_seed(11)
    want = ref(x)
    _assert_matches_torch(got, want, m, ref, x)
    torch._dynamo.reset()
    torch.manual_seed(11)
    other = torch.compile(m, fullgraph=True, dynamic=False)(x)[0]
    assert not torch.allclose(other, want[0], atol=1e-3)


@needs_kernels
def test_compiled_calls_reuse_the_kernels_buffers():
    # the kernels keep their large working buffers in a pool and reuse one when nothing else holds it;
    # an operator that pinned them (a Python storage object of an output) made every compiled call take
    # fresh ones: the pool grew by 0.8 MB (inference) to 1.6 MB (training) a call at this shape, and the
    # compiled module ran slower than the eager one. Eager calls set the level the compiled ones keep.
    torch.manual_seed(0)
    m = lstmkit.LSTM(64, 128, backend="fused")
    compiled = torch.compile(m, fullgraph=True, dynamic=False)
    x = torch.randn(200, 8, 64, requires_grad=True)
    r = torch.randn(200, 8, 128)
    levels = {}
    for name, f in (("eager", m), ("compiled", compiled)):
        seen = []
        for _ in range(4):
            y, _ = f(x)
            (y * r).sum().backward()
            del y
            with torch.no_grad():
                y, _ = f(x)
            del y
            seen.append(kernels.buffer_bytes())
        levels[name] = seen
    assert levels["eager"][-1] > 0 and levels["compiled"][1:] == [levels["compiled"][1]] * 3, levels
    assert levels["compiled"][-1] <= levels["eager"][-1], levels


@needs_kernels
@pytest.mark.parametrize(
    "kw,training",
    [
        ({"layer_norm": True, "peephole": True, "proj_size": 3}, True),
        ({"coupled": True, "zoneout": (0.3, 0.2), "weight_drop": 0.25, "bidirectional": True}, True),
    ],
)
def test_compile_fullgraph_variants_and_traces_match_the_reference(kw: dict[str, Any], training: bool):
    import torch._inductor.config as inductor_config

    torch.manual_seed(1)
    m = _perturbed(lstmkit.LSTM(4, 5, **kw)).train(training)
    ref = lstmkit.LSTM(4, 5, backend="reference", **kw).train(training)
    ref.load_state_dict(m.state_dict())
    x, h0, c0 = _inputs(m, 3, 6)
    x.requires_grad_(True)
    # the same random numbers (zoneout masks, weight drop) in the compiled graph as in eager
    with inductor_config.patch(fallback_random=True):
        compiled = torch.compile(m, fullgraph=True, dynamic=False)
        torch.manual_seed(7)
        got = compiled(x, (h0, c0), return_gates=True)
    assert m.backend == "fused"
    torch.manual_seed(7)
    want = ref(x, (h0, c0), return_gates=True)
    for g, w in zip((got[0], *got[1], *got[2]), (want[0], *want[1], *want[2])):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=2e-6)
    for g, w in zip(_grads(got, m, x), _grads(want, ref, x)):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_compile_fullgraph_cell():
    torch.manual_seed(2)
    cell = _perturbed(lstmkit.LSTMCell(4, 5, layer_norm=True, peephole=True)).eval()
    x, h, c = torch.randn(3, 4), torch.randn(3, 5), torch.randn(3, 5)
    got = torch.compile(cell, fullgraph=True, dynamic=False)(x, (h, c))
    ref = lstmkit.LSTMCell(4, 5, layer_norm=True, peephole=True, backend="reference").eval()
    ref.load_state_dict(cell.state_dict())
    for g, w in zip(got, ref(x, (h, c))):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- torch.export


@pytest.mark.parametrize(
    "kw", [{}, pytest.param({"layer_norm": True, "zoneout": 0.2, "bidirectional": True}, marks=pytest.mark.slow)]
)
def test_torch_export_dynamic_batch_and_time(kw: dict[str, Any]):
    torch.manual_seed(3)
    m = _perturbed(lstmkit.LSTM(4, 5, batch_first=True, **kw)).eval()
    ep = torch.export.export(
        StateIO(m), _inputs(m, 2, 7), dynamic_shapes=({0: Dim("B"), 1: Dim("T")}, {1: Dim("B")}, {1: Dim("B")})
    )
    assert not any("lstmkit" in str(n.target) for n in ep.graph.nodes)  # pure torch: runs without lstmkit
    x, h, c = _inputs(m, 5, 12)
    ref = lstmkit.LSTM(4, 5, batch_first=True, backend="reference", **kw).eval()
    ref.load_state_dict(m.state_dict())
    want = ref(x, (h, c))
    for g, w in zip(ep.module()(x, h, c), (want[0], *want[1])):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- torch.onnx.export


def _session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _onnx_matches(m: Any, path: Path, dynamo: bool) -> set[str]:
    """Export StateIO(m) at B 2, T 7; onnxruntime at B 4, T 11 and B 1, T 1 against torch.nn.LSTM for a
    plain m, else m's eager reference path. Returns the ONNX graph's operator types."""
    names = {"input_names": ["x", "h0", "c0"], "output_names": ["y", "h_n", "c_n"]}
    tb = {0: "batch", 1: "steps"} if m.batch_first else {0: "steps", 1: "batch"}
    if dynamo:
        torch.onnx.export(
            StateIO(m),
            _inputs(m, 2, 7),
            str(path),
            dynamic_shapes=(tb, {1: "batch"}, {1: "batch"}),
            verbose=False,
            **names,
        )
    else:
        axes = {"x": tb, "h0": {1: "batch"}, "c0": {1: "batch"}}
        torch.onnx.export(StateIO(m), _inputs(m, 2, 7), str(path), dynamo=False, dynamic_axes=axes, **names)
    oracle: nn.Module
    if m.variants.any_variant or m.proj_size:
        oracle = type(m)(m.input_size, m.hidden_size, m.num_layers, backend="reference", **_arch(m)).eval()
        oracle.load_state_dict(m.state_dict())
    else:
        oracle = m.to_torch().eval()
    sess = _session(path)
    for B, T in ((4, 11), (1, 1)):
        x, h, c = _inputs(m, B, T)
        with torch.no_grad():
            want = oracle(x, (h, c))
        got = sess.run(None, {"x": x.numpy(), "h0": h.numpy(), "c0": c.numpy()})
        for g, w in zip(got, (want[0], *want[1])):
            assert g.shape == tuple(w.shape)
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-5, atol=1e-5)
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def _arch(m: Any) -> dict[str, Any]:
    v = m.variants
    return {
        "batch_first": m.batch_first,
        "bidirectional": m.bidirectional,
        "proj_size": m.proj_size,
        "peephole": v.opts.peephole,
        "layer_norm": v.opts.layer_norm,
        "coupled": v.opts.coupled,
        "zoneout": (v.zoneout_c, v.zoneout_h),
    }


@pytest.mark.parametrize("dynamo", [pytest.param(True, marks=pytest.mark.slow), False])  # dynamo: ~10 s each
def test_onnx_plain_and_peephole_are_the_lstm_operator(tmp_path: Path, dynamo: bool):
    torch.manual_seed(4)
    plain = lstmkit.LSTM(4, 5, num_layers=2, bidirectional=True).eval()
    assert _onnx_matches(plain, tmp_path / "p.onnx", dynamo) & {"LSTM", "Scan", "Loop"} == {"LSTM"}
    peep = _perturbed(lstmkit.LSTM(4, 5, batch_first=True, peephole=True, coupled=True)).eval()
    assert _onnx_matches(peep, tmp_path / "q.onnx", dynamo) & {"LSTM", "Scan", "Loop"} == {"LSTM"}
    lstm_node = next(n for n in onnx.load(str(tmp_path / "q.onnx")).graph.node if n.op_type == "LSTM")
    assert len(lstm_node.input) == 8 and lstm_node.input[7]  # P, the peepholes
    assert {a.name: a.i for a in lstm_node.attribute}["input_forget"] == 1


@pytest.mark.parametrize("dynamo", [pytest.param(True, marks=pytest.mark.slow), False])  # dynamo: ~10 s each
def test_onnx_variants_are_a_loop(tmp_path: Path, dynamo: bool):
    torch.manual_seed(5)
    m = _perturbed(lstmkit.LSTM(4, 6, proj_size=3, layer_norm=True, zoneout=(0.3, 0.1), peephole=True)).eval()
    assert ("Scan" if dynamo else "Loop") in _onnx_matches(m, tmp_path / "v.onnx", dynamo)


@pytest.mark.parametrize("dynamo", [pytest.param(True, marks=pytest.mark.slow), False])  # dynamo: ~10 s each
def test_onnx_cell(tmp_path: Path, dynamo: bool):
    torch.manual_seed(6)
    cell = _perturbed(lstmkit.LSTMCell(4, 5, layer_norm=True, coupled=True)).eval()

    class Step(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.cell = cell

        def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.cell(x, (h, c))

    args = (torch.randn(2, 4), torch.randn(2, 5), torch.randn(2, 5))
    path = str(tmp_path / "c.onnx")
    if dynamo:
        torch.onnx.export(
            Step(), args, path, input_names=["x", "h", "c"], dynamic_shapes=({0: "B"},) * 3, verbose=False
        )
    else:
        torch.onnx.export(
            Step(), args, path, input_names=["x", "h", "c"], dynamo=False, dynamic_axes=dict.fromkeys("xhc", {0: "B"})
        )
    ref = lstmkit.LSTMCell(4, 5, layer_norm=True, coupled=True, backend="reference").eval()
    ref.load_state_dict(cell.state_dict())
    x, h, c = torch.randn(5, 4), torch.randn(5, 5), torch.randn(5, 5)
    with torch.no_grad():
        want = ref(x, (h, c))
    got = _session(Path(path)).run(None, {"x": x.numpy(), "h": h.numpy(), "c": c.numpy()})
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-5, atol=1e-5)
