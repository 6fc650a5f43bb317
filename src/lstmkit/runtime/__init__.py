"""lstmkit.runtime: run exported lstmkit models with NumPy alone (no torch, ever).

    import lstmkit.runtime as rt
    model = rt.load("runs/mystery.rt")        # from: lstmkit export RUN --format runtime --out DIR
    y = model.run(x)                           # whole sequences, like the torch model's forward
    stream = model.stream(batch_size=1)
    y_t = stream.step(x_t)                     # one step per call, the state carried

float32 or int8/int4 weights (one scale per output row); every variant of lstmkit's cell in
evaluation mode. This package imports only NumPy, its own modules, ``lstmkit.errors``,
``lstmkit.targets`` and, to write bundles, ``lstmkit.atomic`` (none imports torch): a device without
torch that reads and runs bundles needs only ``lstmkit/__init__.py`` (its imports of torch are lazy),
``errors.py``, ``targets.py`` and this folder (tests/test_runtime.py ships exactly these).
"""

from __future__ import annotations

from .bundle import BundleError, read_bundle, write_bundle
from .model import Model, Stream, load
from .quant import dequantize_rows, pack_int4, quantize_rows, unpack_int4

__all__ = [
    "BundleError",
    "Model",
    "Stream",
    "dequantize_rows",
    "load",
    "pack_int4",
    "quantize_rows",
    "read_bundle",
    "unpack_int4",
    "write_bundle",
]
