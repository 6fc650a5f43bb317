"""lstmkit.LSTM / LSTMCell against torch.nn.LSTM / LSTMCell with copied weights: outputs, final
states, and the gradients of the input, the initial state and every parameter."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import backends
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import lstmkit
from lstmkit import kernels

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
I, H, T, B = 4, 6, 5, 3


def _close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    tol = TOL[dtype]
    scale = max(1.0, b.abs().max().item()) if b.numel() else 1.0
    err = (a - b).abs().max().item() if b.numel() else 0.0
    assert err <= tol * scale, f"{what}: max abs diff {err:.3g} > {tol * scale:.3g}"


def _compare(ref: nn.Module, mine: nn.Module, inputs: list[torch.Tensor], run, dtype: torch.dtype) -> None:
    """run(module, inputs) -> list of output tensors; compares outputs and all gradients."""
    inputs = [t.clone().detach().requires_grad_(True) for t in inputs]
    outs_ref = run(ref, inputs)
    grads_in = [t.clone().detach().requires_grad_(True) for t in inputs]
    outs_mine = run(mine, grads_in)
    for k, (a, b) in enumerate(zip(outs_mine, outs_ref)):
        assert a.shape == b.shape, f"output {k}: shape {tuple(a.shape)} != {tuple(b.shape)}"
        _close(a, b, dtype, f"output {k}")
    torch.manual_seed(1)
    weights = [torch.randn_like(o) for o in outs_ref]
    loss_ref = sum((o * w).sum() for o, w in zip(outs_ref, weights))
    loss_mine = sum((o * w).sum() for o, w in zip(outs_mine, weights))
    gi_ref = torch.autograd.grad(loss_ref, list(ref.parameters()) + inputs, allow_unused=True)
    gi_mine = torch.autograd.grad(loss_mine, list(mine.parameters()) + grads_in, allow_unused=True)
    names = [n for n, _ in ref.named_parameters()] + [f"input {k}" for k in range(len(inputs))]
    for n, a, b in zip(names, gi_mine, gi_ref):
        if b is None:
            assert a is None or a.abs().max() == 0, f"grad {n}: expected none"
            continue
        assert a is not None, f"grad of {n} missing"
        _close(a, b, dtype, f"grad {n}")


GRID = list(itertools.product([1, 2, 3], [False, True], [False, True], [0, 3], [True, False], [False, True]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("layers,bidir,batch_first,proj,bias,init", GRID)
def test_lstm_matches_torch(layers, bidir, batch_first, proj, bias, init, backend, dtype):
    ref = nn.LSTM(I, H, layers, bias=bias, batch_first=batch_first, bidirectional=bidir, proj_size=proj, dtype=dtype)
    mine = lstmkit.LSTM.from_torch(ref, backend=backend)
    D = 2 if bidir else 1
    x = torch.randn((B, T, I) if batch_first else (T, B, I), dtype=dtype)
    inputs = [x]
    if init:
        inputs += [torch.randn(layers * D, B, proj or H, dtype=dtype), torch.randn(layers * D, B, H, dtype=dtype)]

    def run(m, ins):
        out, (h, c) = m(ins[0], (ins[1], ins[2])) if len(ins) == 3 else m(ins[0])
        return [out, h, c]

    _compare(ref, mine, inputs, run, dtype)
    assert mine.backend == backend


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("layers,bidir,proj", [(1, False, 0), (2, True, 0), (2, True, 3), (3, False, 2)])
def test_packed_unsorted_lengths(layers, bidir, proj, backend):
    dtype = torch.float64
    ref = nn.LSTM(I, H, layers, bidirectional=bidir, proj_size=proj, dtype=dtype)
    mine = lstmkit.LSTM.from_torch(ref, backend=backend)
    lengths = torch.tensor([3, 7, 1, 7, 5])
    x = torch.randn(7, 5, I, dtype=dtype)
    D = 2 if bidir else 1
    h0 = torch.randn(layers * D, 5, proj or H, dtype=dtype)
    c0 = torch.randn(layers * D, 5, H, dtype=dtype)

    def run(m, ins):
        packed = pack_padded_sequence(ins[0], lengths, enforce_sorted=False)
        out, (h, c) = m(packed, (ins[1], ins[2]))
        assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
        padded, lens = pad_packed_sequence(out)
        assert lens.tolist() == lengths.tolist()
        return [out.data, padded, h, c]

    _compare(ref, mine, [x, h0, c0], run, dtype)


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("init", [False, True])
def test_unbatched(backend, init):
    dtype = torch.float64
    ref = nn.LSTM(I, H, 2, bidirectional=True, dtype=dtype)
    mine = lstmkit.LSTM.from_torch(ref, backend=backend)
    ins = [torch.randn(T, I, dtype=dtype)]
    if init:
        ins += [torch.randn(4, H, dtype=dtype), torch.randn(4, H, dtype=dtype)]

    def run(m, xs):
        out, (h, c) = m(xs[0], (xs[1], xs[2])) if len(xs) == 3 else m(xs[0])
        assert out.shape == (T, 2 * H) and h.shape == (4, H)
        return [out, h, c]

    _compare(ref, mine, ins, run, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("bias,init,unbatched", list(itertools.product([True, False], [True, False], [True, False])))
def test_cell_matches_torch(bias, init, unbatched, backend, dtype):
    ref = nn.LSTMCell(I, H, bias=bias, dtype=dtype)
    mine = lstmkit.LSTMCell.from_torch(ref, backend=backend)
    shape = (I,) if unbatched else (B, I)
    ins = [torch.randn(shape, dtype=dtype)]
    if init:
        hs = (H,) if unbatched else (B, H)
        ins += [torch.randn(hs, dtype=dtype), torch.randn(hs, dtype=dtype)]

    def run(m, xs):
        h, c = m(xs[0], (xs[1], xs[2])) if len(xs) == 3 else m(xs[0])
        return [h, c]

    _compare(ref, mine, ins, run, dtype)
    assert mine.backend == backend


def test_round_trip_torch_conversion():
    ref = nn.LSTM(I, H, 2, bidirectional=True, proj_size=2, batch_first=True)
    mine = lstmkit.LSTM.from_torch(ref)
    back = mine.to_torch()
    assert isinstance(back, nn.LSTM)
    assert set(back.state_dict()) == set(ref.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    assert set(mine.state_dict()) == set(ref.state_dict())
    cell = nn.LSTMCell(I, H)
    back_cell = lstmkit.LSTMCell.from_torch(cell).to_torch()
    for k, v in cell.state_dict().items():
        assert torch.equal(back_cell.state_dict()[k], v)


def test_parameter_names_and_shapes_match_torch():
    ref = nn.LSTM(3, 8, 3, bidirectional=True, proj_size=5, bias=False)
    mine = lstmkit.LSTM(3, 8, 3, bias=False, bidirectional=True, proj_size=5)
    assert [(n, tuple(p.shape)) for n, p in mine.named_parameters()] == [
        (n, tuple(p.shape)) for n, p in ref.named_parameters()
    ]


def test_auto_dispatch_is_torch_for_plain_and_reference_for_traces():
    m = lstmkit.LSTM(I, H)
    x = torch.randn(T, B, I)
    m(x)
    assert m.backend == "torch"
    m(x, return_gates=True)  # traces: the kernels where they are built, else the reference
    assert m.backend == ("fused" if kernels.available() else "reference")
    lstmkit.LSTM(I, H, peephole=True)(x)
