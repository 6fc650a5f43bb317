"""Property-based tests (hypothesis): over configurations, shapes, lengths and dtypes every fast path
equals the reference path or raises the documented error, and no other exception escapes."""

from __future__ import annotations

import pytest
import torch
from conftest import backends
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def configs(draw):
    H = draw(st.integers(1, 5))
    return {
        "input_size": draw(st.integers(1, 4)),
        "hidden_size": H,
        "num_layers": draw(st.integers(1, 2)),
        "bias": draw(st.booleans()),
        "batch_first": draw(st.booleans()),
        "bidirectional": draw(st.booleans()),
        "proj_size": draw(st.integers(0, H - 1)),
        "peephole": draw(st.booleans()),
        "layer_norm": draw(st.booleans()),
        "coupled": draw(st.booleans()),
        "zoneout": draw(st.sampled_from([0.0, 0.2])),
    }


@SETTINGS
@given(
    cfg=configs(),
    T=st.integers(1, 6),
    B=st.integers(1, 3),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    packed=st.booleans(),
    unbatched=st.booleans(),
    init=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_fast_paths_equal_reference(cfg, T, B, dtype, packed, unbatched, init, seed):
    torch.manual_seed(seed)
    if cfg["coupled"] and cfg["bias"]:
        cfg = {**cfg, "forget_bias": 0.0}
    ref = lstmkit.LSTM(**cfg, dtype=dtype, backend="reference").eval()
    D = 2 if cfg["bidirectional"] else 1
    L = cfg["num_layers"]
    R = cfg["proj_size"] or cfg["hidden_size"]
    if unbatched:
        packed = False
        x = torch.randn(T, cfg["input_size"], dtype=dtype)
        hx = (torch.randn(L * D, R, dtype=dtype), torch.randn(L * D, cfg["hidden_size"], dtype=dtype)) if init else None
    else:
        shape = (B, T, cfg["input_size"]) if cfg["batch_first"] else (T, B, cfg["input_size"])
        x = torch.randn(shape, dtype=dtype)
        hx = (
            (torch.randn(L * D, B, R, dtype=dtype), torch.randn(L * D, B, cfg["hidden_size"], dtype=dtype))
            if init
            else None
        )
    inp = x
    if packed:
        lengths = torch.randint(1, T + 1, (B,))
        inp = pack_padded_sequence(x, lengths, batch_first=cfg["batch_first"], enforce_sorted=False)
    want_out, (want_h, want_c) = ref(inp, hx)
    # float32: the kernels' polynomial sigmoid/tanh (~2e-7 relative, ~4e-7 absolute in the plain
    # time loops) compound over steps; hypothesis once found 1.6e-5
    tol = 3e-5 if dtype == torch.float32 else 1e-10
    if dtype == torch.float32 and cfg["layer_norm"]:
        # layer norm over a handful of units can amplify rounding a thousandfold (rstd up to
        # 1/sqrt(eps)): the float32 reference itself then strays from the float64 truth, and any other
        # float32 summation order strays by a similar, luck-dependent amount. Hypothesis found (H=3,
        # projection, peephole, zoneout) the reference 1.6e-5 and the fused kernel 1.5e-4 from the
        # truth at the same element, with this session's and the previous kernels alike. The
        # reference's own distance measures the amplification; a wrong formula is off by ~1e-1.
        ref64 = lstmkit.LSTM(**cfg, dtype=torch.float64, backend="reference").eval()
        ref64.load_state_dict({k: v.double() for k, v in ref.state_dict().items()})
        if packed:
            inp64 = pack_padded_sequence(x.double(), lengths, batch_first=cfg["batch_first"], enforce_sorted=False)
        else:
            inp64 = inp.double()
        hx64 = None if hx is None else (hx[0].double(), hx[1].double())
        o64, (h64, c64) = ref64(inp64, hx64)
        w_out = want_out.data if packed else want_out
        o64 = o64.data if packed else o64
        own = max((a.double() - b).abs().max().item() for a, b in ((w_out, o64), (want_h, h64), (want_c, c64)))
        tol = max(tol, 3e-5 + 20 * own)
    plain = not (cfg["peephole"] or cfg["layer_norm"] or cfg["coupled"] or cfg["zoneout"])
    for backend in backends():
        if backend == "reference":
            continue
        fast = lstmkit.LSTM(**cfg, dtype=dtype, backend="auto").eval()
        fast.load_state_dict(ref.state_dict())
        fast.requested_backend = backend
        try:
            out, (h, c) = fast(inp, hx)
        except ValueError as e:  # the documented refusal: torch's LSTM runs only the plain cell
            assert backend == "torch" and not plain, f"{backend} refused {cfg}: {e}"
            assert "runs only the plain cell" in str(e), e
            continue
        assert fast.backend == backend  # the requested path ran (the fused kernels run every configuration)
        o1 = out.data if packed else out
        o2 = want_out.data if packed else want_out
        for a, b in ((o1, o2), (h, want_h), (c, want_c)):
            assert a.shape == b.shape and torch.allclose(a, b, atol=tol, rtol=tol), (backend, (a - b).abs().max())


@SETTINGS
@given(
    dims=st.lists(st.integers(0, 4), min_size=0, max_size=5),
    feat=st.integers(1, 5),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.int64, torch.float16]),
    hx_shape=st.one_of(st.none(), st.lists(st.integers(1, 3), min_size=1, max_size=4)),
)
def test_any_input_gives_output_or_documented_error(dims, feat, dtype, hx_shape):
    m = lstmkit.LSTM(3, 4)
    shape = (*dims, feat)
    x = torch.zeros(shape).to(dtype)
    hx = None if hx_shape is None else (torch.zeros(hx_shape), torch.zeros(hx_shape))
    try:
        out, (h, c) = m(x, hx)
    except (ValueError, TypeError) as e:
        assert str(e).startswith("LSTM: "), str(e)
        return
    assert torch.isfinite(out).all()


# ----------------------------------------------------------------------------- numerical range


def test_ten_thousand_steps_float32_no_overflow():
    torch.manual_seed(0)
    m = lstmkit.LSTM(4, 16, backend="reference")
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(3.0)  # large weights: saturating gates
        x = torch.randn(10_000, 2, 4) * 10
        out, (h, c), tr = m(x, return_gates=True)
        ref_out, (rh, rc) = lstmkit.LSTM.from_torch(m.to_torch())(x)
    assert torch.isfinite(out).all() and torch.isfinite(c).all()
    assert out.abs().max() <= 1.0
    assert torch.allclose(out, ref_out, atol=1e-4)
    assert torch.isfinite(tr.c).all() and (tr.f >= 0).all() and (tr.f <= 1).all()


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_large_magnitude_inputs(backend):
    m = lstmkit.LSTM(3, 8, backend=backend)
    x = torch.full((20, 2, 3), 1e6)
    x[::2] *= -1
    out, (h, c) = m(x)
    assert torch.isfinite(out).all() and torch.isfinite(c).all() and out.abs().max() <= 1.0


BF16_TOL = 0.05  # documented: bfloat16 keeps 8 bits of mantissa


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_bfloat16_autocast_on_cpu(backend):
    """torch.nn.LSTM itself fails under CPU bf16 autocast here (oneDNN); lstmkit's auto path runs."""
    torch.manual_seed(0)
    m = lstmkit.LSTM(8, 16, 2, backend=backend)
    x = torch.randn(30, 4, 8)
    want, _ = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, (h, c) = m(x)
    assert torch.isfinite(got.float()).all()
    assert (got.float() - want).abs().max() < BF16_TOL
