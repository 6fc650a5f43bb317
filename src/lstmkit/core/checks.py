"""The checks of what a user hands LSTM and LSTMCell: sizes, rates and the input tensors.

Bad values raise :class:`~lstmkit.errors.InputError` (a ``ValueError``, as torch raises) and
wrong types ``TypeError``; each message names the module, what was expected and what was given.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..errors import InputError


def check_int(owner: str, name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{owner}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise InputError(f"{owner}: {name} must be >= {minimum}, got {value}")
    return value


def check_rate(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}: {name} must be a number in [0, 1), got {value!r}")
    if not 0.0 <= float(value) < 1.0:
        raise InputError(f"{owner}: {name} must be in [0, 1), got {value}")
    return float(value)


def check_flag(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be True or False, got {value!r}")
    return value


def check_features(owner: str, x: Tensor, size: int) -> None:
    if x.shape[-1] != size:
        raise InputError(
            f"{owner}: expected input with {size} features (input_size) in the last dimension, got {x.shape[-1]}"
        )


def check_dtype_device(owner: str, name: str, t: Tensor, dtype: torch.dtype, device: torch.device) -> None:
    if t.dtype != dtype:
        raise TypeError(
            f"{owner}: {name} has dtype {t.dtype} but the parameters are {dtype}; convert one of them "
            f"(e.g. {name}.to({dtype}) or module.to({t.dtype}))"
        )
    if t.device != device:
        raise InputError(f"{owner}: {name} is on {t.device} but the parameters are on {device}; move one of them")


def check_state_pair(owner: str, hx: Any, names: str) -> tuple[Tensor, Tensor]:
    """hx must be a tuple (h, c) of two tensors (``names`` says how the message calls them)."""
    if not (isinstance(hx, (tuple, list)) and len(hx) == 2 and all(isinstance(t, Tensor) for t in hx)):
        raise TypeError(f"{owner}: hx must be a tuple {names} of two tensors, got {type(hx).__name__}")
    return hx[0], hx[1]


def initial_state(
    owner: str,
    hx: Any,
    shape_h: tuple[int, int, int],
    shape_c: tuple[int, int, int],
    unbatched: bool,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """(h_0, c_0) of shapes (L·D, B, P or H) and (L·D, B, H): zeros for ``hx=None``, else the checked
    pair (given without the B dimension for unbatched input, returned with it)."""
    if hx is None:
        return torch.zeros(shape_h, dtype=dtype, device=device), torch.zeros(shape_c, dtype=dtype, device=device)
    h0, c0 = check_state_pair(owner, hx, "(h_0, c_0)")
    for name, t, shape in (("h_0", h0, shape_h), ("c_0", c0, shape_c)):
        want = (shape[0], shape[2]) if unbatched else shape
        if tuple(t.shape) != want:
            raise InputError(f"{owner}: expected {name} of shape {want}, got {tuple(t.shape)}")
        check_dtype_device(owner, name, t, dtype, device)
    if unbatched:
        h0, c0 = h0.unsqueeze(1), c0.unsqueeze(1)
    return h0, c0
