"""Tests of the fused CPU kernels (lstmkit.kernels) against torch.nn.LSTM and an explicit
step-by-step oracle of the cell's equations (tests/oracle.py), independent of lstmkit.

The kernels are built on first use (~1 min, then cached). If they cannot be built on this machine
the tests that need them are skipped, and test_unavailable_* still run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from oracle import oracle_layer as oracle

from lstmkit import kernels as K
from lstmkit.kernels import _build

SRC = str(Path(__file__).resolve().parents[1] / "src")

needs_kernels = pytest.mark.skipif(
    os.environ.get("LSTMKIT_NO_KERNELS", "") not in ("", "0"), reason="kernels disabled by environment"
)


@pytest.fixture(scope="module")
def kern() -> None:
    if not K.available():
        pytest.skip(f"fused kernels unavailable: {K.unavailable_reason()}")


def make_case(
    T: int,
    B: int,
    I: int,
    H: int,
    *,
    P: int = 0,
    bias: bool = True,
    peephole: bool = False,
    zoneout: bool = False,
    lengths: bool = False,
    layer_norm: bool = False,
    init_state: bool = True,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    R = P or H

    def r(*shape: int, scale: float = 0.5) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    case: dict[str, Any] = {
        "x": r(T, B, I, scale=1.0),
        "h0": r(B, R) if init_state else torch.zeros(B, R, dtype=dtype),
        "c0": r(B, H) if init_state else torch.zeros(B, H, dtype=dtype),
        "w_ih": r(4 * H, I),
        "w_hh": r(4 * H, R),
        "b_ih": r(4 * H) if bias else None,
        "b_hh": r(4 * H) if bias else None,
        "w_hr": r(P, H) if P else None,
        "peephole": r(3, H) if peephole else None,
        "zoneout_c": (torch.rand(T, B, H, generator=g) < 0.3).to(dtype) if zoneout else None,
        "zoneout_h": (torch.rand(T, B, R, generator=g) < 0.3).to(dtype) if zoneout else None,
        "lengths": None,
    }
    for k, n in zip(("g_ih", "s_ih", "g_hh", "s_hh", "g_c", "s_c"), (4 * H, 4 * H, 4 * H, 4 * H, H, H)):
        if layer_norm:
            case[k] = (1.0 if k.startswith("g") else 0.0) + r(n, scale=0.2)
        else:
            case[k] = None
    if lengths:
        lens = torch.randint(1, T + 1, (B,), generator=g)
        lens[0] = T  # the longest one reaches the end
        if B > 2:
            lens[-1] = max(1, T // 2)
        case["lengths"] = lens
    return case


LN_NAMES = ("g_ih", "s_ih", "g_hh", "s_hh", "g_c", "s_c")
DIFF = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "peephole", *LN_NAMES)


def ln_of(d: dict[str, Any]) -> tuple[torch.Tensor, ...] | None:
    return tuple(d[k] for k in LN_NAMES) if d.get("g_ih") is not None else None


def run_both(
    case: dict[str, Any], coupled: bool = False, num_threads: int | None = None
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[str]]:
    """Returns kernel results and oracle (float64) results: outputs, trace, then gradients."""
    T, B = case["x"].shape[:2]
    R = case["h0"].shape[1]
    H = case["c0"].shape[1]
    g = torch.Generator().manual_seed(123)
    wy = torch.randn(T, B, R, generator=g, dtype=torch.float64)
    wh = torch.randn(B, R, generator=g, dtype=torch.float64)
    wc = torch.randn(B, H, generator=g, dtype=torch.float64)

    def leaves(dtype: torch.dtype) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in case.items():
            if isinstance(v, torch.Tensor) and k in DIFF:
                out[k] = v.detach().to(dtype).requires_grad_(True)
            elif isinstance(v, torch.Tensor) and k != "lengths":
                out[k] = v.to(dtype)
            else:
                out[k] = v
        return out

    kin = leaves(case["x"].dtype)
    y, hT, cT, tr = K.fused_layer(
        kin["x"], kin["h0"], kin["c0"], kin["w_ih"], kin["w_hh"], kin["b_ih"], kin["b_hh"],
        w_hr=kin["w_hr"], peephole=kin["peephole"], coupled=coupled, zoneout_c=kin["zoneout_c"],
        zoneout_h=kin["zoneout_h"], lengths=kin["lengths"], trace=True, num_threads=num_threads,
        ln=ln_of(kin),
    )  # fmt: skip
    assert tr is not None
    loss = (y.double() * wy).sum() + (hT.double() * wh).sum() + (cT.double() * wc).sum()
    names = [k for k in DIFF if kin[k] is not None]
    kgrads = torch.autograd.grad(loss, [kin[k] for k in names])

    oin = leaves(torch.float64)
    oy, ohT, ocT, og, oc = oracle(
        oin["x"], oin["h0"], oin["c0"], oin["w_ih"], oin["w_hh"], oin["b_ih"], oin["b_hh"],
        w_hr=oin["w_hr"], peephole=oin["peephole"], coupled=coupled, zoneout_c=oin["zoneout_c"],
        zoneout_h=oin["zoneout_h"], lengths=oin["lengths"], ln=ln_of(oin),
    )  # fmt: skip
    oloss = (oy * wy).sum() + (ohT * wh).sum() + (ocT * wc).sum()
    ograds = torch.autograd.grad(oloss, [oin[k] for k in names], allow_unused=True)
    ograds = tuple(torch.zeros_like(oin[k]) if gr is None else gr for k, gr in zip(names, ograds))
    got = [y, hT, cT, tr[0], tr[1], *kgrads]
    want = [oy, ohT, ocT, og, oc, *ograds]
    labels = ["y", "h_T", "c_T", "gates", "c", *(f"d{k}" for k in names)]
    return got, want, labels


def assert_close(got: list[torch.Tensor], want: list[torch.Tensor], labels: list[str], rtol: float) -> None:
    for a, b, name in zip(got, want, labels):
        a, b = a.detach(), b.detach()
        assert a.shape == b.shape, f"{name}: shape {tuple(a.shape)} != {tuple(b.shape)}"
        scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
        err = float((a.double() - b.double()).abs().max()) if b.numel() else 0.0
        assert err <= rtol * scale, f"{name}: max error {err:.3g} > {rtol:g} * {scale:.3g}"


CONFIGS: list[dict[str, Any]] = [
    dict(T=1, B=1, I=3, H=8),
    dict(T=7, B=3, I=5, H=13),
    dict(T=5, B=8, I=4, H=20, init_state=False),
    dict(T=9, B=13, I=6, H=16),
    dict(T=6, B=5, I=5, H=24, bias=False),
    dict(T=7, B=4, I=5, H=13, lengths=True),
    dict(T=6, B=6, I=4, H=12, P=5),
    dict(T=7, B=5, I=4, H=19, P=9, lengths=True),
    dict(T=5, B=3, I=4, H=11, peephole=True),
    dict(T=6, B=4, I=5, H=10, zoneout=True),
    dict(T=7, B=5, I=3, H=13, P=6, peephole=True, zoneout=True, lengths=True),
    dict(T=5, B=20, I=9, H=72, P=0, lengths=True, peephole=True),
    dict(T=6, B=4, I=5, H=16, layer_norm=True),
    dict(T=7, B=5, I=4, H=13, layer_norm=True, lengths=True, init_state=False),
    dict(T=6, B=3, I=4, H=11, P=5, layer_norm=True, peephole=True, zoneout=True, lengths=True),
]


@needs_kernels
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
@pytest.mark.parametrize("coupled", [False, True])
def test_fused_matches_oracle_float32(kern: None, cfg: dict[str, Any], coupled: bool) -> None:
    if coupled and cfg["T"] == 1:
        pytest.skip("covered by the longer cases")
    case = make_case(**cfg)
    got, want, labels = run_both(case, coupled=coupled)
    assert_close(got, want, labels, rtol=1e-5)
    assert got[0].abs().max() > 0, "all-zero output"


@needs_kernels
@pytest.mark.parametrize("threads", [1, 2])
def test_inference_trace_streamed_gates_match_oracle(kern: None, threads: int) -> None:
    # no gradient + a trace: the gates go out with streaming stores (H a multiple of the float lanes,
    # 8 or 16); lengths make some rows carry their state (trace 0 there)
    case = make_case(T=7, B=3, I=5, H=16)
    lengths = torch.tensor([7, 4, 1])
    args = [case[k] for k in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")]
    with torch.no_grad():
        y, hT, cT, tr = K.fused_layer(*args, lengths=lengths, trace=True, num_threads=-threads)
    d = [a.double() for a in args]
    oy, ohT, ocT, og, oc = oracle(*d, lengths=lengths)
    assert_close([y, hT, cT, tr[0], tr[1]], [oy, ohT, ocT, og, oc], ["y", "h_T", "c_T", "gates", "c"], rtol=1e-5)


@needs_kernels
@pytest.mark.parametrize(
    "cfg", [CONFIGS[1], CONFIGS[7], CONFIGS[10], CONFIGS[14]], ids=["plain", "proj-len", "all", "ln-all"]
)
def test_fused_matches_oracle_float64(kern: None, cfg: dict[str, Any]) -> None:
    case = make_case(**cfg, dtype=torch.float64)
    got, want, labels = run_both(case, coupled=False)
    assert_close(got, want, labels, rtol=1e-10)


@needs_kernels
@pytest.mark.parametrize("proj", [0, 6])
@pytest.mark.parametrize("bidir_like", [False, True])
def test_plain_matches_torch_lstm(kern: None, proj: int, bidir_like: bool) -> None:
    """The plain cell against torch.nn.LSTM itself (weights copied), outputs and all gradients."""
    torch.manual_seed(1)
    T, B, I, H = 9, 4, 7, 16
    ref = torch.nn.LSTM(I, H, proj_size=proj)
    x = torch.randn(T, B, I)
    if bidir_like:  # the core runs the reverse direction on a flipped sequence
        x = x.flip(0).contiguous()
    h0 = torch.randn(1, B, proj or H)
    c0 = torch.randn(1, B, H)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    s0 = [(h0.clone().requires_grad_(True), c0.clone().requires_grad_(True)) for _ in range(2)]
    y_ref, (h_ref, c_ref) = ref(xs[0], s0[0])
    p = dict(ref.named_parameters())
    params = [p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"]]
    w_hr = p["weight_hr_l0"] if proj else None
    y, hT, cT, _ = K.fused_layer(xs[1], s0[1][0][0], s0[1][1][0], *params, w_hr=w_hr)
    g = torch.Generator().manual_seed(5)
    wy, wh, wc = (torch.randn(t.shape, generator=g) for t in (y, hT, cT))
    inputs = [*params] + ([w_hr] if w_hr is not None else [])
    ref_loss = (y_ref * wy).sum() + (h_ref[0] * wh).sum() + (c_ref[0] * wc).sum()
    g_ref = torch.autograd.grad(ref_loss, [xs[0], *s0[0], *inputs])
    loss = (y * wy).sum() + (hT * wh).sum() + (cT * wc).sum()
    g_k = torch.autograd.grad(loss, [xs[1], *s0[1], *inputs])
    assert_close([y, hT, cT], [y_ref, h_ref[0], c_ref[0]], ["y", "h_T", "c_T"], rtol=1e-5)
    assert_close(list(g_k), list(g_ref), [f"grad{i}" for i in range(len(g_k))], rtol=1e-5)


@needs_kernels
@pytest.mark.parametrize(
    "cfg",
    [CONFIGS[3], CONFIGS[7], CONFIGS[10], CONFIGS[14], dict(T=5, B=20, I=9, H=72, lengths=True)],
    ids=["plain", "proj-len", "all", "ln-all", "wide"],
)
def test_one_and_two_threads_agree(kern: None, cfg: dict[str, Any]) -> None:
    case = make_case(**cfg)
    got1, _, labels = run_both(case, num_threads=-1)  # negative: exactly that many threads
    got2, _, _ = run_both(case, num_threads=-2)
    for a, b, name in zip(got1, got2, labels):
        scale = max(1.0, float(b.abs().max()))
        assert float((a - b).abs().max()) <= 1e-6 * scale, name


SPLIT_CASES = [
    dict(T=9, B=9, I=6, H=16),  # odd rows: 4 and 5 per thread
    dict(T=7, B=5, I=4, H=13, lengths=True, zoneout=True, init_state=False),
    dict(T=6, B=8, I=5, H=20, peephole=True),  # rows forward; the backward keeps units (dpeep)
    dict(T=5, B=2, I=3, H=8),  # one row per thread
    dict(T=4, B=6, I=3, H=10, P=4),  # projection: not legal for rows, units whatever is asked
    dict(T=3, B=8, I=8, H=160),  # [W_ih | W_hh] over 384 KB: the input projection stays one GEMM
    dict(T=6, B=9, I=5, H=12, dtype=torch.float64),
    dict(T=1, B=3, I=4, H=13, lengths=True, zoneout=True),  # one step
    dict(T=5, B=1, I=6, H=8, bias=False),  # fewer rows than threads; no biases (projection in the loop)
    dict(T=4, B=5, I=3, H=13, dtype=torch.float64),  # H not a multiple of the 4 float64 lanes
    dict(T=150, B=8, I=4, H=12, lengths=True),  # the bias gradient's partial sums fold every 64 steps
]


@needs_kernels
@pytest.mark.parametrize(
    "cfg",
    SPLIT_CASES,
    ids=["odd", "len-zone", "peep", "tiny", "proj", "wide", "f64", "T1", "B1-nobias", "f64-H13", "long"],
)
@pytest.mark.parametrize("split", [1, 2], ids=["units", "rows"])
@pytest.mark.parametrize("coupled", [False, True])
def test_thread_splits_match_oracle(kern: None, cfg: dict[str, Any], split: int, coupled: bool) -> None:
    """Two threads splitting the unit blocks or the batch rows (forced either way), against the oracle."""
    assert_close(*run_split(cfg, split, coupled), rtol=1e-5)


def run_split(
    cfg: dict[str, Any], split: int, coupled: bool
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[str]]:
    """run_both with two threads and the split forced (1: unit blocks, 2: batch rows)."""
    m = K._mod()
    m.set_thread_split(split)
    try:
        return run_both(make_case(**cfg), coupled=coupled, num_threads=-2)
    finally:
        m.set_thread_split(0)


# Several unit blocks per thread whatever the vector width (8 float lanes with AVX2, 16 with
# AVX-512: H = 40 is 2.5 blocks of 16, 5 of 8), with a partial last block and every variant.
MULTI_BLOCK_CASES = [
    dict(T=6, B=5, I=7, H=40),
    dict(T=5, B=8, I=9, H=72, lengths=True, init_state=False),
    dict(T=5, B=4, I=6, H=56, P=20),
    dict(T=5, B=6, I=5, H=40, peephole=True, zoneout=True, lengths=True),
    dict(T=4, B=5, I=6, H=50, layer_norm=True, peephole=True),
    dict(T=4, B=3, I=5, H=40, dtype=torch.float64),
    # from 32 rows the AVX-512 build moves the input projection into the unit-split loop too
    dict(T=4, B=33, I=6, H=40, lengths=True, peephole=True, zoneout=True),
    dict(T=3, B=32, I=5, H=24, bias=False, init_state=False),
    dict(T=3, B=32, I=5, H=20, peephole=True, dtype=torch.float64),
    # [W_ih | W_hh] of 1.6 MB: the row split without the projection in the loop (R not a multiple of 64)
    dict(T=3, B=8, I=300, H=200, lengths=True, zoneout=True),
]


@needs_kernels
@pytest.mark.parametrize(
    "cfg",
    MULTI_BLOCK_CASES,
    ids=["plain", "len", "proj", "peep-zone-len", "ln-peep", "f64", "B33-all", "B32-nobias", "B32-f64", "big-W"],
)
@pytest.mark.parametrize("split", [1, 2], ids=["units", "rows"])
def test_multi_block_layers_match_oracle(kern: None, cfg: dict[str, Any], split: int) -> None:
    tol = 1e-10 if cfg.get("dtype") == torch.float64 else 1e-5
    assert_close(*run_split(cfg, split, coupled=False), rtol=tol)


INFER_CASES = [
    dict(T=1, B=3, I=4, H=13),
    dict(T=2, B=5, I=4, H=20, lengths=True),
    dict(T=7, B=6, I=5, H=40, zoneout=True, peephole=True, lengths=True),
    dict(T=6, B=4, I=5, H=24, P=7, zoneout=True),
    dict(T=5, B=4, I=5, H=19, layer_norm=True, zoneout=True, lengths=True),
    dict(T=5, B=33, I=6, H=40, lengths=True),
    dict(T=4, B=3, I=5, H=13, dtype=torch.float64, lengths=True, zoneout=True),
]


@needs_kernels
@pytest.mark.parametrize(
    "cfg", INFER_CASES, ids=["T1", "T2-len", "zone-peep-len", "proj-zone", "ln-zone-len", "B33-len", "f64"]
)
@pytest.mark.parametrize("split", [1, 2], ids=["units", "rows"])
def test_inference_without_trace_matches_oracle(kern: None, cfg: dict[str, Any], split: int) -> None:
    """No gradient and no trace: the cell state lives in two buffers in turn instead of a history."""
    c = make_case(**cfg)
    args = [c[k] for k in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")]
    kw = dict(w_hr=c["w_hr"], peephole=c["peephole"], zoneout_c=c["zoneout_c"], zoneout_h=c["zoneout_h"],
              lengths=c["lengths"], ln=ln_of(c))  # fmt: skip
    m = K._mod()
    m.set_thread_split(split)
    try:
        with torch.no_grad():
            y, hT, cT, tr = K.fused_layer(*args, **kw, num_threads=-2)  # type: ignore[arg-type]
    finally:
        m.set_thread_split(0)
    assert tr is None
    d = {k: (v.double() if isinstance(v, torch.Tensor) and k != "lengths" else v) for k, v in kw.items()}
    if d["ln"] is not None:
        d["ln"] = tuple(t.double() for t in d["ln"])
    oy, ohT, ocT, _, _ = oracle(*[a.double() if a is not None else None for a in args], **d)
    tol = 1e-10 if cfg.get("dtype") == torch.float64 else 1e-5
    assert_close([y, hT, cT], [oy, ohT, ocT], ["y", "h_T", "c_T"], rtol=tol)


def test_thread_split_mode_is_checked(kern: None) -> None:
    with pytest.raises(RuntimeError, match="mode must be"):
        K._mod().set_thread_split(3)


@needs_kernels
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["sum", "per-feature", "proj-zoneout"])
def test_broadcast_output_gradient(kern: None, threads: int, kind: str) -> None:
    """y.sum().backward() hands the kernel an expanded gradient (strides 0, 0, 0; a per-feature
    weight gives 0, 0, 1): one row of it is read in place."""
    P = 6 if kind == "proj-zoneout" else 0
    case = make_case(T=6, B=8, I=5, H=16, P=P, lengths=True, zoneout=kind == "proj-zoneout")
    names = ["x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh"] + (["w_hr"] if P else [])
    extra = {k: case[k] for k in ("zoneout_c", "zoneout_h")}
    wf = torch.linspace(-1.0, 1.0, P or 16) if kind == "per-feature" else None

    def loss(y: torch.Tensor, hT: torch.Tensor) -> torch.Tensor:
        return (y * wf.to(y.dtype)).sum() if wf is not None else y.sum() + 0.5 * hT.sum()

    kin = {k: case[k].detach().clone().requires_grad_(True) for k in names}
    y, hT, _, _ = K.fused_layer(
        *(kin[k] for k in names[:7]), w_hr=kin.get("w_hr"), lengths=case["lengths"], num_threads=-threads, **extra
    )
    loss(y, hT).backward()
    oin = {k: case[k].detach().double().requires_grad_(True) for k in names}
    oy, ohT, _, _, _ = oracle(
        *(oin[k] for k in names[:7]), w_hr=oin.get("w_hr"), lengths=case["lengths"],
        **{k: (v.double() if v is not None else None) for k, v in extra.items()},
    )  # fmt: skip
    loss(oy, ohT).backward()
    assert_close([kin[k].grad for k in names], [oin[k].grad for k in names], [f"d{k}" for k in names], rtol=1e-5)


@needs_kernels
@pytest.mark.parametrize("which", ["x", "w_hh", "h0", "g_hh"])
def test_gradient_of_one_input_only(kern: None, which: str) -> None:
    """Only one input requires grad: the kernel skips the other gradients and still gets this one."""
    case = make_case(T=5, B=3, I=4, H=9, layer_norm=(which == "g_hh"), lengths=True)
    leaf = case[which].clone().requires_grad_(True)
    kin = {**case, which: leaf}
    y, hT, cT, _ = K.fused_layer(
        kin["x"], kin["h0"], kin["c0"], kin["w_ih"], kin["w_hh"], kin["b_ih"], kin["b_hh"],
        lengths=kin["lengths"], ln=ln_of(kin),
    )  # fmt: skip
    (g,) = torch.autograd.grad((y.sum() + hT.sum() * 2 + cT.sum() * 3), [leaf])
    oin = {k: (v.double() if isinstance(v, torch.Tensor) and k != "lengths" else v) for k, v in case.items()}
    oleaf = oin[which].clone().requires_grad_(True)
    oin[which] = oleaf
    oy, ohT, ocT, _, _ = oracle(
        oin["x"], oin["h0"], oin["c0"], oin["w_ih"], oin["w_hh"], oin["b_ih"], oin["b_hh"],
        lengths=oin["lengths"], ln=ln_of(oin),
    )  # fmt: skip
    (og,) = torch.autograd.grad((oy.sum() + ohT.sum() * 2 + ocT.sum() * 3), [oleaf])
    assert_close([g], [og], [f"d{which}"], rtol=1e-5)


@needs_kernels
@pytest.mark.parametrize("subset", [False, True], ids=["only-these-require-grad", "all-require-grad"])
@pytest.mark.parametrize(
    "loss_of, grad_of, cfg",
    [
        ("hT", ("x", "w_hh", "b_hh"), dict()),  # no gradient reaches y or c_T: both arrive undefined
        ("cT", ("h0", "c0", "w_ih"), dict(lengths=True)),
        ("y", ("b_hh", "w_hr"), dict(bias=False, P=3)),  # b_ih absent: the node's input edges shift
        ("y", ("b_ih",), dict()),
        ("y+cT", ("x", "g_c", "s_hh"), dict(layer_norm=True, peephole=True)),
        ("y", ("peephole",), dict(peephole=True, zoneout=True)),
    ],
    ids=["hT-only", "cT-only", "no-b_ih", "b_ih-only", "ln-some", "peep-only"],
)
def test_autograd_node_edges(
    kern: None, loss_of: str, grad_of: tuple[str, ...], cfg: dict[str, Any], subset: bool
) -> None:
    """The C++ autograd node: gradients of some inputs only (either only they require grad, or all
    do and torch.autograd.grad asks for some), outputs without a gradient, absent optional inputs;
    each requested gradient matches the oracle's."""
    case = make_case(T=5, B=3, I=4, H=9, **cfg)
    if not cfg.get("bias", True):
        case["b_hh"] = make_case(T=5, B=3, I=4, H=9, seed=1)["b_hh"]  # b_hh only
    got = grads_of(case, loss_of, grad_of, subset, case["x"].dtype, fused=True)
    want = grads_of(case, loss_of, grad_of, subset, torch.float64, fused=False)
    assert_close(list(got), list(want), [f"d{k}" for k in grad_of], rtol=1e-5)


def grads_of(
    case: dict[str, Any],
    loss_of: str,
    grad_of: tuple[str, ...],
    subset: bool,
    dtype: torch.dtype,
    *,
    fused: bool,
    num_threads: int | None = None,
) -> tuple[torch.Tensor, ...]:
    """The gradients of grad_of's inputs of a loss over some outputs ("y+cT": y + 2 c_T, summed), by
    the fused layer or the oracle. Only grad_of's inputs require grad, or with subset all do."""
    kin = {k: (v.to(dtype) if isinstance(v, torch.Tensor) and k != "lengths" else v) for k, v in case.items()}
    for k in DIFF:
        if isinstance(kin[k], torch.Tensor) and (subset or k in grad_of):
            kin[k] = kin[k].clone().requires_grad_(True)
    args = [kin[k] for k in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")]
    kw = dict(w_hr=kin["w_hr"], peephole=kin["peephole"], zoneout_c=kin["zoneout_c"],
              zoneout_h=kin["zoneout_h"], lengths=kin["lengths"], ln=ln_of(kin))  # fmt: skip
    if fused:
        y, hT, cT = K.fused_layer(*args, **kw, num_threads=num_threads)[:3]  # type: ignore[arg-type]
    else:
        y, hT, cT = oracle(*args, **kw)[:3]  # type: ignore[arg-type]
    parts = {"y": y, "hT": hT, "cT": cT}
    loss = sum((parts[name].double() * (n + 1)).sum() for n, name in enumerate(loss_of.split("+")))
    return torch.autograd.grad(loss, [kin[k] for k in grad_of])  # type: ignore[arg-type]


@needs_kernels
@pytest.mark.parametrize("split", [1, 2, 0], ids=["units", "rows", "auto-threads"])
@pytest.mark.parametrize(
    "grad_of", [("w_ih", "w_hh", "x"), ("w_hh",), ("w_ih",)], ids=["both", "w_hh-only", "w_ih-only"]
)
@pytest.mark.parametrize(
    "cfg",
    [
        dict(T=40, B=8, I=5, H=16),  # T*B = 320: three blocks of rows (128, 128, 64); a 5-column block
        dict(T=33, B=6, I=7, H=24, init_state=True),  # h0 / y meet at row 6; a row block ends mid-step
        dict(T=30, B=8, I=4, H=13, lengths=True),  # 4H = 52: a panel of 4 columns; h from h_all
        dict(T=30, B=8, I=4, H=16, lengths=True),  # rows past their sequence's end: da = 0 in the panels
        dict(T=140, B=8, I=3, H=16, lengths=True),  # the same with the copy from the buffer pool (> 256 KB)
        dict(T=2, B=136, I=3, H=8),  # h0's rows span two row blocks
        dict(T=1, B=8, I=3, H=8),  # one step: h_{t-1} is h0 only
        dict(T=20, B=8, I=5, H=64),  # 16 panels: two threads also when the thread count is not forced
        dict(T=20, B=8, I=6, H=16, layer_norm=True),  # different left factors for dW_ih and dW_hh
        dict(T=3, B=8, I=128, H=256),  # tiles over 256 KB per thread: MKL computes the weight gradients
    ],
    ids=["blocks", "segments", "tail-panel", "lengths", "lengths-pooled", "B136", "T1", "H64", "layer-norm", "mkl"],
)
def test_weight_gradients_match_oracle(kern: None, cfg: dict[str, Any], grad_of: tuple[str, ...], split: int) -> None:
    """The weight gradients dW_ih = da^T x, dW_hh = da^T h_{t-1} (lstm_matmul.cpp, weight_grad_gemm: from
    the time loop's panel copy of da with the row split, packed from da's rows otherwise), against the
    oracle, for both thread splits (two threads forced) and the automatic choice (at most 2 threads),
    both or one of the weights."""
    case = make_case(**cfg)
    m = K._mod()
    m.set_thread_split(split)
    try:
        got = grads_of(case, "y+cT", grad_of, False, torch.float32, fused=True, num_threads=-2 if split else 2)
    finally:
        m.set_thread_split(0)
    want = grads_of(case, "y+cT", grad_of, False, torch.float64, fused=False)
    assert_close(list(got), list(want), [f"d{k}" for k in grad_of], rtol=1e-5)


@needs_kernels
def test_autograd_node_refuses_and_ignores(kern: None) -> None:
    """A partial layer-norm set is refused; zoneout masks never join the graph, even when a mask
    requires grad (alone it leaves the outputs without a graph; with a weight the backward runs)."""
    case = make_case(T=4, B=2, I=3, H=8, zoneout=True, layer_norm=True)
    args = [case[k] for k in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")]
    ln = list(ln_of(case) or ())
    with pytest.raises(ValueError, match="ln must hold 6 tensors"):
        K.fused_layer(*args, ln=(*ln[:5], None))  # type: ignore[arg-type]
    mask = case["zoneout_c"].clone().requires_grad_(True)
    y, _, _, _ = K.fused_layer(*args, zoneout_c=mask, zoneout_h=case["zoneout_h"])
    assert not y.requires_grad
    w = case["w_hh"].clone().requires_grad_(True)
    args[4] = w
    y, _, _, _ = K.fused_layer(*args, zoneout_c=mask, zoneout_h=case["zoneout_h"])
    y.sum().backward()
    assert w.grad is not None and mask.grad is None


@needs_kernels
def test_autograd_node_graph(kern: None) -> None:
    """No graph without a gradient to compute; the trace is not differentiable; a second backward
    through a freed graph is refused as in torch."""
    case = make_case(T=4, B=2, I=3, H=8)
    w = case["w_hh"].clone().requires_grad_(True)
    args = [case["x"], case["h0"], case["c0"], case["w_ih"], w, case["b_ih"], case["b_hh"]]
    with torch.no_grad():
        y, _, _, _ = K.fused_layer(*args)
    assert y.grad_fn is None and not y.requires_grad
    y0, _, _, _ = K.fused_layer(*[a.detach() if a is not None else None for a in args])
    assert y0.grad_fn is None
    y, hT, cT, tr = K.fused_layer(*args, trace=True)
    assert tr is not None and not tr[0].requires_grad and not tr[1].requires_grad
    assert y.requires_grad and hT.requires_grad and cT.requires_grad
    loss = y.sum()
    loss.backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()
    with pytest.raises(RuntimeError):
        loss.backward()
    y, _, _, _ = K.fused_layer(*args)
    with pytest.raises(RuntimeError, match="second derivative"):
        torch.autograd.grad(y.sum(), [w], create_graph=True)


@needs_kernels
def test_trace_does_not_change_outputs(kern: None) -> None:
    case = make_case(T=6, B=3, I=4, H=10)
    args = [case[k] for k in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")]
    with torch.no_grad():
        y1, h1, c1, tr = K.fused_layer(*args, trace=True)
        y2, h2, c2, none = K.fused_layer(*args)
    assert none is None and tr is not None
    assert torch.equal(y1, y2) and torch.equal(h1, h2) and torch.equal(c1, c2)
    assert tr[0].shape == (6, 3, 40) and tr[1].shape == (6, 3, 10)


@needs_kernels
@pytest.mark.parametrize(
    "cfg",
    [
        dict(T=3, B=2, I=3, H=5),
        dict(T=4, B=3, I=2, H=5, P=3, lengths=True),
        dict(T=3, B=2, I=3, H=4, peephole=True, zoneout=True),
        dict(T=3, B=3, I=2, H=4, P=3, layer_norm=True, peephole=True, lengths=True),
    ],
    ids=["plain", "proj-len", "peep-zone", "ln-all"],
)
def test_gradcheck_float64(kern: None, cfg: dict[str, Any]) -> None:
    case = make_case(**cfg, dtype=torch.float64)
    names = [k for k in DIFF if case[k] is not None]
    leaves = [case[k].clone().requires_grad_(True) for k in names]

    def f(*ts: torch.Tensor) -> tuple[torch.Tensor, ...]:
        kw = dict(zip(names, ts))
        y, hT, cT, _ = K.fused_layer(
            kw["x"], kw["h0"], kw["c0"], kw["w_ih"], kw["w_hh"], kw.get("b_ih"), kw.get("b_hh"),
            w_hr=kw.get("w_hr"), peephole=kw.get("peephole"), zoneout_c=case["zoneout_c"],
            zoneout_h=case["zoneout_h"], lengths=case["lengths"],
            ln=tuple(kw[k] for k in LN_NAMES) if "g_ih" in kw else None,
        )  # fmt: skip
        return y, hT, cT

    assert torch.autograd.gradcheck(f, tuple(leaves), eps=1e-6, atol=1e-7, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# streaming step
# ------------------------------------------------------------------------------------------------
@needs_kernels
@pytest.mark.parametrize("proj", [0, 5])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("H,threads", [(13, None), (70, None), (70, -2)])  # 70: several unit blocks a thread
def test_stream_equals_whole_sequence(kern: None, proj: int, batch: int, H: int, threads: int | None) -> None:
    """(the threads read their weight blocks in alternating order from step to step)"""
    torch.manual_seed(2)
    T, I, layers = 6, 7, 2
    ref = torch.nn.LSTM(I, H, num_layers=layers, proj_size=proj)
    x = torch.randn(T, batch, I)
    with torch.no_grad():
        y_ref, (h_ref, c_ref) = ref(x)
    p = dict(ref.named_parameters())
    lay = []
    for k in range(layers):
        names = (("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih"), ("b_hh", "bias_hh"))
        d = {n: p[f"{t}_l{k}"] for n, t in names}
        if proj:
            d["w_hr"] = p[f"weight_hr_l{k}"]
        lay.append(d)
    s = K.FusedStream(lay, batch, proj=bool(proj), num_threads=threads)
    for _ in range(2):  # reset() really resets
        outs = [s.step(x[t, 0] if batch == 1 else x[t]) for t in range(T)]
        got = torch.stack([o.view(batch, -1) for o in outs])
        assert_close([got], [y_ref], ["stream y"], rtol=1e-5)
        h, c = s.state
        assert_close([h, c], [h_ref, c_ref], ["h", "c"], rtol=1e-5)
        s.reset()
    h, c = s.state
    assert float(h.abs().max()) == 0.0 and float(c.abs().max()) == 0.0
    s.set_state(h_ref, c_ref)
    assert_close(list(s.state), [h_ref, c_ref], ["h", "c"], rtol=0)


@needs_kernels
def test_stream_step_checks_its_input(kern: None) -> None:
    lstm = torch.nn.LSTM(4, 8)
    p = dict(lstm.named_parameters())
    s = K.FusedStream([{"w_ih": p["weight_ih_l0"], "w_hh": p["weight_hh_l0"]}], 2, proj=False)
    with pytest.raises(ValueError, match=r"expected x_t of shape \(2, 4\), got \(3, 4\)"):
        s.step(torch.randn(3, 4))


# ------------------------------------------------------------------------------------------------
# the no-compiler path
# ------------------------------------------------------------------------------------------------
def test_unavailable_without_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    saved = (_build._module, _build._error, _build._tried)
    try:
        _build._reset_for_tests()
        monkeypatch.setenv("LSTMKIT_NO_KERNELS", "1")
        assert K.available() is False
        reason = K.unavailable_reason()
        assert reason is not None and "LSTMKIT_NO_KERNELS" in reason
        with pytest.raises(RuntimeError, match="unavailable"):
            K.fused_layer(torch.zeros(1, 1, 1), torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(8, 1),
                          torch.zeros(8, 2), None, None)  # fmt: skip
    finally:
        _build._module, _build._error, _build._tried = saved


def test_import_builds_nothing(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env = {**os.environ, "LSTMKIT_KERNEL_CACHE": str(cache), "PYTHONPATH": SRC}
    code = "import lstmkit.kernels as K; print(K.unavailable_reason())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert not cache.exists() or not any(cache.iterdir())
    assert "building" not in out.stderr


@needs_kernels
def test_pooled_buffers_are_reused_only_when_free(kern: None) -> None:
    """The kernels keep their large buffers (>= 1 MB) between calls: an output that is still held is
    never handed out again (its values stay those of nn.LSTM on its own input), a steady loop reuses
    the same buffers, and release_buffers() frees what no tensor holds."""
    torch.manual_seed(3)
    T, B, I, H = 80, 16, 8, 256  # y: 1.3 MB, gates and the input projection: 5.2 MB each
    ref = torch.nn.LSTM(I, H)
    p = dict(ref.named_parameters())
    params = [p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"]]
    zeros = torch.zeros(B, H)
    x1, x2 = torch.randn(T, B, I), torch.randn(T, B, I)
    # what earlier tests left pooled and still referenced (after tests/test_export_compile.py's compiled
    # training one 400 KB buffer, the size of its input's gradient, stays referenced from outside Python)
    base = K.release_buffers()
    with torch.no_grad():
        y1 = K.fused_layer(x1, zeros, zeros, *params)[0]
        y2 = K.fused_layer(x2, zeros, zeros, *params)[0]
        want1, want2 = ref(x1)[0], ref(x2)[0]
    assert y1.data_ptr() != y2.data_ptr()
    assert_close([y1, y2], [want1, want2], ["y1 (held)", "y2"], rtol=1e-5)
    del y1, y2
    K.release_buffers()

    def step(x: torch.Tensor) -> list[torch.Tensor]:
        y = K.fused_layer(x, zeros, zeros, *params)[0]
        return list(torch.autograd.grad((y * y).sum(), params))

    g_ref = torch.autograd.grad((ref(x1)[0] ** 2).sum(), params)
    step(x1)
    pooled = K.buffer_bytes()
    # the gates (saved for backward) and the gate gradients are alive together; the input
    # projection's buffer is free again after the forward and may serve the gate gradients
    assert pooled - base >= 2 * T * B * 4 * H * 4
    for _ in range(3):
        got = step(x1)
    assert K.buffer_bytes() == pooled, "a steady loop should reuse its buffers, not add new ones"
    assert_close(got, list(g_ref), ["dw_ih", "dw_hh", "db_ih", "db_hh"], rtol=1e-4)
    assert K.release_buffers() == base
    assert K.buffer_bytes() == base


@needs_kernels
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (7, 5, 13), (50, 64, 17), (101, 33, 48), (300, 130, 520)])
@pytest.mark.parametrize("threads", [-1, -2])
def test_own_gemm_matches_torch_mm(kern: None, M: int, K: int, N: int, threads: int) -> None:
    """The kernels' GEMM (input projection, dx) against torch.mm in float64: every row-block height,
    partial panels, with and without a bias, one and two threads."""
    g = torch.Generator().manual_seed(M * 1000 + N)
    a, b, bias = torch.randn(M, K, generator=g), torch.randn(K, N, generator=g), torch.randn(N, generator=g)
    m = _build.load()
    want = a.double() @ b.double()
    got = m.gemm_rows(a, b, None, threads)
    assert_close([got, m.gemm_rows(a, b, bias, threads)], [want, want + bias.double()], ["C", "C + bias"], rtol=1e-5)


@needs_kernels
@pytest.mark.slow  # builds the AVX2 kernels (minutes) and reruns the oracle tests on them
@pytest.mark.skipif(
    "avx512=1" not in (K.build_info() or "") if K.available() else True,
    reason="the native build is the AVX2 one already",
)
def test_avx2_build_matches_the_oracle_on_an_avx512_cpu() -> None:
    """On a CPU with AVX-512 the native build runs 16 float lanes; the AVX2 code (8 lanes, other
    register tiles and thread-split rules, the int8 products without VNNI) is built with
    LSTMKIT_KERNEL_SIMD=avx2 and checked here by the oracle tests of the loops, the weight gradients,
    the own GEMM, the streaming steps and the int8 kernel."""
    env = {**os.environ, "LSTMKIT_KERNEL_SIMD": "avx2", "PYTHONPATH": SRC}
    info = subprocess.run([sys.executable, "-c", "import lstmkit.kernels as K; print(K.build_info())"], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert info.returncode == 0, info.stderr[-2000:]
    assert "avx512=0" in info.stdout and "vnni=0" in info.stdout and "lanes_f32=8" in info.stdout, info.stdout
    sel = "float32 or multi_block or thread_splits or weight_gradients or own_gemm or stream_equals or streamed_gates"
    sel += " or inference_without_trace"
    sel += " or int8_stream_matches or use_int8_forward"  # the int8 products with vpmaddubsw instead of vpdpbusd
    files = [__file__, str(Path(__file__).with_name("test_int8.py"))]
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *files, "-k", sel],
                         env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:]
    assert " passed" in out.stdout and " failed" not in out.stdout
