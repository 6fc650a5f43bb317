"""Task heads around the recurrent core.

One :class:`SequenceModel` covers every task: an input layer (embedding for token tasks, identity
for vector tasks), the recurrent core (``lstmkit.LSTM``, or torch's GRU / vanilla RNN as baselines
so a user can see how far back each remembers), and an output head chosen by the task's target:

* ``class_last`` / ``regress_last`` / ``regress_horizon``: a linear layer on the output at the last
  valid step of each sequence -> (B, output_size). Sequence classification, regression.
* ``class_steps`` / ``multilabel_steps`` / ``regress_steps``: a linear layer at every step ->
  (B, T, output_size). Per-step classification; a character language model (with optional weight
  tying); forecasting (the quantiles of every forecast step).

Sequences are padded at the end and the core runs forward in time only, so the padding never
reaches a valid step; the head reads the output at ``lengths - 1``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ..core import LSTM, Trace
from ..core.variants import VARIANTS
from ..errors import InputError
from ..targets import STEP_TARGETS, TARGETS

Arch = Literal["lstm", "gru", "rnn"]
VARIANT_KEYS = VARIANTS  # the keys of ModelConfig.variants: the variant keywords of lstmkit.LSTM


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model (saved in every run's config.json)."""

    input_type: Literal["tokens", "vector"]
    input_size: int  # vocabulary size for tokens, features for vectors
    output_size: int
    target: str
    arch: Arch = "lstm"
    hidden_size: int = 64
    num_layers: int = 1
    embedding_size: int = 32  # tokens only
    dropout: float = 0.0  # between layers, and before the head
    tie_weights: bool = False  # class_steps over the input vocabulary (LMs): head shares the embedding
    proj_size: int = 0
    variants: dict[str, Any] = field(default_factory=dict)  # forget_bias, peephole, layer_norm, …

    def __post_init__(self) -> None:
        if self.input_type not in ("tokens", "vector"):
            raise InputError(f"ModelConfig: input_type must be 'tokens' or 'vector', got {self.input_type!r}")
        if self.arch not in ("lstm", "gru", "rnn"):
            raise InputError(f"ModelConfig: arch must be lstm, gru or rnn, got {self.arch!r}")
        if self.target not in TARGETS:
            raise InputError(f"ModelConfig: target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        for name in ("input_size", "output_size", "hidden_size", "num_layers", "embedding_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"ModelConfig: {name} must be a positive int, got {v!r}")
        unknown = set(self.variants) - set(VARIANT_KEYS)
        if unknown:
            raise InputError(f"ModelConfig: unknown variant {sorted(unknown)[0]!r}; known: {', '.join(VARIANT_KEYS)}")
        if self.arch != "lstm" and any(k != "forget_bias" and self.variants.get(k) for k in self.variants):
            raise InputError(f"ModelConfig: LSTM variants need arch='lstm', got arch={self.arch!r}")
        if self.tie_weights:
            if self.target != "class_steps" or self.input_type != "tokens" or self.output_size != self.input_size:
                raise InputError(
                    "ModelConfig: tie_weights needs a per-step classifier over the input vocabulary (an LM)"
                )
            if (self.proj_size or self.hidden_size) != self.embedding_size:
                raise InputError(
                    f"ModelConfig: tie_weights needs hidden_size (or proj_size) == embedding_size, got "
                    f"{self.proj_size or self.hidden_size} and {self.embedding_size}"
                )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InputError(f"model config: unknown field {sorted(unknown)[0]!r}")
        return cls(**d)


class SequenceModel(nn.Module):
    """input layer -> recurrent core (batch_first) -> head. See the module docstring."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.input_type == "tokens":
            self.embedding: nn.Embedding | None = nn.Embedding(cfg.input_size, cfg.embedding_size)
            core_in = cfg.embedding_size
        else:
            self.embedding = None
            core_in = cfg.input_size
        H = cfg.hidden_size
        if cfg.arch == "lstm":
            variants = {k: v for k, v in cfg.variants.items() if v is not None}
            # lstmkit's models start with the forget gate open (bias 1, Jozefowicz et al. 2015) unless the
            # config says otherwise (chrono initialisation sets that bias itself); lstmkit.LSTM itself
            # defaults to torch's initialisation
            if variants.get("chrono_init") is None:
                variants.setdefault("forget_bias", 0.0 if variants.get("coupled") else 1.0)
            self.rnn: nn.Module = LSTM(
                core_in,
                H,
                cfg.num_layers,
                batch_first=True,
                dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
                proj_size=cfg.proj_size,
                **variants,
            )
        elif cfg.arch == "gru":
            self.rnn = nn.GRU(
                core_in, H, cfg.num_layers, batch_first=True, dropout=cfg.dropout if cfg.num_layers > 1 else 0.0
            )
        else:
            self.rnn = nn.RNN(
                core_in, H, cfg.num_layers, batch_first=True, dropout=cfg.dropout if cfg.num_layers > 1 else 0.0
            )
        out_dim = cfg.proj_size or H
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(out_dim, cfg.output_size)
        if cfg.tie_weights:
            assert self.embedding is not None
            self.head.weight = self.embedding.weight

    @property
    def per_step(self) -> bool:
        return self.cfg.target in STEP_TARGETS

    def features(self, x: Tensor) -> Tensor:
        if self.embedding is not None:
            if x.dtype != torch.int64:
                raise TypeError(f"SequenceModel: token input must be int64 ids, got {x.dtype}")
            return self.embedding(x)
        return x

    def forward(
        self,
        x: Tensor,
        lengths: Tensor | None = None,
        state: Any = None,
        return_gates: bool = False,
        return_state: bool = False,
    ) -> Any:
        """x (B, T) ids or (B, T, I) floats -> logits/predictions; see the module docstring."""
        z = self.features(x)
        trace: Trace | None = None
        if return_gates:
            if not isinstance(self.rnn, LSTM):
                raise InputError(f"SequenceModel: gate traces need arch='lstm', this model is {self.cfg.arch}")
            out, new_state, trace = self.rnn(z, state, return_gates=True)
        else:
            out, new_state = self.rnn(z, state)
        out = self.drop(out)
        if self.per_step:
            y = self.head(out)
        else:
            if lengths is None:
                last = out[:, -1]
            else:
                idx = (lengths.to(out.device) - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, out.shape[-1])
                last = out.gather(1, idx).squeeze(1)
            y = self.head(last)
        result: list[Any] = [y]
        if return_gates:
            result.append(trace)
        if return_state:
            result.append(new_state)
        return result[0] if len(result) == 1 else tuple(result)


def build_model(cfg: ModelConfig | dict[str, Any]) -> SequenceModel:
    if isinstance(cfg, dict):
        cfg = ModelConfig.from_dict(cfg)
    return SequenceModel(cfg)


__all__ = ["ModelConfig", "SequenceModel", "build_model", "VARIANT_KEYS"]
