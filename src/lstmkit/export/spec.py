"""A model as plain data: what every export format needs to know, read once from a torch model.

:func:`model_spec` turns a :class:`~lstmkit.models.SequenceModel` (or a bare ``lstmkit.LSTM`` /
``torch.nn.LSTM``) into a :class:`ModelSpec`: NumPy float32 arrays in lstmkit's layout (gate order
i, f, g, o; names as torch.nn.LSTM's state_dict) and the few facts that shape the computation.
The ONNX and runtime writers work from this, so the torch side is read in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core import LSTM
from ..core.variants import CELL_SWITCHES
from ..errors import InputError
from ..models import SequenceModel
from ..targets import STEP_TARGETS


class ExportError(InputError):
    """A model that cannot be exported to the requested format (one line: what and what to do)."""


@dataclass
class ModelSpec:
    """Shapes: I input features (E embedding size for tokens), H hidden, P proj (0 = none), D directions.

    ``arrays`` holds float32 NumPy arrays named as the torch state_dict of a SequenceModel
    (``embedding.weight``, ``rnn.weight_ih_l0``, ``rnn.weight_peephole_l0``, ``head.weight`` …);
    for a bare LSTM the names carry the same ``rnn.`` prefix and there is no head.
    """

    input_type: str  # "tokens" | "vector"
    input_size: int  # vocabulary size for tokens, features for vectors
    core_input_size: int  # what the LSTM sees (embedding size for tokens)
    hidden_size: int
    num_layers: int
    bidirectional: bool
    proj_size: int
    bias: bool
    peephole: bool
    layer_norm: bool
    coupled: bool
    zoneout_c: float
    zoneout_h: float
    target: str | None  # None for a bare LSTM
    output_size: int | None
    batch_first: bool
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    vocab: list[str] | None = None
    normaliser: dict[str, Any] | None = None

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def per_step(self) -> bool:
        return self.target in STEP_TARGETS

    @property
    def has_head(self) -> bool:
        return self.target is not None

    def variant_names(self) -> list[str]:
        out = [n for n in CELL_SWITCHES if getattr(self, n)]
        if self.zoneout_c > 0 or self.zoneout_h > 0:
            out.append("zoneout")
        if self.proj_size > 0:
            out.append("projection (proj_size)")
        return out


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().to(torch.float32).numpy())


def resolve_model(run_or_model: Any) -> tuple[nn.Module, list[str] | None, dict[str, Any] | None]:
    """A run folder path, a :class:`~lstmkit.train.Run`, a SequenceModel or an LSTM -> (module, vocab, normaliser)."""
    if isinstance(run_or_model, (str, Path)):
        from ..train import load_run

        run_or_model = load_run(run_or_model)
    if hasattr(run_or_model, "model") and hasattr(run_or_model, "model_config"):
        return run_or_model.model, run_or_model.vocab, run_or_model.normaliser
    if isinstance(run_or_model, (SequenceModel, LSTM, nn.LSTM)):
        return run_or_model, None, None
    raise TypeError(f"expected a run folder, a Run, a SequenceModel or an LSTM, got {type(run_or_model).__name__}")


def model_spec(run_or_model: Any) -> ModelSpec:
    """Read the model of a run folder / Run / SequenceModel / LSTM into a :class:`ModelSpec`."""
    module, vocab, norm = resolve_model(run_or_model)
    if isinstance(module, SequenceModel):
        cfg = module.cfg
        if not isinstance(module.rnn, LSTM):
            raise ExportError(
                f"export: only LSTM models export; this model's core is {cfg.arch!r} (train with --arch lstm)"
            )
        lstm = module.rnn
        prefix_state = {k: v for k, v in module.state_dict().items()}
        target: str | None = cfg.target
        output_size: int | None = cfg.output_size
        input_type, input_size = cfg.input_type, cfg.input_size
        batch_first = True
    else:
        core: nn.Module = module
        if isinstance(core, nn.LSTM) and not isinstance(core, LSTM):
            core = LSTM.from_torch(core)
        assert isinstance(core, LSTM)
        lstm = core
        prefix_state = {f"rnn.{k}": v for k, v in lstm.state_dict().items()}
        target, output_size = None, None
        input_type, input_size = "vector", lstm.input_size
        batch_first = lstm.batch_first
    v = lstm.variants
    spec = ModelSpec(
        input_type=input_type,
        input_size=input_size,
        core_input_size=lstm.input_size,
        hidden_size=lstm.hidden_size,
        num_layers=lstm.num_layers,
        bidirectional=lstm.bidirectional,
        proj_size=lstm.proj_size,
        bias=lstm.bias,
        peephole=v.opts.peephole,
        layer_norm=v.opts.layer_norm,
        coupled=v.opts.coupled,
        zoneout_c=v.zoneout_c,
        zoneout_h=v.zoneout_h,
        target=target,
        output_size=output_size,
        batch_first=batch_first,
        vocab=vocab,
        normaliser=norm,
    )
    spec.arrays = {k: _np(t) for k, t in prefix_state.items()}
    return spec


def suffixes(spec: ModelSpec) -> list[list[str]]:
    """Per layer, the parameter suffix of each direction: [["_l0", "_l0_reverse"], ...]."""
    return [[f"_l{k}" + ("_reverse" if d else "") for d in range(spec.directions)] for k in range(spec.num_layers)]


__all__ = ["ExportError", "ModelSpec", "model_spec", "resolve_model", "suffixes"]
