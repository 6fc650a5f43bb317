"""The dispatch of plain calls (lstmkit.core.dispatch): by default a fixed rule from the benchmarks of
the project's two machines, the same path for the same call on the same machine, no file written;
measuring only when asked for (``dispatch.benchmark = True`` or LSTMKIT_DISPATCH=measure)."""

from __future__ import annotations

import builtins
import contextlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import lstmkit
from lstmkit import kernels
from lstmkit.core import dispatch
from lstmkit.core.dispatch import Case, Machine
from lstmkit.errors import InputError

needs_kernels = pytest.mark.skipif(
    os.environ.get("LSTMKIT_NO_KERNELS", "") not in ("", "0"), reason="kernels disabled by environment"
)

EPYC = Machine(kernel_lanes=8, torch_lanes=8, threads=2)  # AVX2 build on the AVX2 CPU
XEON = Machine(kernel_lanes=16, torch_lanes=16, threads=2)  # AVX-512 build on the AVX-512 CPU
XEON_AVX2_BUILD = Machine(kernel_lanes=8, torch_lanes=16, threads=2)  # LSTMKIT_KERNEL_SIMD=avx2 there


def case(T: int, B: int, I: int, H: int, grad: bool, **kw: object) -> Case:
    args: dict[str, object] = dict(
        steps=T, batch=B, input_size=I, hidden_size=H, proj_size=0, num_layers=1, directions=1, bias=True,
        dtype=torch.float32, grad=grad,
    )  # fmt: skip
    args.update(kw)
    return Case(**args)  # type: ignore[arg-type]


SMALL, MID, LARGE = (200, 8, 64, 128), (100, 32, 128, 256), (100, 64, 256, 512)  # DESIGN.md's shapes


@pytest.mark.parametrize(
    "machine,shape,grad,want",
    [
        # training: the kernels 1.3-1.8x nn.LSTM at all three shapes on both machines
        (EPYC, SMALL, True, "fused"), (EPYC, MID, True, "fused"), (EPYC, LARGE, True, "fused"),
        (XEON, SMALL, True, "fused"), (XEON, MID, True, "fused"), (XEON, LARGE, True, "fused"),
        # inference: clearly faster on the EPYC; on the Xeon train-large only 1.07-1.12x: torch
        (EPYC, SMALL, False, "fused"), (EPYC, MID, False, "fused"), (EPYC, LARGE, False, "fused"),
        (XEON, SMALL, False, "fused"), (XEON, MID, False, "fused"), (XEON, LARGE, False, "torch"),
        # the AVX2 build on the AVX-512 CPU lost or tied: torch everywhere
        (XEON_AVX2_BUILD, SMALL, True, "torch"), (XEON_AVX2_BUILD, SMALL, False, "torch"),
        (XEON_AVX2_BUILD, MID, True, "torch"),
    ],
)  # fmt: skip
def test_rule_at_the_benchmark_shapes(machine: Machine, shape: tuple[int, int, int, int], grad: bool, want: str):
    assert dispatch.rule(case(*shape, grad), machine) == want


@pytest.mark.parametrize("machine", [EPYC, XEON])
@pytest.mark.parametrize(
    "change",
    [
        {"steps": 63},  # short sequences: the kernels' fixed costs eat their lead
        {"batch": 4}, {"batch": 128}, {"hidden_size": 64}, {"hidden_size": 1024},  # outside the measured box
        {"input_size": 300},  # I > H
        {"dtype": torch.float64}, {"proj_size": 32}, {"directions": 2},  # never measured against nn.LSTM
    ],
)  # fmt: skip
def test_rule_picks_torch_where_nothing_was_measured(machine: Machine, change: dict[str, object]):
    base = case(*SMALL, True)
    assert dispatch.rule(base, machine) == "fused"  # the change alone turns it to torch
    assert dispatch.rule(case(*SMALL, True, **change), machine) == "torch"


def test_rule_needs_two_threads_and_a_simd_it_knows():
    c = case(*SMALL, True)
    assert dispatch.rule(c, Machine(8, 8, 2)) == "fused"
    for m in (Machine(8, 8, 1), Machine(8, 8, 4), Machine(0, 8, 2), Machine(8, 0, 2), Machine(16, 8, 2)):
        assert dispatch.rule(c, m) == "torch", m
    # the inside of the box and layers above the first (I = H) are covered; Xeon inference up to mid only
    assert dispatch.rule(case(64, 16, 192, 192, False), XEON) == "fused"
    assert dispatch.rule(case(64, 16, 192, 192, False, num_layers=3), XEON) == "fused"
    assert dispatch.rule(case(64, 33, 128, 256, False), XEON) == "torch"
    assert dispatch.rule(case(64, 32, 128, 257, False), XEON) == "torch"
    assert dispatch.rule(case(64, 64, 512, 512, False), EPYC) == "fused"


@pytest.fixture
def default_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's default: no LSTMKIT_DISPATCH, benchmark off; the old cache variable points into an
    empty folder (it must stay unused)."""
    monkeypatch.delenv("LSTMKIT_DISPATCH", raising=False)
    monkeypatch.setenv("LSTMKIT_DISPATCH_CACHE", str(tmp_path / "dispatch.json"))
    monkeypatch.setattr(dispatch, "benchmark", False)
    monkeypatch.setattr(dispatch, "_measure", lambda *a: pytest.fail("measured without being asked to"))
    dispatch.forget()
    return tmp_path


@contextlib.contextmanager
def no_file_written(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail on any file opened for writing, or renamed, inside the block."""
    real_open = builtins.open

    def guarded(file, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        if any(c in mode for c in "wax+"):
            pytest.fail(f"wrote {file}")
        return real_open(file, mode, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(builtins, "open", guarded)
        m.setattr(io, "open", guarded)
        m.setattr(os, "replace", lambda *a, **k: pytest.fail(f"renamed {a}"))
        m.setattr(os, "rename", lambda *a, **k: pytest.fail(f"renamed {a}"))
        yield


def _expected(m: Machine, c: Case) -> str:
    """What the rule should say here at train-small's sizes: fused only with a known, matching SIMD
    and two threads (independent of dispatch.machine's reading, from torch and the build's own words)."""
    info = kernels.build_info() or ""
    lanes = 16 if "lanes_f32=16" in info else (8 if "lanes_f32=8" in info else 0)
    cap = torch.backends.cpu.get_cpu_capability()
    torch_lanes = 16 if cap.startswith("AVX512") else (8 if cap == "AVX2" else 0)
    assert (m.kernel_lanes, m.torch_lanes, m.threads) == (lanes, torch_lanes, torch.get_num_threads())
    ok = lanes != 0 and lanes == torch_lanes and torch.get_num_threads() == 2
    return "fused" if ok and c.steps >= 64 else "torch"


@needs_kernels
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("T", [64, 20])
def test_default_follows_the_rule_and_matches_nn_lstm(
    default_mode: Path, monkeypatch: pytest.MonkeyPatch, grad: bool, T: int
):
    if not kernels.available():
        pytest.skip(f"kernels unavailable: {kernels.unavailable_reason()}")
    torch.manual_seed(0)
    ref = nn.LSTM(32, 128, batch_first=True)
    lstm = lstmkit.LSTM.from_torch(ref)
    x = torch.randn(8, T, 32)
    want = _expected(dispatch.machine(), case(T, 8, 32, 128, grad))
    xr, xm = x.clone().requires_grad_(grad), x.clone().requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        y_ref, (h_ref, c_ref) = ref(xr)
        with no_file_written(monkeypatch):
            for _ in range(2):  # the same call runs the same path every time
                y, (h, c) = lstm(xm)
                assert lstm.backend == want
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close((h, c), (h_ref, c_ref), atol=1e-5, rtol=1e-5)
    if grad:
        w = torch.randn_like(y)
        g_ref = torch.autograd.grad((y_ref * w).sum(), [xr, *ref.parameters()])
        g = torch.autograd.grad((y * w).sum(), [xm, *lstm.parameters()])
        for a, b in zip(g, g_ref):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert list(default_mode.iterdir()) == []  # $LSTMKIT_DISPATCH_CACHE unused
    assert dispatch.choices() == {}


@pytest.fixture
def measuring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, list[int]]]:
    """benchmark = True, the old cache variable into an empty folder; the list counts the measurements."""
    monkeypatch.delenv("LSTMKIT_DISPATCH", raising=False)
    monkeypatch.setenv("LSTMKIT_DISPATCH_CACHE", str(tmp_path / "dispatch.json"))
    monkeypatch.setattr(dispatch, "benchmark", True)
    calls: list[int] = []
    measure = dispatch._measure

    def counted(run):  # type: ignore[no-untyped-def]
        calls.append(1)
        return measure(run)

    monkeypatch.setattr(dispatch, "_measure", counted)
    dispatch.forget()
    yield tmp_path, calls
    dispatch.forget()


@needs_kernels
def test_measuring_is_an_opt_in(measuring: tuple[Path, list[int]], monkeypatch: pytest.MonkeyPatch):
    if not kernels.available():
        pytest.skip(f"kernels unavailable: {kernels.unavailable_reason()}")
    home, calls = measuring
    lstm = lstmkit.LSTM(8, 16).eval()
    x = torch.randn(40, 3, 8)
    grads_before = [p.grad for p in lstm.parameters()]
    state = torch.get_rng_state()
    with torch.no_grad(), no_file_written(monkeypatch):
        y, _ = lstm(x)
    assert torch.equal(torch.get_rng_state(), state)  # measuring drew no random number of the caller
    ((key, entry),) = dispatch.choices().items()
    assert "grad=0" in key and "B=3 I=8 H=16" in key and "T<=64" in key
    want = "fused" if entry["fused_s"] <= dispatch.MARGIN * entry["torch_s"] else "torch"
    assert entry["path"] == want == lstm.backend and calls == [1]
    ref = nn.LSTM(8, 16)
    ref.load_state_dict(lstm.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(y, ref(x)[0], atol=1e-5, rtol=1e-5)
    # training: its own measurement (forward + backward), no .grad touched, the module left as it was
    lstm.train()
    out, _ = lstm(x)
    assert [p.grad for p in lstm.parameters()] == grads_before and lstm.training and calls == [1, 1]
    out.sum().backward()
    assert all(p.grad is not None for p in lstm.parameters())
    with torch.no_grad():  # a remembered choice is not measured again
        lstm.eval()(x)
    assert calls == [1, 1]
    # lengths bucket: 1, up to 16, up to 64 (measured at their length), longer (measured at 64 steps)
    buckets = [case(T, 3, 8, 16, False).key().split()[3] for T in (1, 16, 17, 64, 65, 500)]
    assert buckets == ["T1", "T<=16", "T<=64", "T<=64", "T>64", "T>64"]
    assert list(home.iterdir()) == []  # remembered in the process only
    # the environment asks for it the same way
    monkeypatch.setattr(dispatch, "benchmark", False)
    dispatch.forget()
    monkeypatch.setenv("LSTMKIT_DISPATCH", "measure")
    with torch.no_grad():
        lstm(x)
    assert calls == [1, 1, 1]


@needs_kernels
def test_fixed_modes_and_what_is_never_measured(default_mode: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(dispatch, "benchmark", True)  # even when measuring, nothing to choose for these
    x = torch.randn(5, 2, 4)
    with torch.no_grad():
        lstmkit.LSTM(4, 6, peephole=True)(x)  # variants: one compiled path
        lstmkit.LSTM(4, 6)(x, return_gates=True)  # traces too
    monkeypatch.setattr(dispatch, "benchmark", False)
    monkeypatch.setenv("LSTMKIT_DISPATCH", "torch")
    lstm = lstmkit.LSTM(32, 128)
    with torch.no_grad():
        lstm(torch.randn(200, 8, 32))  # inside the rule's box, but the environment says torch
    assert lstm.backend == "torch"
    monkeypatch.setenv("LSTMKIT_DISPATCH", "fastest")
    with pytest.raises(InputError, match="LSTMKIT_DISPATCH must be"):
        lstm(x.new_zeros(200, 8, 32))
