"""Export to ONNX, task head included: every variant, the standard ``LSTM`` operator where it applies.

:func:`export_onnx` (and ``lstmkit export --format onnx``) writes the model by ``torch.onnx.export``
(the dynamo exporter, opset 18), through the same path as any user's ``torch.onnx.export`` of a model
holding an lstmkit LSTM (:mod:`lstmkit.core.graph`): the plain cell, peephole and coupled gates
become one ONNX ``LSTM`` per layer (gate blocks reordered at that border), layer norm, zoneout's
expectation and projections an ONNX ``Scan`` over the reference step. With int8 weights (``bits``,
or a quantized run) the graph is built by hand (:func:`build_onnx`, then
:mod:`lstmkit.export.onnx_int8`); that form takes the operator's variants only.
Both graphs have the same inputs, outputs and metadata (B and T are dynamic; L layers, D directions,
H hidden units)::

    x (B, T) int64 ids -> Gather(embedding)  |  x (B, T, I) float32
      -> Transpose to (T, B, ·) -> LSTM (layer 0) -> … -> LSTM (layer L-1)   one ONNX LSTM per layer
      -> head: Linear at every step (class_steps, multilabel_steps) -> y (B, T, O)
               Linear at the last step (class_last, regress_*)       -> y (B, O)
    h0, c0 (L·D, B, H) inputs;  h_n, c_n (L·D, B, H) outputs  (torch's layout of the states)

Gate order: lstmkit (and torch) stack the gate blocks as i, f, g, o; ONNX as i, o, f, c.
:func:`to_onnx_gates` / :func:`from_onnx_gates` convert at this border (torch_onnx's graph converts in
:mod:`lstmkit.core.graph`); the peephole
rows p_i, p_f, p_o become ONNX's P = [p_i, p_o, p_f]. ``coupled`` (f = 1 − i) is ONNX's
``input_forget=1``. Layer norm, zoneout and a projection have no place in the operator: build_onnx
refuses them with a one-line error (torch_onnx writes them as a Scan).
Sequences are taken whole (no ``sequence_lens``): the head reads the output at the last step, as
:class:`~lstmkit.models.SequenceModel` does without lengths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import atomic
from .spec import ExportError, ModelSpec, model_spec, suffixes

OPSET = 17
# ONNX block k holds lstmkit block ONNX_FROM_IFGO[k]: ONNX (i, o, f, c) <- lstmkit (i=0, o=3, f=1, g=2)
ONNX_FROM_IFGO = (0, 3, 1, 2)
# lstmkit block k holds ONNX block IFGO_FROM_ONNX[k]: lstmkit (i, f, g, o) <- ONNX (i=0, f=2, c=3, o=1)
IFGO_FROM_ONNX = (0, 2, 3, 1)


def _reorder(w: np.ndarray, order: tuple[int, ...]) -> np.ndarray:
    if w.shape[0] % 4:
        raise ValueError(f"gate-stacked weights need a first dimension divisible by 4, got shape {w.shape}")
    blocks = np.split(w, 4, axis=0)
    return np.concatenate([blocks[k] for k in order], axis=0)


def to_onnx_gates(w: np.ndarray) -> np.ndarray:
    """(4H, …) in lstmkit's gate order i, f, g, o -> ONNX's i, o, f, c."""
    return _reorder(w, ONNX_FROM_IFGO)


def from_onnx_gates(w: np.ndarray) -> np.ndarray:
    """(4H, …) in ONNX's gate order i, o, f, c -> lstmkit's i, f, g, o."""
    return _reorder(w, IFGO_FROM_ONNX)


def peephole_to_onnx(p: np.ndarray) -> np.ndarray:
    """lstmkit's (3, H) rows p_i, p_f, p_o -> ONNX's (3H,) p_i, p_o, p_f."""
    return np.concatenate([p[0], p[2], p[1]])


def peephole_from_onnx(p: np.ndarray) -> np.ndarray:
    """ONNX's (3H,) p_i, p_o, p_f -> lstmkit's (3, H) rows p_i, p_f, p_o."""
    pi, po, pf = np.split(p, 3)
    return np.stack([pi, pf, po])


def check_onnx_expressible(spec: ModelSpec) -> None:
    bad = [n for n in spec.variant_names() if n not in ("peephole", "coupled")]
    if bad:
        raise ExportError(
            f"export: the ONNX LSTM operator with int8 weights cannot express {', '.join(bad)}; "
            "export float32 weights (no --bits) or with --format runtime (the NumPy runtime runs every variant)"
        )


def build_onnx(spec: ModelSpec, opset: int = OPSET) -> Any:
    """The ONNX ModelProto of ``spec`` (see the module docstring for the graph)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    check_onnx_expressible(spec)
    if opset < 14:
        raise ExportError(f"export: opset must be >= 14 (Reshape with allowzero, Squeeze axes input), got {opset}")
    H, D, L = spec.hidden_size, spec.directions, spec.num_layers
    nodes: list[Any] = []
    inits: list[Any] = []

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=f"{op}_{len(nodes)}", **attrs))
        return output

    a = spec.arrays
    if spec.input_type == "tokens":
        x_info = helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", "steps"])
        emb = const("embedding.weight", a["embedding.weight"])
        seq = node("Gather", [emb, "x"], "embedded", axis=0)  # (B, T, E)
        seq = node("Transpose", [seq], "x_tbi", perm=[1, 0, 2])
    else:
        if spec.batch_first:
            x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "steps", spec.core_input_size])
            seq = node("Transpose", ["x"], "x_tbi", perm=[1, 0, 2])
        else:
            x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["steps", "batch", spec.core_input_size])
            seq = "x"
    made: set[str] = set()

    def shape_tb() -> str:  # [0, 0, -1]: keep the first two dimensions, flatten the rest
        if "shape_tb_flat" not in made:
            made.add("shape_tb_flat")
            const("shape_tb_flat", np.array([0, 0, -1], dtype=np.int64))
        return "shape_tb_flat"

    h_outs: list[str] = []
    c_outs: list[str] = []
    y = ""
    for k, sfxs in enumerate(suffixes(spec)):
        W = np.stack([to_onnx_gates(a[f"rnn.weight_ih{s}"]) for s in sfxs])  # (D, 4H, I)
        R = np.stack([to_onnx_gates(a[f"rnn.weight_hh{s}"]) for s in sfxs])  # (D, 4H, H)
        if spec.bias:
            B = np.stack(
                [
                    np.concatenate([to_onnx_gates(a[f"rnn.bias_ih{s}"]), to_onnx_gates(a[f"rnn.bias_hh{s}"])])
                    for s in sfxs
                ]
            )
        else:
            B = np.zeros((D, 8 * H), np.float32)
        lo, hi = (
            const(f"range_{k}_lo", np.array([k * D], np.int64)),
            const(f"range_{k}_hi", np.array([(k + 1) * D], np.int64)),
        )
        axis0 = const(f"axis0_{k}", np.array([0], np.int64))
        h0 = node("Slice", ["h0", lo, hi, axis0], f"h0_l{k}")
        c0 = node("Slice", ["c0", lo, hi, axis0], f"c0_l{k}")
        inputs = [seq, const(f"W_l{k}", W), const(f"R_l{k}", R), const(f"B_l{k}", B), "", h0, c0]
        if spec.peephole:
            P = np.stack([peephole_to_onnx(a[f"rnn.weight_peephole{s}"]) for s in sfxs])  # (D, 3H)
            inputs.append(const(f"P_l{k}", P))
        y, yh, yc = f"Y_l{k}", f"Y_h_l{k}", f"Y_c_l{k}"
        nodes.append(
            helper.make_node(
                "LSTM",
                inputs,
                [y, yh, yc],
                name=f"LSTM_l{k}",
                hidden_size=H,
                direction="bidirectional" if D == 2 else "forward",
                input_forget=1 if spec.coupled else 0,
            )
        )
        h_outs.append(yh)
        c_outs.append(yc)
        if k + 1 < L:  # (T, D, B, H) -> (T, B, D·H), the next layer's input
            t = node("Transpose", [y], f"Y_tbdh_l{k}", perm=[0, 2, 1, 3])
            seq = node("Reshape", [t, shape_tb()], f"x_l{k + 1}")
    outputs = []
    if len(h_outs) == 1:
        nodes.append(helper.make_node("Identity", [h_outs[0]], ["h_n"], name="Identity_h_n"))
        nodes.append(helper.make_node("Identity", [c_outs[0]], ["c_n"], name="Identity_c_n"))
    else:
        nodes.append(helper.make_node("Concat", h_outs, ["h_n"], name="Concat_h_n", axis=0))
        nodes.append(helper.make_node("Concat", c_outs, ["c_n"], name="Concat_c_n", axis=0))
    state_shape: list[str | int | None] = [L * D, "batch", H]
    if spec.has_head:
        assert spec.output_size is not None
        wt = const("head.weight_t", np.ascontiguousarray(a["head.weight"].T))  # (D·H, O)
        b = const("head.bias", a["head.bias"])
        if spec.per_step:
            t = node("Transpose", [y], "Y_btdh", perm=[2, 0, 1, 3])
            feat = node("Reshape", [t, shape_tb()], "features")  # (B, T, D·H)
            mm = node("MatMul", [feat, wt], "head_mm")
            node("Add", [mm, b], "y")
            y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "steps", spec.output_size])
        else:
            last = node(
                "Slice",
                [
                    y,
                    const("last_lo", np.array([-1], np.int64)),
                    const("last_hi", np.array([2**62], np.int64)),
                    const("last_axis", np.array([0], np.int64)),
                ],
                "Y_last",
            )  # (1, D, B, H)
            sq = node("Squeeze", [last, const("squeeze_axis", np.array([0], np.int64))], "Y_last_dbh")
            t = node("Transpose", [sq], "Y_last_bdh", perm=[1, 0, 2])
            feat = node("Reshape", [t, const("shape_b_flat", np.array([0, -1], np.int64))], "features")  # (B, D·H)
            node("Gemm", [feat, wt, b], "y")
            y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", spec.output_size])
        outputs.append(y_info)
    else:  # a bare LSTM: torch's output (T, B, D·H) or (B, T, D·H)
        perm = [2, 0, 1, 3] if spec.batch_first else [0, 2, 1, 3]
        t = node("Transpose", [y], "Y_perm", perm=perm)
        node("Reshape", [t, shape_tb()], "y")
        dims: list[Any] = ["batch", "steps", D * H] if spec.batch_first else ["steps", "batch", D * H]
        outputs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, dims))
    outputs += [
        helper.make_tensor_value_info("h_n", TensorProto.FLOAT, state_shape),
        helper.make_tensor_value_info("c_n", TensorProto.FLOAT, state_shape),
    ]
    graph_inputs = [
        x_info,
        helper.make_tensor_value_info("h0", TensorProto.FLOAT, state_shape),
        helper.make_tensor_value_info("c0", TensorProto.FLOAT, state_shape),
    ]
    graph = helper.make_graph(nodes, "lstmkit", graph_inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="lstmkit")
    model.ir_version = min(model.ir_version, 8)  # readable by older runtimes too
    import json

    from .. import __version__

    meta = {"lstmkit_version": __version__, "target": spec.target or "none", "input_type": spec.input_type}
    if spec.vocab is not None:
        meta["vocab"] = json.dumps(spec.vocab)
    if spec.normaliser is not None:
        meta["normaliser"] = json.dumps(spec.normaliser)
    onnx.helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model


def export_onnx(run_or_model: Any, path: str | Path, *, opset: int = OPSET, bits: int | None = None) -> Path:
    """Write ``run_or_model`` (a run folder, Run, SequenceModel or LSTM) as an ONNX file at ``path``.

    Inputs ``x``, ``h0``, ``c0``; outputs ``y``, ``h_n``, ``c_n`` (see the module docstring). The file is
    written atomically. Raises :class:`ExportError` for a model the ONNX LSTM cannot express.
    ``bits`` 8 (or a quantized run, by default) stores the weight matrices as int8 codes behind
    DequantizeLinear nodes (:mod:`lstmkit.export.onnx_int8`); otherwise they are float32.
    """
    from .onnx_int8 import onnx_bits, with_int8_weights

    path = Path(path)
    if path.is_dir():
        raise ExportError(f"export: {path} is a folder; give the .onnx file to write (e.g. {path / 'model.onnx'})")
    bits = onnx_bits(run_or_model, bits)
    if bits is not None:  # the int8 rewrite reads build_onnx's graph (plain, peephole, coupled)
        model = with_int8_weights(build_onnx(model_spec(run_or_model), opset), bits)
    else:
        model = torch_onnx(run_or_model, opset)
    atomic.write_bytes(path, model.SerializeToString())
    return path


def torch_onnx(run_or_model: Any, opset: int = OPSET) -> Any:
    """The ONNX ModelProto of ``run_or_model`` by ``torch.onnx.export`` (the dynamo exporter): every
    variant (see :mod:`lstmkit.core.graph`: the ONNX LSTM operator for the plain cell, peephole and
    coupled gates, an ONNX Scan for layer norm, zoneout's expectation and projections), the model in
    evaluation mode; inputs ``x``, ``h0``, ``c0``, outputs ``y``, ``h_n``, ``c_n``, batch and steps
    dynamic, the metadata of :func:`build_onnx`."""
    import json
    import logging
    import warnings

    import onnx
    import torch
    from torch import nn

    from .. import __version__
    from ..core import LSTM
    from ..models import SequenceModel
    from .spec import resolve_model

    if opset < 14:
        raise ExportError(f"export: opset must be >= 14, got {opset}")
    module, vocab, norm = resolve_model(run_or_model)
    spec = model_spec(module)  # refuses what is not an LSTM model
    if isinstance(module, nn.LSTM):
        module = LSTM.from_torch(module)
    sequence_model = isinstance(module, SequenceModel)

    class StateIO(nn.Module):
        """(x, h0, c0) -> (y, h_n, c_n): the exported signature."""

        def __init__(self) -> None:
            super().__init__()
            self.model = module

        def forward(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> tuple[torch.Tensor, ...]:
            if sequence_model:
                y, (h, c) = self.model(x, state=(h0, c0), return_state=True)
            else:
                y, (h, c) = self.model(x, (h0, c0))
            return y, h, c

    B, T = 2, 3
    dtype = next(module.parameters()).dtype
    if spec.input_type == "tokens":
        x = torch.zeros(B, T, dtype=torch.int64)
    else:
        x = torch.zeros((B, T, spec.core_input_size) if spec.batch_first else (T, B, spec.core_input_size), dtype=dtype)
    LD, H = spec.num_layers * spec.directions, spec.hidden_size
    h0 = torch.zeros(LD, B, spec.proj_size or H, dtype=dtype)
    c0 = torch.zeros(LD, B, H, dtype=dtype)
    x_dims = {0: "batch", 1: "steps"} if spec.batch_first else {0: "steps", 1: "batch"}
    was_training = module.training
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    module.eval()
    quiet.setLevel(logging.ERROR)  # the exporter's notes on optional torchvision ops
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its notes on the axes' names, deprecations inside torch
            program = torch.onnx.export(
                StateIO().eval(),
                (x, h0, c0),
                input_names=["x", "h0", "c0"],
                output_names=["y", "h_n", "c_n"],
                dynamic_shapes=(x_dims, {1: "batch"}, {1: "batch"}),
                opset_version=max(opset, 18),
                dynamo=True,
                verbose=False,
            )
    finally:
        module.train(was_training)
        quiet.setLevel(level)
    assert program is not None
    model = program.model_proto
    meta = {"lstmkit_version": __version__, "target": spec.target or "none", "input_type": spec.input_type}
    if vocab is not None:
        meta["vocab"] = json.dumps(vocab)
    if norm is not None:
        meta["normaliser"] = json.dumps(norm)
    onnx.helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model


__all__ = [
    "ExportError",
    "build_onnx",
    "export_onnx",
    "from_onnx_gates",
    "peephole_from_onnx",
    "peephole_to_onnx",
    "to_onnx_gates",
]
