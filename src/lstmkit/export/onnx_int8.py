"""ONNX with int8 weights: each weight matrix stored as int8 codes and a scale per row, turned back
into float by a ``DequantizeLinear`` node just before the standard ``LSTM`` operator (and before the
embedding's ``Gather``): the QDQ form that ONNX Runtime and other runtimes read, about 4x smaller than
float32 weights. The head stays float32 (the values ``q · s`` of a quantized run, so the same
weights): ONNX Runtime's default optimisations turn a DequantizeLinear before a ``MatMul``/``Gemm``
into its ``MatMulNBits`` kernel, which changed a test model's outputs by 1 % (0.034 on logits of ~3),
while DequantizeLinear before ``LSTM`` and ``Gather`` computes with exactly the stored weights.

A quantized run (``lstmkit compress --method quantize``) is exported this way by default: its
dequantized weights are ``q · s`` with one scale per output row (:mod:`lstmkit.runtime.quant`), and
quantizing them again per row gives back the same codes (up to a rounding of the scale), so the
ONNX model computes with the run's own weights. ``bits=8`` does the same for a float run. An int4
run's codes (in [-7, 7]) are stored in int8, since ONNX's int4 type is not read everywhere yet.
Activations stay float: the LSTM operator takes float inputs.

The rewrite works on the finished float ModelProto of :func:`lstmkit.export.onnx.build_onnx`:

    W_l{k} (D, 4H, I)  ->  W_l{k}.q int8 (D·4H, I), W_l{k}.scale (D·4H,)  -> DequantizeLinear(axis 0) -> Reshape
    R_l{k} (D, 4H, H)  ->  the same
    embedding.weight (V, E)  -> per row (axis 0)

Biases, peepholes, the head and the states stay float32.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..runtime.quant import BITS, quantize_rows

__all__ = ["onnx_bits", "onnx_weight_summary", "with_int8_weights"]

_LSTM_MATRIX = re.compile(r"^[WR]_l\d+$")


def onnx_bits(run_or_model: Any, bits: int | None) -> int | None:
    """The bits to store: ``bits`` if given, else a quantized run's own (None: float32 weights)."""
    if bits is not None:
        if bits not in BITS:
            raise InputError(f"export: bits must be 8 or 4 (or none for float32), got {bits!r}")
        return int(bits)
    config: Any = getattr(run_or_model, "config", None)
    if isinstance(run_or_model, (str, Path)):
        try:
            config = json.loads((Path(run_or_model) / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = None
    comp = config.get("compress") if isinstance(config, dict) else None
    if isinstance(comp, dict) and comp.get("method") == "quantize":
        return int(comp.get("bits", 8))
    return None


def with_int8_weights(model: Any, bits: int = 8) -> Any:
    """``model`` (an ONNX ModelProto from ``build_onnx``) with its weight matrices as int8 codes and
    per-row scales behind DequantizeLinear nodes (see the module docstring); checked by onnx.checker."""
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    new_nodes: list[Any] = []
    keep: list[Any] = []
    done = 0
    for init in g.initializer:
        name = init.name
        if not (_LSTM_MATRIX.match(name) or name == "embedding.weight"):
            keep.append(init)
            continue
        a = numpy_helper.to_array(init).astype(np.float32)
        shape = a.shape
        q, s = quantize_rows(a.reshape(-1, shape[-1]), bits)  # one scale per row (gate rows of every direction)
        keep += [
            numpy_helper.from_array(q, f"{name}.q"),
            numpy_helper.from_array(s, f"{name}.scale"),
            numpy_helper.from_array(np.zeros(s.shape, np.int8), f"{name}.zero_point"),
        ]
        deq = name if q.shape == shape else f"{name}.dequantized"
        new_nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [f"{name}.q", f"{name}.scale", f"{name}.zero_point"],
                [deq],
                name=f"DequantizeLinear_{name}",
                axis=0,
            )
        )
        if deq != name:  # (D·4H, X) -> (D, 4H, X)
            keep.append(numpy_helper.from_array(np.array(shape, np.int64), f"{name}.shape"))
            new_nodes.append(helper.make_node("Reshape", [deq, f"{name}.shape"], [name], name=f"Reshape_{name}"))
        done += 1
    if not done:
        raise InputError("export: the model has no weight matrix to store as int8")
    del g.initializer[:]
    g.initializer.extend(keep)
    old = list(g.node)
    del g.node[:]
    g.node.extend(new_nodes + old)  # the dequantized weights first: the graph stays topologically sorted
    props = {p.key: p.value for p in model.metadata_props}
    props["weights"] = f"int{bits} codes, one scale per row (DequantizeLinear)"
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    return model


def onnx_weight_summary(path: str | Path) -> str:
    """One line on how an exported ONNX file stores its weights, for the user: int8 or float32,
    and the bytes of the weights."""
    import onnx

    model = onnx.load(str(path))
    q = sum(len(i.raw_data) for i in model.graph.initializer if i.name.endswith(".q"))
    f = sum(len(i.raw_data) for i in model.graph.initializer if not i.name.endswith(".q"))
    size = Path(path).stat().st_size
    if q:
        return (
            f"weights: int8 codes with one float scale per row, dequantized (DequantizeLinear) before the "
            f"LSTM operator; {q / 1e3:.1f} kB int8 + {f / 1e3:.1f} kB float32; file {size / 1e3:.1f} kB"
        )
    plain = any(n.op_type == "LSTM" for n in model.graph.node)  # --bits 8 needs the standard LSTM operator
    hint = "; --bits 8 stores them as int8 (about 4x smaller)" if plain else ""
    return f"weights: float32 ({f / 1e3:.1f} kB; file {size / 1e3:.1f} kB){hint}"
