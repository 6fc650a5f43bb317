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
