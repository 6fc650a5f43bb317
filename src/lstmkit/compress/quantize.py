"""Post-training weight quantization: int8 (or int4) codes with one float32 scale per output row.

The weight matrices (W_ih, W_hh, W_hr of every layer, the embedding, the head) become codes
``q = clip(round(W / s), −q_max, q_max)`` with ``s_r = max|W_r| / q_max`` per output row
(:mod:`lstmkit.runtime.quant`, the one implementation shared with the NumPy runtime); biases,
peepholes, layer-norm gains, the activations and the cell stay float32, which is what keeps an
LSTM's quality (Distiller's word-LM went from perplexity 86.8 to 104.2 with int8 internals and back
to 86.8 with the element-wise operations kept in higher precision).

On disk (model.safetensors of the new run): ``<name>.q`` int8 (int4: uint8, two codes per byte)
and ``<name>.scale`` float32 for each quantized matrix, the other tensors as before. In torch the
run loads as the float model with weights q·s exactly (what ``evaluate`` runs); the NumPy runtime
keeps the codes (``lstmkit export RUN --format runtime``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..models import SequenceModel
from ..runtime.quant import BITS, dequantize_rows, pack_int4, quantize_rows, unpack_int4
from .common import as_run, check_out, compress_info, write_run


def is_quantizable(name: str, t: Tensor) -> bool:
    """The weight matrices: 2-D float tensors that are not peephole or layer-norm parameters."""
    return t.dim() == 2 and t.is_floating_point() and "peephole" not in name and "layer_norm" not in name


def quantize_state(state: dict[str, Tensor], bits: int = 8) -> tuple[dict[str, Tensor], dict[str, Tensor], list[str]]:
    """state_dict -> (tensors to save, the dequantized state_dict, names quantized)."""
    if bits not in BITS:
        raise ValueError(f"quantize: bits must be 8 or 4, got {bits!r}")
    saved: dict[str, Tensor] = {}
    deq: dict[str, Tensor] = {}
    names = []
    for name, t in state.items():
        if is_quantizable(name, t):
            q, s = quantize_rows(t.detach().cpu().float().numpy(), bits)
            saved[f"{name}.q"] = torch.from_numpy(q if bits == 8 else pack_int4(q))
            saved[f"{name}.scale"] = torch.from_numpy(s)
            deq[name] = torch.from_numpy(dequantize_rows(q, s)).to(t.dtype)
            names.append(name)
        else:
            saved[name] = t.detach().cpu()
            deq[name] = t
    return saved, deq, names


def dequantize_saved(tensors: dict[str, Tensor], names: list[str], bits: int, where: str) -> dict[str, Tensor]:
    """The inverse of :func:`quantize_state` on the saved tensors (the loader's half)."""
    out = {k: v for k, v in tensors.items() if not k.endswith((".q", ".scale"))}
    for name in names:
        qk, sk = f"{name}.q", f"{name}.scale"
        if qk not in tensors or sk not in tensors:
            raise ValueError(f"{where}: quantized weight {name!r} lacks its codes or scales; the file is damaged")
        q, s = tensors[qk].numpy(), tensors[sk].numpy()
        if s.dtype != np.float32 or s.ndim != 1 or q.ndim != 2 or q.shape[0] != s.shape[0]:
            raise ValueError(f"{where}: quantized weight {name!r} has codes {q.shape} and scales {s.shape}")
        if bits == 8:
            if q.dtype != np.int8:
                raise ValueError(f"{where}: codes of {name!r} must be int8, got {q.dtype}")
            codes = q
        else:
            if q.dtype != np.uint8:
                raise ValueError(f"{where}: int4 codes of {name!r} must be packed uint8, got {q.dtype}")
            codes = unpack_int4(q, q.shape[1] * 2)  # the loader trims to the model's columns
        out[name] = torch.from_numpy(dequantize_rows(codes, s))
    return out


def quantize_run(run: Any, out: str | Path, *, bits: int = 8, evaluate: bool = True) -> dict[str, Any]:
    """Quantize the weights of ``run`` into the new run folder ``out``; returns its result.json."""
    if bits not in BITS:
        raise ValueError(f"quantize: --bits must be 8 or 4, got {bits!r}")
    src = as_run(run)
    prev = compress_info(src)
    if prev is not None and prev.get("method") == "quantize":
        raise ValueError(
            f"quantize: {src.path} is already quantized (int{prev.get('bits')}); quantize its source run "
            f"{prev.get('source')} instead"
        )
    out = check_out(src, out)
    state = src.model.state_dict()
    saved, deq, names = quantize_state(state, bits)
    model = SequenceModel(src.model_config)
    model.load_state_dict(deq)
    model.eval()
    float_bytes = sum(t.numel() * 4 for t in state.values())
    q_bytes = sum(t.numel() * t.element_size() for t in saved.values())
    return write_run(
        src,
        out,
        src.model_config,
        saved,
        {"method": "quantize", "bits": bits, "quantized": names},
        model,
        evaluate,
        {"weight_bytes": q_bytes, "source_weight_bytes": float_bytes},
    )


__all__ = ["dequantize_saved", "is_quantizable", "quantize_run", "quantize_state"]
