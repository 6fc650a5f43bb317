"""The streaming step equals the whole-sequence forward, step by step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lstmkit


@pytest.mark.parametrize("layers,proj,batch", [(1, 0, 1), (2, 0, 3), (2, 3, 2)])
def test_stream_equals_sequence(layers, proj, batch):
    ref = nn.LSTM(5, 8, layers, proj_size=proj)
    m = lstmkit.LSTM.from_torch(ref).eval()
    x = torch.randn(12, batch, 5)
    with torch.no_grad():
        want, (h, c) = ref(x)
    s = m.stream(batch_size=batch)
    got = torch.stack([s.step(x[t]).clone() for t in range(12)])
    assert torch.allclose(got, want, atol=1e-5)
    hs, cs = s.state
    assert torch.allclose(hs, h, atol=1e-5) and torch.allclose(cs, c, atol=1e-5)
    s.reset()
    assert torch.allclose(s.step(x[0]).clone(), want[0], atol=1e-5)


def test_stream_unbatched_and_variant():
    m = lstmkit.LSTM(3, 6, peephole=True, layer_norm=True, zoneout=0.2, dtype=torch.float64).eval()
    x = torch.randn(7, 3, dtype=torch.float64)
    with torch.no_grad():
        want, _ = m(x)
    s = m.stream()
    got = torch.stack([s.step(x[t]).clone() for t in range(7)])
    assert torch.allclose(got, want, atol=1e-10)


VARIANT_SETS = [
    {"peephole": True},
    {"layer_norm": True},
    {"coupled": True},
    {"zoneout": (0.3, 0.1)},
    {"peephole": True, "layer_norm": True, "zoneout": 0.2},
    {"coupled": True, "peephole": True, "layer_norm": True},
]


@pytest.mark.parametrize("variants", VARIANT_SETS, ids=lambda v: "+".join(v))
@pytest.mark.parametrize("layers,proj,batch,dtype,hidden", [(1, 0, 1, torch.float32, 9), (2, 3, 3, torch.float64, 9),
                                                            (2, 0, 2, torch.float32, 9),
                                                            (1, 0, 2, torch.float32, 40)])  # fmt: skip
def test_variant_stream_is_compiled_and_equals_the_reference(variants, layers, proj, batch, dtype, hidden):
    """Every variant streams through the compiled step; the oracle is the reference path (the
    equations in PyTorch) over the whole sequence, evaluation mode (zoneout: its expectation)."""
    import copy

    from lstmkit import kernels

    if not kernels.available():
        pytest.skip("kernels unavailable")
    m = lstmkit.LSTM(5, hidden, layers, proj_size=proj, dtype=dtype, **variants).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)  # non-trivial LN gains/shifts and peepholes
    ref = copy.deepcopy(m)
    ref.requested_backend = "reference"
    x = torch.randn(11, batch, 5, dtype=dtype)
    with torch.no_grad():
        want, (h, c) = ref(x)
    s = m.stream(batch_size=batch)
    assert type(s).__name__ == "FusedStream"
    got = torch.stack([s.step(x[t]).clone() for t in range(11)])
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)
    hs, cs = s.state
    torch.testing.assert_close(hs, h, atol=tol, rtol=tol)
    torch.testing.assert_close(cs, c, atol=tol, rtol=tol)


def test_every_stream_is_a_stream(tmp_path):
    """The reference, fused and int8 streams (tensors) and the NumPy runtime's (arrays) share one
    interface, lstmkit.core.Stream: batch_size, step, reset, state; each steps and resets."""
    import numpy as np

    from lstmkit import kernels
    from lstmkit import runtime as rt
    from lstmkit.core import Stream
    from lstmkit.export import export_runtime

    m = lstmkit.LSTM(5, 8).eval()
    streams = [lstmkit.LSTM.from_torch(m.to_torch(), backend="reference").eval().stream()]
    if kernels.available():
        streams.append(m.stream())
        streams.append(lstmkit.LSTM.from_torch(m.to_torch()).eval().use_int8().stream())
    export_runtime(m, tmp_path / "b")
    streams.append(rt.load(tmp_path / "b").stream())
    kinds = set()
    for s in streams:
        assert isinstance(s, Stream), type(s)
        x = torch.randn(5)
        first = s.step(x.numpy() if isinstance(s.state[0], np.ndarray) else x)
        assert tuple(first.shape) == (8,) and s.batch_size == 1
        s.reset()
        again = s.step(x.numpy() if isinstance(s.state[0], np.ndarray) else x)
        np.testing.assert_allclose(np.asarray(again), np.asarray(first), atol=1e-6)  # reset: from zeros again
        kinds.add(type(s).__name__)
    assert len(kinds) == len(streams)
