"""lstmkit.LSTM / LSTMCell as drop-ins for torch's beyond the forward call (issue 19, parts 1 and 4):
the same seed and arguments give torch's initial parameters and leave the random stream where
torch leaves it; a model holding lstmkit modules saves with ``torch.save`` and loads with
``torch.load(weights_only=True)`` with the public classes allowed; ``state_dict`` goes to and from
torch's modules both ways. The oracle is always torch's own class."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import lstmkit
from lstmkit import kernels

I, H, T, B = 4, 6, 5, 3


def _torch_and_mine(make_ref: Any, make_mine: Any, seed: int = 11) -> tuple[nn.Module, nn.Module, Any, Any]:
    """Build torch's module and lstmkit's under the same seed; also the next random draw after each."""
    torch.manual_seed(seed)
    ref = make_ref()
    after_ref = (torch.rand(7), torch.randn(3, dtype=torch.float64))
    torch.manual_seed(seed)
    mine = make_mine()
    after_mine = (torch.rand(7), torch.randn(3, dtype=torch.float64))
    return ref, mine, after_ref, after_mine


def _same_torch_parameters(ref: nn.Module, mine: nn.Module) -> None:
    want = ref.state_dict()
    got = mine.state_dict()
    for k, v in want.items():
        assert k in got, f"{k} missing"
        assert got[k].shape == v.shape and got[k].dtype == v.dtype, k
        assert torch.equal(got[k], v), f"{k} differs from torch's initialisation"


# ----------------------------------------------------------------------------- part 1: construction

LSTM_ARGS = [
    dict(num_layers=L, bidirectional=bd, proj_size=p, bias=b, batch_first=bf, dropout=dr)
    for L, bd, p, b, bf, dr in itertools.product([1, 3], [False, True], [0, 2], [True, False], [False], [0.0])
] + [dict(num_layers=2, batch_first=True, dropout=0.5)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kw", LSTM_ARGS, ids=str)
def test_lstm_same_seed_same_parameters_and_stream(kw: dict[str, Any], dtype: torch.dtype) -> None:
    ref, mine, after_ref, after_mine = _torch_and_mine(
        lambda: nn.LSTM(I, H, dtype=dtype, **kw), lambda: lstmkit.LSTM(I, H, dtype=dtype, **kw)
    )
    _same_torch_parameters(ref, mine)
    assert set(mine.state_dict()) == set(ref.state_dict())
    # the same order of parameters, so optimizers over .parameters() line up too
    assert [n for n, _ in mine.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert all(torch.equal(a, b) for a, b in zip(after_ref, after_mine)), "the random stream moved differently"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_cell_same_seed_same_parameters_and_stream(bias: bool, dtype: torch.dtype) -> None:
    ref, mine, after_ref, after_mine = _torch_and_mine(
        lambda: nn.LSTMCell(I, H, bias, dtype=dtype), lambda: lstmkit.LSTMCell(I, H, bias, dtype=dtype)
    )
    _same_torch_parameters(ref, mine)
    assert [n for n, _ in mine.named_parameters()] == [n for n, _ in ref.named_parameters()]
    assert all(torch.equal(a, b) for a, b in zip(after_ref, after_mine))


@pytest.mark.parametrize(
    "variant", [{"layer_norm": True}, {"zoneout": 0.1}, {"zoneout": (0.1, 0.2)}, {"weight_drop": 0.3}]
)
@pytest.mark.parametrize("cls", ["LSTM", "LSTMCell"])
def test_variants_that_draw_nothing_more_keep_torch_parameters_and_stream(variant: dict[str, Any], cls: str) -> None:
    """Layer norm's gains and shifts are set, not drawn; zoneout and weight drop have no parameters."""
    args = (I, H, 2) if cls == "LSTM" else (I, H)
    ref, mine, after_ref, after_mine = _torch_and_mine(
        lambda: getattr(nn, cls)(*args), lambda: getattr(lstmkit, cls)(*args, **variant)
    )
    _same_torch_parameters(ref, mine)
    assert all(torch.equal(a, b) for a, b in zip(after_ref, after_mine))


def test_peephole_and_coupled_keep_torch_named_parameters() -> None:
    """Peepholes are drawn after torch's parameters, so those still equal torch's; coupled gates zero
    the forget rows and leave the others as torch drew them."""
    ref, mine, _, _ = _torch_and_mine(lambda: nn.LSTM(I, H, 2), lambda: lstmkit.LSTM(I, H, 2, peephole=True))
    _same_torch_parameters(ref, mine)
    assert mine.weight_peephole_l1.abs().max() > 0
    ref, mine, _, _ = _torch_and_mine(lambda: nn.LSTM(I, H, 2), lambda: lstmkit.LSTM(I, H, 2, coupled=True))
    for k, v in ref.state_dict().items():
        got = mine.state_dict()[k]
        assert torch.equal(got[H : 2 * H], torch.zeros_like(v[H : 2 * H])), k
        assert torch.equal(torch.cat([got[:H], got[2 * H :]]), torch.cat([v[:H], v[2 * H :]])), k


def test_forget_bias_is_opt_in() -> None:
    ref, mine, _, _ = _torch_and_mine(lambda: nn.LSTM(I, H, 2), lambda: lstmkit.LSTM(I, H, 2, forget_bias=2.0))
    assert mine.forget_bias == 2.0 and lstmkit.LSTM(I, H).forget_bias is None
    for k in range(2):
        assert torch.equal(getattr(mine, f"bias_ih_l{k}")[H : 2 * H], torch.full((H,), 2.0))
        assert torch.equal(getattr(mine, f"bias_hh_l{k}")[H : 2 * H], torch.zeros(H))
        # everything else is torch's draw
        for name in ("weight_ih", "weight_hh"):
            assert torch.equal(getattr(mine, f"{name}_l{k}"), getattr(ref, f"{name}_l{k}"))
        assert torch.equal(getattr(mine, f"bias_ih_l{k}")[:H], getattr(ref, f"bias_ih_l{k}")[:H])


def test_lstmkit_models_keep_forget_bias_one() -> None:
    from lstmkit.models import ModelConfig, SequenceModel

    m = SequenceModel(ModelConfig("tokens", 10, 10, "class_steps", hidden_size=H, num_layers=2))
    assert isinstance(m.rnn, lstmkit.LSTM) and m.rnn.forget_bias == 1.0
    assert torch.equal(m.rnn.bias_ih_l1[H : 2 * H] + m.rnn.bias_hh_l1[H : 2 * H], torch.ones(H))
    m = SequenceModel(ModelConfig("tokens", 10, 10, "class_steps", hidden_size=H, variants={"coupled": True}))
    assert isinstance(m.rnn, lstmkit.LSTM) and m.rnn.forget_bias == 0.0
    m = SequenceModel(ModelConfig("tokens", 10, 10, "class_steps", hidden_size=H, variants={"forget_bias": 3.0}))
    assert isinstance(m.rnn, lstmkit.LSTM) and m.rnn.forget_bias == 3.0


# ----------------------------------------------------------------------------- part 4: saving and loading

VARIANTS: list[dict[str, Any]] = [
    {},
    {"layer_norm": True},
    {"peephole": True},
    {"coupled": True},
    {"zoneout": 0.2},
    {"zoneout": (0.1, 0.3)},
    {"weight_drop": 0.25},
    {"forget_bias": 1.0},
    {"peephole": True, "layer_norm": True, "zoneout": 0.1, "weight_drop": 0.1},
]
SHAPES: list[dict[str, Any]] = [
    {},
    {"num_layers": 2, "dropout": 0.3},
    {"bidirectional": True},
    {"proj_size": 3, "num_layers": 2, "bidirectional": True},
    {"batch_first": True, "bias": False},
]


class Net(nn.Module):
    """A user's model around the LSTM and the cell, with torch's own layers next to them."""

    def __init__(self, shape: dict[str, Any], variant: dict[str, Any]) -> None:
        super().__init__()
        if not shape.get("bias", True):
            variant = {k: v for k, v in variant.items() if k != "forget_bias"}
        self.rnn = lstmkit.LSTM(I, H, **shape, **variant)
        self.cell = lstmkit.LSTMCell(I, H, shape.get("bias", True), **variant)
        out = (shape.get("proj_size") or H) * (2 if shape.get("bidirectional") else 1)
        self.head = nn.Linear(out + H, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)
        h, _ = self.cell(x[0] if not self.rnn.batch_first else x[:, 0])
        last = y[-1] if not self.rnn.batch_first else y[:, -1]
        return self.head(torch.cat([last, h], dim=-1))


def _save_load(obj: Any, path: Path, allowed: list[Any]) -> Any:
    torch.save(obj, path)
    with torch.serialization.safe_globals(allowed):
        return torch.load(path, weights_only=True)


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_save_and_load_with_weights_only(shape: dict[str, Any], variant: dict[str, Any], tmp_path: Path) -> None:
    net = Net(shape, variant)
    x = torch.randn(B, T, I) if shape.get("batch_first") else torch.randn(T, B, I)
    net.train()
    net(x).sum().backward()  # a training step first: whatever a forward call leaves on the module is saved too
    net.zero_grad()
    path = tmp_path / "net.pt"
    torch.save(net, path)
    # the only globals outside torch's own allow-list are the user's class and the public lstmkit classes
    unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    lstmkit_globals = {g for g in unsafe if g.startswith("lstmkit")}
    assert lstmkit_globals <= {"lstmkit.core.lstm.LSTM", "lstmkit.core.cell.LSTMCell"}, lstmkit_globals
    with torch.serialization.safe_globals([Net, nn.Linear, *lstmkit.SAFE_GLOBALS]):
        back = torch.load(path, weights_only=True)
    assert isinstance(back.rnn, lstmkit.LSTM) and isinstance(back.cell, lstmkit.LSTMCell)
    for name in ("forget_bias", "peephole", "layer_norm", "coupled", "zoneout", "weight_drop"):
        assert getattr(back.rnn, name) == getattr(net.rnn, name), name
    assert back.rnn.variants == net.rnn.variants and back.cell.variants == net.cell.variants
    assert back.training
    sd_net, sd_back = net.state_dict(), back.state_dict()
    assert set(sd_back) == set(sd_net) and all(torch.equal(sd_back[k], sd_net[k]) for k in sd_net)
    net.eval()
    back.eval()
    with torch.no_grad():
        assert torch.equal(back(x), net(x))
    # and it trains on: the loaded module's parameters are leaves with gradients
    back.train()
    back(x).sum().backward()
    assert back.rnn.weight_hh_l0.grad is not None and back.cell.weight_hh.grad is not None


def test_loaded_plain_lstm_is_torch_lstm(tmp_path: Path) -> None:
    """Independent oracle for the round trip: torch.nn.LSTM with the loaded state dict."""
    m = lstmkit.LSTM(I, H, 2, bidirectional=True)
    back = _save_load(m, tmp_path / "m.pt", lstmkit.SAFE_GLOBALS)
    ref = nn.LSTM(I, H, 2, bidirectional=True)
    ref.load_state_dict(back.state_dict())
    x = torch.randn(T, B, I)
    with torch.no_grad():
        (y, (h, c)), (yr, (hr, cr)) = back(x), ref(x)
    assert torch.allclose(y, yr, atol=1e-6) and torch.allclose(h, hr, atol=1e-6) and torch.allclose(c, cr, atol=1e-6)


def test_without_the_lstmkit_classes_the_load_is_refused(tmp_path: Path) -> None:
    m = lstmkit.LSTM(I, H)
    torch.save(m, tmp_path / "m.pt")
    with pytest.raises(Exception, match="lstmkit.core.lstm.LSTM"):
        torch.load(tmp_path / "m.pt", weights_only=True)


@pytest.mark.skipif(not kernels.available(), reason="the int8 kernel needs the compiled kernels")
def test_int8_model_saves_and_loads(tmp_path: Path) -> None:
    m = lstmkit.LSTM(I, H).eval().use_int8()
    back = _save_load(m, tmp_path / "m.pt", lstmkit.SAFE_GLOBALS)
    assert back.int8_enabled
    x = torch.randn(T, B, I)
    with torch.no_grad():
        y, _ = back(x)
        y_want, _ = m(x)
    assert back.backend == "int8" and torch.equal(y, y_want)


@pytest.mark.parametrize("variant", VARIANTS, ids=str)
def test_deepcopy_keeps_the_variants(variant: dict[str, Any]) -> None:
    m = lstmkit.LSTM(I, H, 2, **variant).eval()
    c = copy.deepcopy(m)
    assert c.variants == m.variants
    x = torch.randn(T, B, I)
    with torch.no_grad():
        assert torch.equal(c(x)[0], m(x)[0])


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_state_dict_to_and_from_torch_lstm(shape: dict[str, Any]) -> None:
    ref = nn.LSTM(I, H, **shape)
    mine = lstmkit.LSTM(I, H, **shape)
    mine.load_state_dict(ref.state_dict())  # torch -> lstmkit, strict
    ref2 = nn.LSTM(I, H, **shape)
    ref2.load_state_dict(mine.state_dict())  # lstmkit -> torch, strict
    x = torch.randn(B, T, I) if shape.get("batch_first") else torch.randn(T, B, I)
    ref.eval(), mine.eval(), ref2.eval()
    with torch.no_grad():
        y, (h, c) = ref(x)
        for m in (mine, ref2):
            y2, (h2, c2) = m(x)
            assert torch.allclose(y2, y, atol=1e-6) and torch.allclose(h2, h, atol=1e-6)
            assert torch.allclose(c2, c, atol=1e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_to_and_from_torch_cell(bias: bool) -> None:
    ref = nn.LSTMCell(I, H, bias)
    mine = lstmkit.LSTMCell(I, H, bias)
    mine.load_state_dict(ref.state_dict())
    ref2 = nn.LSTMCell(I, H, bias)
    ref2.load_state_dict(mine.state_dict())
    x = torch.randn(B, I)
    with torch.no_grad():
        h, c = ref(x)
        for m in (mine, ref2):
            h2, c2 = m(x)
            assert torch.allclose(h2, h, atol=1e-6) and torch.allclose(c2, c, atol=1e-6)


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v], ids=str)
def test_variant_state_dict_shares_torch_names(variant: dict[str, Any]) -> None:
    """A variant LSTM takes a torch.nn.LSTM's state dict (its own extra parameters keep their values)
    and gives torch the parameters torch has; the variant's own are the only extra keys."""
    ref = nn.LSTM(I, H, 2)
    mine = lstmkit.LSTM(I, H, 2, **variant)
    missing, unexpected = mine.load_state_dict(ref.state_dict(), strict=False)
    assert not unexpected
    assert all(k.startswith(("weight_peephole", "layer_norm_")) for k in missing), missing
    for k, v in ref.state_dict().items():
        assert torch.equal(mine.state_dict()[k], v)
    back = nn.LSTM(I, H, 2)
    sd = mine.state_dict()
    back.load_state_dict({k: sd[k] for k in ref.state_dict()})
    assert set(sd) - set(ref.state_dict()) == set(missing)


def test_state_dict_inside_a_model_swaps_both_ways() -> None:
    """A checkpoint of a user's model built with nn.LSTM loads into the same model with lstmkit's."""

    class Tagger(nn.Module):
        def __init__(self, rnn_cls: Any) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, I)
            self.rnn = rnn_cls(I, H, 2, batch_first=True)
            self.out = nn.Linear(H, 3)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.out(self.rnn(self.emb(t))[0])

    a, b = Tagger(nn.LSTM).eval(), Tagger(lstmkit.LSTM).eval()
    b.load_state_dict(a.state_dict())
    t = torch.randint(0, 10, (B, T))
    with torch.no_grad():
        assert torch.allclose(a(t), b(t), atol=1e-6)
    c = Tagger(nn.LSTM).eval()
    c.load_state_dict(b.state_dict())
    with torch.no_grad():
        assert torch.allclose(c(t), b(t), atol=1e-6)
