"""Each variant against the independent oracle of its published equations (tests/oracle.py),
gradients against the oracle's autograd, gradcheck in float64, and gate traces."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import backends
from oracle import oracle_lstm, oracle_step
from torch.nn.utils.rnn import pack_padded_sequence

import lstmkit

I, H, T, B = 3, 4, 6, 2
VARIANTS = [
    {},
    {"peephole": True},
    {"layer_norm": True},
    {"coupled": True},
    {"peephole": True, "layer_norm": True},
    {"peephole": True, "coupled": True, "layer_norm": True},
]


def _randomise(m: torch.nn.Module) -> None:
    """Move every parameter off its init (LN gains 1 and zero shifts would hide mistakes)."""
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)


def _params(m: torch.nn.Module) -> dict[str, torch.Tensor]:
    return dict(m.named_parameters())


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "+".join(v) or "plain")
@pytest.mark.parametrize("layers,bidir,proj", [(1, False, 0), (2, True, 0), (2, False, 2)])
@pytest.mark.parametrize("packed", [False, True])
def test_variant_matches_oracle(variant, layers, bidir, proj, packed):
    dtype = torch.float64
    m = lstmkit.LSTM(I, H, layers, bidirectional=bidir, proj_size=proj, dtype=dtype, backend="reference", **variant)
    _randomise(m)
    D = 2 if bidir else 1
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(layers * D, B, proj or H, dtype=dtype, requires_grad=True)
    c0 = torch.randn(layers * D, B, H, dtype=dtype, requires_grad=True)
    lengths = [T, 3] if packed else None
    opts = {k: variant.get(k, False) for k in ("peephole", "layer_norm", "coupled")}
    o_out, o_h, o_c, o_tr = oracle_lstm(
        x,
        _params(m),
        H=H,
        num_layers=layers,
        bidirectional=bidir,
        proj_size=proj,
        lengths=lengths,
        h0=h0,
        c0=c0,
        **opts,
    )
    if packed:
        pk = pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
        out, (h, c), tr = m(pk, (h0, c0), return_gates=True)
        out = torch.nn.utils.rnn.pad_packed_sequence(out)[0]
    else:
        out, (h, c), tr = m(x, (h0, c0), return_gates=True)
    for name, a, b in [("out", out, o_out), ("h_n", h, o_h), ("c_n", c, o_c)] + [
        (f"trace.{k}", getattr(tr, k), o_tr[k]) for k in "ifgoch"
    ]:
        assert a.shape == b.shape, name
        assert torch.allclose(a, b, atol=1e-10, rtol=0), f"{name}: {(a - b).abs().max().item()}"
    if opts["coupled"]:
        assert torch.allclose(tr.f, torch.where(tr.i != 0, 1 - tr.i, tr.i))
    # gradients of everything against the oracle's autograd
    w = torch.randn_like(o_out)
    g_mine = torch.autograd.grad((out * w).sum() + h.sum() + c.sum(), [x, h0, c0, *m.parameters()], allow_unused=True)
    g_or = torch.autograd.grad(
        (o_out * w).sum() + o_h.sum() + o_c.sum(), [x, h0, c0, *m.parameters()], allow_unused=True
    )
    for n, a, b in zip(["x", "h0", "c0", *(n for n, _ in m.named_parameters())], g_mine, g_or):
        a = torch.zeros(1, dtype=dtype) if a is None else a
        b = torch.zeros(1, dtype=dtype) if b is None else b
        assert torch.allclose(a, b, atol=1e-9, rtol=0), f"grad {n}: {(a - b).abs().max().item()}"


@pytest.mark.slow  # minutes with layer norm (finite differences through the reference path)
@pytest.mark.parametrize("variant", VARIANTS[1:] + [{"zoneout": 0.3}], ids=lambda v: "+".join(v))
def test_gradcheck_float64(variant):
    m = lstmkit.LSTM(2, 2, 2, bidirectional=True, dtype=torch.float64, backend="reference", **variant)
    _randomise(m)
    m.eval()  # zoneout's evaluation form (its expectation) is deterministic
    x = torch.randn(3, 2, 2, dtype=torch.float64, requires_grad=True)
    params = list(m.parameters())

    def f(x, *ps):
        for p, v in zip(params, ps):
            p.data = v
        out, (h, c) = torch.func.functional_call(m, dict(zip([n for n, _ in m.named_parameters()], ps)), (x,))
        return out, h, c

    assert torch.autograd.gradcheck(f, (x, *[p.detach().clone().requires_grad_(True) for p in params]))


def test_cell_variants_match_oracle():
    dtype = torch.float64
    for variant in VARIANTS:
        cell = lstmkit.LSTMCell(I, H, dtype=dtype, **variant)
        _randomise(cell)
        x = torch.randn(B, I, dtype=dtype)
        h, c = torch.randn(B, H, dtype=dtype), torch.randn(B, H, dtype=dtype)
        (h1, c1), tr = cell(x, (h, c), return_gates=True)
        opts = {k: variant.get(k, False) for k in ("peephole", "layer_norm", "coupled")}
        for b in range(B):
            oh, oc, gates = oracle_step(x[b], h[b], c[b], _params(cell), "", H, **opts)
            assert torch.allclose(h1[b], oh, atol=1e-12), variant
            assert torch.allclose(c1[b], oc, atol=1e-12), variant
            for k in "ifgo":
                assert torch.allclose(getattr(tr, k)[b], gates[k], atol=1e-12), (variant, k)


def test_zoneout_training_keeps_each_unit_or_updates_it():
    """In training every unit's new state is either its previous value (zoned out) or the ordinary
    update from the traced gates; the kept fraction is about z; evaluation uses the expectation."""
    z = 0.3
    m = lstmkit.LSTM(I, 32, zoneout=z, dtype=torch.float64)
    x = torch.randn(50, 8, I, dtype=torch.float64)
    m.train()
    _, _, tr = m(x, return_gates=True)
    c_prev = torch.cat([torch.zeros(1, 8, 32, dtype=torch.float64), tr.c[0, :-1]])
    update = tr.f[0] * c_prev + tr.i[0] * tr.g[0]
    kept = torch.isclose(tr.c[0], c_prev, atol=1e-12)
    updated = torch.isclose(tr.c[0], update, atol=1e-12)
    assert bool((kept | updated).all())
    frac = (kept & ~updated).double().mean().item()
    assert 0.25 < frac < 0.35, frac
    m.eval()
    _, _, tr = m(x, return_gates=True)
    c_prev = torch.cat([torch.zeros(1, 8, 32, dtype=torch.float64), tr.c[0, :-1]])
    update = tr.f[0] * c_prev + tr.i[0] * tr.g[0]
    expect = z * c_prev + (1 - z) * update
    assert torch.allclose(tr.c[0], expect, atol=1e-12)
    h_prev = torch.cat([torch.zeros(1, 8, 32, dtype=torch.float64), tr.h[0, :-1]])
    h_tilde = tr.o[0] * torch.tanh(update)  # h̃ uses the un-zoned c̃ (Krueger et al. 2016, eq. 4)
    assert torch.allclose(tr.h[0], z * h_prev + (1 - z) * h_tilde, atol=1e-12)


def test_weight_drop_uses_one_mask_for_all_steps():
    p = 0.5
    m = lstmkit.LSTM(I, H, weight_drop=p, dtype=torch.float64)
    _randomise(m)
    x = torch.randn(T, B, I, dtype=torch.float64)
    m.train()
    torch.manual_seed(123)
    out, _ = m(x)
    torch.manual_seed(123)
    dropped = torch.nn.functional.dropout(m.weight_hh_l0.detach(), p, training=True)
    params = {k: v.detach() for k, v in _params(m).items()}
    params["weight_hh_l0"] = dropped
    o_out, *_ = oracle_lstm(x, params, H=H)
    assert torch.allclose(out, o_out, atol=1e-12)
    assert (dropped == 0).any()
    m.eval()
    out_eval, _ = m(x)
    o_eval, *_ = oracle_lstm(x, {k: v.detach() for k, v in _params(m).items()}, H=H)
    assert torch.allclose(out_eval, o_eval, atol=1e-12)
    assert m.backend == "torch"  # in evaluation weight drop does nothing: the plain fast path runs


def test_forget_bias_and_coupled_init():
    torch.manual_seed(3)
    m = lstmkit.LSTM(I, H, 2)  # default: torch's initialisation, forget rows as random as the others
    torch.manual_seed(3)
    ref = torch.nn.LSTM(I, H, 2)
    assert m.forget_bias is None and torch.equal(m.bias_ih_l1, ref.bias_ih_l1)
    m = lstmkit.LSTM(I, H, 2, forget_bias=1.0)
    for k in range(2):
        b = getattr(m, f"bias_ih_l{k}") + getattr(m, f"bias_hh_l{k}")
        assert torch.allclose(b[H : 2 * H], torch.ones(H))
    m = lstmkit.LSTM(I, H, forget_bias=2.5)
    assert torch.allclose((m.bias_ih_l0 + m.bias_hh_l0)[H : 2 * H], torch.full((H,), 2.5))
    m = lstmkit.LSTM(I, H, coupled=True)
    assert m.weight_ih_l0[H : 2 * H].abs().sum() == 0
    m = lstmkit.LSTM(I, H, layer_norm=True)
    assert torch.equal(m.layer_norm_c_weight_l0, torch.ones(H))


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("layers,bidir,batch_first", list(itertools.product([1, 2], [False, True], [False, True])))
def test_traced_outputs_equal_untraced(layers, bidir, batch_first, backend):
    m = lstmkit.LSTM(I, H, layers, bidirectional=bidir, batch_first=batch_first)
    x = torch.randn(B, T, I) if batch_first else torch.randn(T, B, I)
    out1, (h1, c1) = m(x)
    m.requested_backend = backend if backend != "torch" else "auto"
    out2, (h2, c2), tr = m(x, return_gates=True)
    assert torch.allclose(out1, out2, atol=1e-6) and torch.allclose(h1, h2, atol=1e-6)
    assert torch.allclose(c1, c2, atol=1e-6)
    D = 2 if bidir else 1
    assert tr.i.shape == (layers * D, T, B, H)
    # h_n is the last step of the top layer's forward trace
    assert torch.allclose(tr.h[-D, -1], h2[-D], atol=1e-6)
    o = out2.transpose(0, 1) if batch_first else out2
    assert torch.allclose(tr.h[-D], o[..., :H], atol=1e-6)
