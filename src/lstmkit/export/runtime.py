"""Export for :mod:`lstmkit.runtime` (the NumPy-only runtime): a bundle folder.

``export_runtime(run, "out.rt")`` writes float32 weights; ``bits=8`` (or 4) stores the weight
matrices (W_ih, W_hh, W_hr, the embedding and the head) as codes with one float32 scale per
output row (:mod:`lstmkit.runtime.quant`); biases, peepholes and layer-norm gains stay float32.
A run made by ``lstmkit compress --method quantize`` exports at its own bits by default. The
runtime multiplies float inputs by the decoded weights: a run that uses the int8 kernel in torch
(``int8_kernel`` in its config, which also codes the inputs to int8) differs from its bundle by
that coding (calibrated at quantize time to cost < 0.5 % of the validation metric).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..outdir import check_out_folder
from ..runtime.bundle import write_bundle
from ..runtime.quant import BITS, pack_int4, quantize_rows
from ..train import Run, load_run
from .spec import ModelSpec, model_spec


def _is_matrix(name: str, a: np.ndarray) -> bool:
    return a.ndim == 2 and not name.startswith(("rnn.weight_peephole", "rnn.layer_norm"))


def spec_manifest_model(spec: ModelSpec) -> dict[str, Any]:
    return {
        "input_type": spec.input_type,
        "input_size": spec.input_size,
        "core_input_size": spec.core_input_size,
        "hidden_size": spec.hidden_size,
        "num_layers": spec.num_layers,
        "bidirectional": spec.bidirectional,
        "proj_size": spec.proj_size,
        "bias": spec.bias,
        "peephole": spec.peephole,
        "layer_norm": spec.layer_norm,
        "coupled": spec.coupled,
        "zoneout_c": spec.zoneout_c,
        "zoneout_h": spec.zoneout_h,
        "target": spec.target,
        "output_size": spec.output_size,
        "batch_first": spec.batch_first,
    }


def _run_bits(run_or_model: Any) -> int | None:
    """The bits of a quantized run (the ``compress`` section of its config), else None."""
    if not isinstance(run_or_model, Run):
        return None
    comp = run_or_model.config.get("compress")
    if isinstance(comp, dict) and comp.get("method") == "quantize":
        return int(comp.get("bits", 8))
    return None


def export_runtime(run_or_model: Any, out: str | Path, *, bits: int | None = None, force: bool = False) -> Path:
    """Write ``run_or_model`` (a run folder, a Run, a SequenceModel or an LSTM) as a runtime bundle folder
    ``out``; ``bits`` 8 or 4 quantizes the matrices (default: a quantized run's own bits, else float32).
    ``out`` must be new, empty or an earlier bundle; ``force`` writes into a folder holding other files."""
    check_out_folder(out, "export", force=force, own=("manifest.json", "weights.bin"), runs_ok=False)
    if isinstance(run_or_model, (str, Path)):
        run_or_model = load_run(run_or_model)
    if bits is None:
        bits = _run_bits(run_or_model)
    if bits is not None and bits not in BITS:
        raise InputError(f"export: bits must be 8 or 4 (or none for float32), got {bits!r}")
    spec = model_spec(run_or_model)
    arrays: dict[str, np.ndarray] = {}
    quantized: dict[str, dict[str, Any]] = {}
    for name, a in spec.arrays.items():
        if bits is not None and _is_matrix(name, a):
            q, s = quantize_rows(a, bits)
            arrays[f"{name}.q"] = q if bits == 8 else pack_int4(q)
            arrays[f"{name}.scale"] = s
            quantized[name] = {"bits": bits, "cols": int(a.shape[1])}
        else:
            arrays[name] = a.astype(np.float32)
    return write_bundle(out, arrays, spec_manifest_model(spec), quantized, spec.vocab, spec.normaliser)


__all__ = ["export_runtime", "spec_manifest_model"]
