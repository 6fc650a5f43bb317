"""The measured dispatch of plain calls (lstmkit.core.dispatch): it times both paths once, picks the
faster, remembers the choice on disk, and later calls (and processes) follow the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import lstmkit
from lstmkit.core import dispatch

pytestmark = pytest.mark.skipif(
    os.environ.get("LSTMKIT_NO_KERNELS", "") not in ("", "0"), reason="kernels disabled by environment"
)


@pytest.fixture
def measured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "dispatch.json"
    monkeypatch.setenv("LSTMKIT_DISPATCH", "measure")
    monkeypatch.setenv("LSTMKIT_DISPATCH_CACHE", str(path))
    dispatch.forget()
    yield path
    dispatch.forget()


def test_first_call_measures_and_remembers(measured: Path, monkeypatch: pytest.MonkeyPatch):
    lstm = lstmkit.LSTM(8, 16).eval()
    x = torch.randn(40, 3, 8)
    grads_before = [p.grad for p in lstm.parameters()]
    state = torch.get_rng_state()
    with torch.no_grad():
        y, _ = lstm(x)
    assert torch.equal(torch.get_rng_state(), state)  # measuring drew no random number of the caller
    data = json.loads(measured.read_text())
    (key, entry), = data["choices"].items()
    assert "grad=0" in key and "B=3 I=8 H=16" in key and "T<=64" in key
    # lengths bucket: 1, up to 16, up to 64 (measured at their length), longer (measured at 64 steps)
    buckets = [dispatch.key_of(lstm, torch.randn(T, 3, 8), False).split()[3] for T in (1, 16, 17, 64, 65, 500)]
    assert buckets == ["T1", "T<=16", "T<=64", "T<=64", "T>64", "T>64"]
    want = "fused" if entry["fused_s"] <= dispatch.MARGIN * entry["torch_s"] else "torch"
    assert entry["path"] == want == lstm.backend
    ref = torch.nn.LSTM(8, 16)
    ref.load_state_dict(lstm.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(y, ref(x)[0], atol=1e-5, rtol=1e-5)
    # training: its own measurement (forward + backward), and no .grad touched by it
    lstm.train()
    out, _ = lstm(x)
    assert [p.grad for p in lstm.parameters()] == grads_before
    assert len(json.loads(measured.read_text())["choices"]) == 2
    out.sum().backward()
    assert all(p.grad is not None for p in lstm.parameters())
    # a remembered choice is not measured again
    monkeypatch.setattr(dispatch, "_measure", lambda *a: pytest.fail("measured twice"))
    with torch.no_grad():
        lstm.eval()
        lstm(x)


def test_the_file_decides(measured: Path):
    lstm = lstmkit.LSTM(4, 6).eval()
    x = torch.randn(20, 2, 4)
    for path in ("fused", "torch"):
        key = dispatch.key_of(lstm, x, False)
        measured.write_text(json.dumps({"machine": dispatch._machine(),
                                        "choices": {key: {"path": path, "torch_s": 1.0, "fused_s": 1.0}}}))
        dispatch._loaded_from = None  # as a new process would
        with torch.no_grad():
            lstm(x)
        assert lstm.backend == path
    # another machine's file is ignored (measured anew)
    measured.write_text(json.dumps({"machine": "elsewhere", "choices": {key: {"path": "nonsense"}}}))
    dispatch._loaded_from = None
    with torch.no_grad():
        lstm(x)
    assert lstm.backend in ("torch", "fused")
    assert json.loads(measured.read_text())["machine"] == dispatch._machine()


def test_fixed_mode_and_what_is_never_measured(measured: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(dispatch, "_measure", lambda *a: pytest.fail("measured"))
    x = torch.randn(5, 2, 4)
    with torch.no_grad():
        lstmkit.LSTM(4, 6, peephole=True)(x)  # variants: one compiled path, nothing to choose
        lstmkit.LSTM(4, 6)(x, return_gates=True)
    monkeypatch.setenv("LSTMKIT_DISPATCH", "torch")
    lstm = lstmkit.LSTM(4, 6)
    with torch.no_grad():
        lstm(x)
    assert lstm.backend == "torch"
    monkeypatch.setenv("LSTMKIT_DISPATCH", "fastest")
    with pytest.raises(ValueError, match="LSTMKIT_DISPATCH must be"):
        lstm(x)
