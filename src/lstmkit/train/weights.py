"""From the tensors of a model.safetensors file to the float weights of a model.

Loading a run folder needs three transforms, and only these: the int8/int4 codes and row scales of
a quantized run back to float matrices (:func:`dequantize`), the factors of a low-rank run back to
dense matrices (:func:`dense_from_factors`), and the checked copy of a state_dict into a model
(:func:`fit_weights`). :func:`dense_weights` picks the transform from config.json's ``"compress"``
object. A leaf: torch and :mod:`lstmkit.runtime.quant` (the one quantization shared with the NumPy
runtime) only, so that the run folder (train) and the compression methods (compress) both use it.

Errors are :class:`~lstmkit.errors.InputError` whose message starts with the file (``where``);
the run folder re-raises them as ``RunError``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import InputError
from ..runtime.quant import dequantize_rows, unpack_int4

__all__ = ["dense_from_factors", "dense_weights", "dequantize", "fit_weights"]


def dequantize(
    tensors: Mapping[str, Tensor], names: Sequence[str], bits: int, where: str, merged: Sequence[str] = ()
) -> dict[str, Tensor]:
    """Codes ``<name>.q`` and scales ``<name>.scale`` -> ``<name>`` (float32) for each of ``names``;
    each bias of ``merged`` (stored added into its ``bias_ih`` partner) comes back as zeros. int4 codes
    unpack to an even number of columns (the caller trims them to the model's)."""
    out = {k: v for k, v in tensors.items() if not k.endswith((".q", ".scale"))}
    for name in merged:
        partner = name.replace(".bias_hh_l", ".bias_ih_l")
        if partner not in out or name in out:
            raise InputError(f"{where}: merged bias {name!r} lacks its partner {partner!r}; the file is damaged")
        out[name] = torch.zeros_like(out[partner])
    for name in names:
        qk, sk = f"{name}.q", f"{name}.scale"
        if qk not in tensors or sk not in tensors:
            raise InputError(f"{where}: quantized weight {name!r} lacks its codes or scales; the file is damaged")
        q, s = tensors[qk].numpy(), tensors[sk].numpy()
        if s.dtype != np.float32 or s.ndim != 1 or q.ndim != 2 or q.shape[0] != s.shape[0]:
            raise InputError(f"{where}: quantized weight {name!r} has codes {q.shape} and scales {s.shape}")
        if bits == 8:
            if q.dtype != np.int8:
                raise InputError(f"{where}: codes of {name!r} must be int8, got {q.dtype}")
            codes = q
        else:
            if q.dtype != np.uint8:
                raise InputError(f"{where}: int4 codes of {name!r} must be packed uint8, got {q.dtype}")
            codes = unpack_int4(q, q.shape[1] * 2)
        out[name] = torch.from_numpy(dequantize_rows(codes, s))
    return out


def dense_from_factors(tensors: Mapping[str, Tensor], ranks: Any, where: str) -> dict[str, Tensor]:
    """Factors ``<name>.u`` (R, r) and ``<name>.v`` (r, C) -> ``<name>`` = u @ v, for each name of ``ranks``."""
    if not isinstance(ranks, dict):
        raise InputError(f"{where}: config.json field 'compress' of a low-rank run needs 'ranks'")
    out = {k: v for k, v in tensors.items() if not k.endswith((".u", ".v"))}
    for name, r in ranks.items():
        a, b = tensors.get(f"{name}.u"), tensors.get(f"{name}.v")
        if a is None or b is None:
            raise InputError(f"{where}: low-rank weight {name!r} lacks its factors; the file is damaged")
        if a.dim() != 2 or b.dim() != 2 or a.shape[1] != r or b.shape[0] != r:
            raise InputError(
                f"{where}: factors of {name!r} have shapes {tuple(a.shape)} and {tuple(b.shape)}, rank {r}"
            )
        out[name] = a.float() @ b.float()
    return out


def dense_weights(
    tensors: dict[str, Tensor], compress: Any, want: Mapping[str, Tensor], where: str, config_path: str
) -> dict[str, Tensor]:
    """The float state_dict stored in ``tensors`` given config.json's ``"compress"`` object (or None):
    quantized and low-rank runs are rebuilt, every other run is already a state_dict. ``want`` is the
    model's state_dict (to trim int4 columns); errors name ``where`` (the weights) or ``config_path``."""
    method = compress.get("method") if isinstance(compress, dict) else None
    if method == "quantize":
        assert isinstance(compress, dict)
        names, bits = compress.get("quantized"), compress.get("bits")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or bits not in (8, 4):
            raise InputError(f"{config_path}: field 'compress' needs 'quantized' names and bits 8 or 4")
        merged = compress.get("merged_biases", [])
        if not isinstance(merged, list) or not all(isinstance(n, str) and ".bias_hh_l" in n for n in merged):
            raise InputError(f"{config_path}: field 'compress.merged_biases' must list bias_hh names")
        dense = dequantize(tensors, names, int(bits), where, merged)
        for n in names:  # int4 unpacks to an even number of columns
            if n in want and dense[n].dim() == 2 and dense[n].shape[1] > want[n].shape[1]:
                dense[n] = dense[n][:, : want[n].shape[1]].contiguous()
        return dense
    if method == "lowrank":
        assert isinstance(compress, dict)
        return dense_from_factors(tensors, compress.get("ranks"), where)
    return tensors


def fit_weights(model: nn.Module, tensors: Mapping[str, Tensor], where: str) -> None:
    """Load ``tensors`` into ``model`` after checking names, shapes and dtypes (errors name ``where``)."""
    want = model.state_dict()
    missing = sorted(set(want) - set(tensors))
    extra = sorted(set(tensors) - set(want))
    if missing or extra:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
        raise InputError(
            f"{where}: the weights do not fit the model in config.json ({what}); the file is from another run"
        )
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(want[k].shape):
            raise InputError(
                f"{where}: weight {k!r} has shape {tuple(v.shape)} but the model needs {tuple(want[k].shape)}"
            )
        if not v.dtype.is_floating_point and want[k].dtype.is_floating_point:
            raise InputError(f"{where}: weight {k!r} has dtype {v.dtype}, expected floating point")
    model.load_state_dict({k: v.to(want[k].dtype) for k, v in tensors.items()})
