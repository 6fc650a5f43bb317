"""Post-training weight quantization: int8 (or int4) codes with one float32 scale per output row.

The weight matrices (W_ih, W_hh, W_hr of every layer, the embedding, the head) become codes
``q = clip(round(W / s), −q_max, q_max)`` with ``s_r = max|W_r| / q_max`` per output row
(:mod:`lstmkit.runtime.quant`, the one implementation shared with the NumPy runtime); biases,
peepholes, layer-norm gains, the activations and the cell stay float32, which is what keeps an
LSTM's quality (Distiller's word-LM went from perplexity 86.8 to 104.2 with int8 internals and back
to 86.8 with the element-wise operations kept in higher precision).

With int8, the LSTM can also run the int8 kernel (:meth:`lstmkit.LSTM.use_int8`), which codes the
inputs of its two matrix products per step to int8 as well (the gates and the cell stay float32):
faster, not only smaller. ``activations="auto"`` (the default) calibrates: it evaluates the
validation split with float and with int8 matrix inputs and keeps the int8 kernel when its main
metric is within ``INT8_TOLERANCE`` (relative) of the float-input model's; the run's config.json
records the choice (``int8_kernel``) and both numbers, and the run loads with the kernel on.

On disk (model.safetensors of the new run): ``<name>.q`` int8 (int4: uint8, two codes per byte)
and ``<name>.scale`` float32 for each quantized matrix, the other tensors as before. In torch the
run loads as the float model with weights q·s exactly (what ``evaluate`` runs); the NumPy runtime
keeps the codes (``lstmkit export RUN --format runtime``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..core import LSTM
from ..errors import InputError
from ..models import SequenceModel
from ..runtime.quant import BITS, dequantize_rows, pack_int4, quantize_rows
from ..train.evaluate import evaluate_model
from .common import as_run, check_out, compress_info, write_run


def is_quantizable(name: str, t: Tensor) -> bool:
    """The weight matrices: 2-D float tensors that are not peephole or layer-norm parameters."""
    return t.dim() == 2 and t.is_floating_point() and "peephole" not in name and "layer_norm" not in name


def quantize_state(state: dict[str, Tensor], bits: int = 8) -> tuple[dict[str, Tensor], dict[str, Tensor], list[str]]:
    """state_dict -> (tensors to save, the dequantized state_dict, names quantized)."""
    if bits not in BITS:
        raise InputError(f"quantize: bits must be 8 or 4, got {bits!r}")
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


def merge_lstm_biases(saved: dict[str, Tensor], deq: dict[str, Tensor]) -> list[str]:
    """An LSTM adds its two biases (a = x W_ih^T + b_ih + h W_hh^T + b_hh, and so do all its variants),
    so a quantized run stores b_ih + b_hh once, as bias_ih, and drops bias_hh (the loader restores it
    as zeros, :func:`lstmkit.train.weights.dequantize`): in a small model the two float32 bias vectors
    are a real part of the int8 file. Both dicts are changed in place; returns the dropped names."""
    dropped = []
    for name in [n for n in saved if ".bias_ih_l" in n]:
        other = name.replace(".bias_ih_l", ".bias_hh_l")
        if other in saved and saved[other].shape == saved[name].shape:
            saved[name] = (saved[name].float() + saved[other].float()).to(saved[name].dtype)
            del saved[other]
            deq[name] = saved[name].clone()
            deq[other] = torch.zeros_like(saved[name])
            dropped.append(other)
    return dropped


INT8_TOLERANCE = 0.005  # relative change of the validation metric that int8 matrix inputs may cost


def _int8_calibration(model: SequenceModel, task: Any, activations: str, bits: int) -> dict[str, Any]:
    """Decide whether the run uses the int8 kernel; the numbers behind the decision."""
    if activations == "float":
        return {"int8_kernel": False, "why": "--activations float"}
    rnn = model.rnn
    why = None
    if bits != 8:
        why = "the int8 kernel needs --bits 8"
    elif not isinstance(rnn, LSTM):
        why = f"the int8 kernel runs lstmkit's LSTM, this run's arch is {model.cfg.arch}"
    else:
        try:
            rnn.use_int8()  # says why where the kernel cannot run this LSTM
        except InputError as e:
            why = str(e).removeprefix("LSTM.use_int8: ")
        else:
            rnn.use_int8(False)
    if why is not None:
        if activations == "int8":
            raise InputError(f"quantize: --activations int8 is not possible here: {why}")
        return {"int8_kernel": False, "why": why}
    assert isinstance(rnn, LSTM)
    metric = task.main_metric
    float_val = evaluate_model(model, task, "val", 256)[metric]
    rnn.use_int8()
    int8_val = evaluate_model(model, task, "val", 256)[metric]
    rnn.use_int8(False)
    worse = (float_val - int8_val) if task.higher_is_better else (int8_val - float_val)
    ok = worse <= INT8_TOLERANCE * abs(float_val) + 1e-12
    use = ok if activations == "auto" else True
    return {
        "int8_kernel": bool(use),
        "calibration": {"metric": metric, "float_inputs": float_val, "int8_inputs": int8_val,
                        "tolerance": INT8_TOLERANCE, "within": bool(ok)},
    }  # fmt: skip


def quantize_run(
    run: Any, out: str | Path, *, bits: int = 8, activations: str = "auto", evaluate: bool = True
) -> dict[str, Any]:
    """Quantize the weights of ``run`` into the new run folder ``out``; returns its result.json.

    ``activations``: "auto" (calibrate on the validation split), "int8" (always run the int8 kernel)
    or "float" (weights only: the model runs float32 with the dequantized weights)."""
    if bits not in BITS:
        raise InputError(f"quantize: --bits must be 8 or 4, got {bits!r}")
    if activations not in ("auto", "int8", "float"):
        raise InputError(f"quantize: --activations must be auto, int8 or float, got {activations!r}")
    src = as_run(run)
    prev = compress_info(src)
    if prev is not None and prev.get("method") == "quantize":
        raise InputError(
            f"quantize: {src.path} is already quantized (int{prev.get('bits')}); quantize its source run "
            f"{prev.get('source')} instead"
        )
    out = check_out(src, out)
    state = src.model.state_dict()
    saved, deq, names = quantize_state(state, bits)
    merged = merge_lstm_biases(saved, deq) if src.model_config.arch == "lstm" else []
    model = SequenceModel(src.model_config)
    model.load_state_dict(deq)
    model.eval()
    calib = _int8_calibration(model, src.task, activations, bits)
    if calib["int8_kernel"]:
        model.rnn.use_int8()  # type: ignore[operator]
    float_bytes = sum(t.numel() * 4 for t in state.values())
    q_bytes = sum(t.numel() * t.element_size() for t in saved.values())
    return write_run(
        src,
        out,
        src.model_config,
        saved,
        {"method": "quantize", "bits": bits, "quantized": names, "merged_biases": merged, **calib},
        model,
        evaluate,
        {"weight_bytes": q_bytes, "source_weight_bytes": float_bytes},
    )


__all__ = [
    "INT8_TOLERANCE",
    "is_quantizable",
    "merge_lstm_biases",
    "quantize_run",
    "quantize_state",
]
