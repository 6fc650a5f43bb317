"""Every documented bad input raises ValueError/TypeError naming the class, what was expected and
what was given; nothing is silently broadcast."""

from __future__ import annotations

import pytest
import torch

import lstmkit
from lstmkit.errors import InputError


@pytest.mark.parametrize(
    "kwargs,exc,words",
    [
        ({"hidden_size": 0}, ValueError, "hidden_size must be >= 1, got 0"),
        ({"input_size": 0}, ValueError, "input_size must be >= 1"),
        ({"hidden_size": 2.5}, TypeError, "hidden_size must be an int"),
        ({"num_layers": 0}, ValueError, "num_layers must be >= 1"),
        ({"proj_size": 8}, ValueError, "proj_size must be smaller than hidden_size"),
        ({"proj_size": -1}, ValueError, "proj_size must be >= 0"),
        ({"dropout": 1.0}, ValueError, "dropout must be in [0, 1), got 1.0"),
        ({"dropout": -0.1}, ValueError, "dropout must be in [0, 1)"),
        ({"zoneout": 1.0}, ValueError, "zoneout must be in [0, 1)"),
        ({"zoneout": (0.1, 1.5)}, ValueError, "zoneout (hidden rate) must be in [0, 1)"),
        ({"weight_drop": 2}, ValueError, "weight_drop must be in [0, 1)"),
        ({"backend": "cuda"}, ValueError, "backend must be one of"),
        ({"backend": "torch", "peephole": True}, ValueError, "backend='torch' runs only the plain cell"),
        ({"bias": False, "forget_bias": 1.0}, ValueError, "forget_bias=1.0 needs bias=True"),
        ({"coupled": True, "forget_bias": 2.0}, ValueError, "no effect with coupled=True"),
        ({"peephole": 1}, TypeError, "peephole must be True or False"),
    ],
)
def test_bad_configuration(kwargs, exc, words):
    args = {"input_size": 4, "hidden_size": 8, **kwargs}
    with pytest.raises(exc) as e:
        lstmkit.LSTM(**args)
    assert "LSTM:" in str(e.value) and words in str(e.value)


def test_bias_false_default_forget_bias_is_fine():
    m = lstmkit.LSTM(4, 8, bias=False)
    assert m.forget_bias is None  # torch's initialisation; there is no bias to set


@pytest.mark.parametrize(
    "make_x,words",
    [
        (lambda: torch.randn(2, 3, 4, 5), "expected input of 3 dimensions"),
        (lambda: torch.randn(5), "expected input of 3 dimensions"),
        (lambda: torch.randn(5, 3, 7), "expected input with 4 features"),
        (lambda: torch.randn(0, 3, 4), "the input has 0 steps"),
        (lambda: torch.randn(0, 4), "the input has 0 steps"),
    ],
)
def test_bad_input_shape(make_x, words):
    with pytest.raises(ValueError, match="LSTM: " + words):
        lstmkit.LSTM(4, 8)(make_x())


def test_bad_dtype_and_device():
    m = lstmkit.LSTM(4, 8)
    with pytest.raises(TypeError, match=r"LSTM: input has dtype torch.float64 but the parameters are torch.float32"):
        m(torch.randn(5, 3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="LSTM: input is on meta but the parameters are on cpu"):
        m(torch.randn(5, 3, 4, device="meta"))


@pytest.mark.parametrize(
    "h_shape,c_shape,words",
    [
        ((1, 3, 7), (1, 3, 8), r"expected h_0 of shape \(1, 3, 8\), got \(1, 3, 7\)"),
        ((1, 3, 8), (2, 3, 8), r"expected c_0 of shape \(1, 3, 8\), got \(2, 3, 8\)"),
        ((1, 1, 8), (1, 1, 8), r"expected h_0 of shape \(1, 3, 8\), got \(1, 1, 8\)"),  # no broadcasting
        ((3, 8), (3, 8), r"expected h_0 of shape \(1, 3, 8\)"),
    ],
)
def test_bad_state_shape(h_shape, c_shape, words):
    with pytest.raises(ValueError, match="LSTM: " + words):
        lstmkit.LSTM(4, 8)(torch.randn(5, 3, 4), (torch.zeros(h_shape), torch.zeros(c_shape)))


def test_bad_state_type_and_dtype():
    m = lstmkit.LSTM(4, 8)
    x = torch.randn(5, 3, 4)
    with pytest.raises(TypeError, match="hx must be a tuple"):
        m(x, torch.zeros(1, 3, 8))
    with pytest.raises(TypeError, match="h_0 has dtype torch.float64"):
        m(x, (torch.zeros(1, 3, 8, dtype=torch.float64), torch.zeros(1, 3, 8)))


def test_variant_refusals():
    x = torch.randn(5, 3, 4)
    with pytest.raises(ValueError, match="backend='torch' cannot return gate traces"):
        lstmkit.LSTM(4, 8, backend="torch")(x, return_gates=True)
    with pytest.raises(ValueError, match="torch.nn.LSTM cannot express peephole"):
        lstmkit.LSTM(4, 8, peephole=True).to_torch()
    with pytest.raises(ValueError, match="bidirectional LSTM needs the whole sequence"):
        lstmkit.LSTM(4, 8, bidirectional=True).stream()
    with pytest.raises(TypeError, match="expected a torch.nn.LSTM"):
        lstmkit.LSTM.from_torch(torch.nn.GRU(4, 8))  # type: ignore[arg-type]


def test_cell_errors():
    cell = lstmkit.LSTMCell(4, 8)
    with pytest.raises(ValueError, match=r"LSTMCell: expected input of 2 dimensions"):
        cell(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"LSTMCell: expected h of shape \(3, 8\), got \(1, 8\)"):
        cell(torch.randn(3, 4), (torch.zeros(1, 8), torch.zeros(3, 8)))
    with pytest.raises(ValueError, match="LSTMCell: expected input with 4 features"):
        cell(torch.randn(3, 5))


def test_stream_errors():
    s = lstmkit.LSTM(4, 8).stream(batch_size=2)
    with pytest.raises(ValueError, match=r"expected x_t of shape \(2, 4\)"):
        s.step(torch.randn(3, 4))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        lstmkit.LSTM(4, 8).stream(0)


def test_fused_refuses_what_the_kernels_do_not_compute():
    from lstmkit import kernels

    lstm = lstmkit.LSTM(4, 8, backend="fused", dtype=torch.float16)
    with pytest.raises(InputError, match="backend='fused' cannot run here"):
        lstm(torch.randn(3, 2, 4, dtype=torch.float16))
    if kernels.available():  # float32 and float64 on CPU: every configuration
        for dtype in (torch.float32, torch.float64):
            lstmkit.LSTM(4, 8, backend="fused", peephole=True, dtype=dtype)(torch.randn(3, 2, 4, dtype=dtype))
