"""Export a trained model: ONNX (the standard LSTM operator) or the NumPy runtime's format.

from lstmkit.export import export_onnx, export_runtime
export_onnx("runs/mystery", "mystery.onnx")
export_runtime("runs/mystery", "mystery.rt")        # run it with lstmkit.runtime (no torch)
"""

from __future__ import annotations

from .onnx import ExportError, export_onnx, from_onnx_gates, to_onnx_gates
from .runtime import export_runtime
from .spec import ModelSpec, model_spec

__all__ = [
    "ExportError",
    "ModelSpec",
    "export_onnx",
    "export_runtime",
    "from_onnx_gates",
    "model_spec",
    "to_onnx_gates",
]
