"""A trained run folder as a Python object: ``run = lstmkit.load("runs/mystery")``.

``run.model`` (eval mode), ``run.config`` (config.json), ``run.task`` (rebuilt on first use from
the saved task config: for ``text``/``csv`` it needs the data file where it was), ``run.vocab``,
``run.normaliser``, ``run.evaluate(split)``, ``run.sample(...)`` for language models.
Loading reads JSON and safetensors only: nothing in a run folder can execute code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data import Task, make_task
from ..models import ModelConfig, SequenceModel
from .checkpoint import RunError, load_tensors, read_json
from .loop import TrainConfig, config_from_json, evaluate_model


def load_weights_into(model: torch.nn.Module, path: Path) -> None:
    tensors, _ = load_tensors(path, "the model weights")
    fit_weights(model, tensors, path)


def fit_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Load ``tensors`` into ``model`` after checking names, shapes and dtypes (errors name ``path``)."""
    want = model.state_dict()
    missing = sorted(set(want) - set(tensors))
    extra = sorted(set(tensors) - set(want))
    if missing or extra:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
        raise RunError(
            f"{path}: the weights do not fit the model in config.json ({what}); the file is from another run"
        )
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(want[k].shape):
            raise RunError(
                f"{path}: weight {k!r} has shape {tuple(v.shape)} but the model needs {tuple(want[k].shape)}"
            )
        if not v.dtype.is_floating_point and want[k].dtype.is_floating_point:
            raise RunError(f"{path}: weight {k!r} has dtype {v.dtype}, expected floating point")
    model.load_state_dict({k: v.to(want[k].dtype) for k, v in tensors.items()})


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    train_config: TrainConfig
    model_config: ModelConfig
    model: SequenceModel
    vocab: list[str] | None = None
    normaliser: dict[str, Any] | None = None
    _task: Task | None = field(default=None, repr=False)

    @property
    def task(self) -> Task:
        if self._task is None:
            t = self.config["task"]
            cfg = dict(t["config"])
            name = cfg.pop("name", t["name"])
            seed = cfg.pop("seed", self.train_config.seed)
            self._task = make_task(name, seed=seed, **cfg)
        return self._task

    def evaluate(self, split: str = "test", batch_size: int = 256) -> dict[str, float]:
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        return evaluate_model(self.model, self.task, split, batch_size)  # type: ignore[arg-type]

    def sample(
        self,
        prompt: str = "",
        length: int = 200,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
    ) -> str:
        from .sample import sample_text

        return sample_text(self, prompt, length, temperature, top_k, seed)


def load_run(run_dir: str | Path) -> Run:
    path = Path(run_dir)
    if not path.is_dir():
        raise RunError(f"{path}: not a run folder (no such directory); give the --out folder of 'lstmkit train'")
    if not (path / "config.json").exists():
        raise RunError(f"{path}: not a run folder (config.json is missing)")
    cfg = read_json(path / "config.json", "the run's config")
    tcfg = config_from_json(cfg, path)
    if not isinstance(cfg["task"].get("name"), str) or not isinstance(cfg["task"].get("config"), dict):
        raise RunError(f"{path / 'config.json'}: field 'task' must have 'name' and 'config'")
    try:
        mcfg = ModelConfig.from_dict(cfg["model"])
    except (TypeError, ValueError) as e:
        raise RunError(f"{path / 'config.json'}: field 'model': {e}") from None
    model = SequenceModel(mcfg)
    weights = path / "model.safetensors"
    if not weights.exists():
        raise RunError(f"{weights}: the model weights are missing; the run has not reached its first evaluation")
    from ..compress.loader import load_weights  # also rebuilds quantized and low-rank runs

    load_weights(model, weights, cfg)
    model.eval()
    vocab = None
    if (path / "vocab.json").exists():
        v = read_json(path / "vocab.json", "the vocabulary")
        if (
            not isinstance(v, dict)
            or not isinstance(v.get("tokens"), list)
            or not all(isinstance(t, str) for t in v["tokens"])
        ):
            raise RunError(f"{path / 'vocab.json'}: field 'tokens' must be a list of strings")
        vocab = v["tokens"]
        if mcfg.input_type == "tokens" and len(vocab) != mcfg.input_size:
            raise RunError(f"{path / 'vocab.json'}: {len(vocab)} tokens but the model expects {mcfg.input_size}")
    norm = read_json(path / "normaliser.json", "the normaliser") if (path / "normaliser.json").exists() else None
    return Run(path, cfg, tcfg, mcfg, model, vocab, norm)
