"""The run folder: what ``lstmkit train`` (and ``compress``) write and every other command reads.

    config.json          everything needed to rebuild model, task and data pipeline; lstmkit version
    model.safetensors    the best weights on validation (a compressed run: its codes or factors)
    vocab.json / normaliser.json   where the task has one
    train_state.json, train_state/ckpt-*.safetensors   for exact resume (:mod:`.checkpoint`)
    metrics.jsonl        one JSON object per logged step and per evaluation
    result.json          the final numbers; plots/*.png; explore/index.html

This module owns the layout: it reads and writes each of these files (the checkpoint files through
:mod:`lstmkit.train.checkpoint`), and :func:`load_run` turns a folder into a :class:`Run`:
``run = lstmkit.load("runs/mystery")``, with ``run.model`` (eval mode), ``run.config``,
``run.task`` (rebuilt on first use from the saved task config: for ``text``/``csv`` it needs the data
file where it was), ``run.vocab``, ``run.normaliser``, ``run.evaluate(split)``, ``run.sample(...)``.

Every file is written atomically (:mod:`lstmkit.atomic`). Loading reads JSON and safetensors only:
nothing in a run folder can execute code.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .. import __version__, atomic
from ..core import LSTM
from ..data import Task, make_task
from ..data.forecast import ForecastTask
from ..errors import InputError
from ..models import ModelConfig, SequenceModel
from .config import TrainConfig
from .evaluate import evaluate_model
from .sample import sample_text
from .weights import dense_weights, fit_weights

CONFIG_FORMAT = 1


class RunError(InputError):
    """A run folder or file that cannot be used: one line naming the file and the problem."""


# ----------------------------------------------------------------------------- files


def read_json(path: Path | str, what: str) -> Any:
    """The JSON in ``path`` (``what`` names it in errors: missing, unreadable, damaged)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunError(f"{path}: {what} is missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: cannot read {what} ({e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RunError(f"{path}: {what} is not valid JSON ({e.msg} at line {e.lineno}); the file is damaged") from None


def save_tensors(path: Path | str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """Atomically write a safetensors file; returns its SHA-256."""
    seen: set[int] = set()
    plain: dict[str, torch.Tensor] = {}
    for k, v in tensors.items():
        v = v.detach().cpu()
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen:  # tied weights are stored twice
            v = v.clone(memory_format=torch.contiguous_format)
        plain[k] = v.contiguous()
        seen.add(ptr)
    data = st_save(plain, metadata=metadata)
    atomic.write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_tensors(
    path: Path | str, what: str, sha256: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file (never executes code); check its SHA-256 when given."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RunError(f"{path}: {what} is missing") from None
    except OSError as e:
        raise RunError(f"{path}: cannot read {what} ({e})") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise RunError(f"{path}: {what} does not match its recorded checksum; the file is damaged or was changed")
    try:
        tensors = st_load(data)
        meta: dict[str, str] = {}
        if len(data) >= 8:
            n = int.from_bytes(data[:8], "little")
            header = json.loads(data[8 : 8 + n].decode("utf-8"))
            meta = dict(header.get("__metadata__", {}) or {})
    except (SafetensorError, ValueError, UnicodeDecodeError, json.JSONDecodeError, OverflowError) as e:
        raise RunError(
            f"{path}: {what} is not a valid safetensors file ({str(e).splitlines()[0]}); it is truncated or damaged"
        ) from None
    return tensors, meta


def remove_stale_temp(run_dir: Path) -> None:
    """Delete the half-written temporary files a killed process left in the folder."""
    for stale in [*run_dir.glob(atomic.TEMP_GLOB), *run_dir.glob(f"*/{atomic.TEMP_GLOB}")]:
        stale.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- config, vocab, normaliser


def new_config(cfg: TrainConfig, task: Task, model_cfg: ModelConfig) -> dict[str, Any]:
    """The config.json of a new training run."""
    return {
        "format": CONFIG_FORMAT,
        "lstmkit_version": __version__,
        "task": {"name": task.name, "config": task.config()},
        "model": model_cfg.to_dict(),
        "train": cfg.to_dict(),
    }


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    atomic.write_json(run_dir / "config.json", config)


def write_data_files(run_dir: Path, vocab: list[str] | None, normaliser: dict[str, Any] | None) -> None:
    """vocab.json and normaliser.json, where the task has them."""
    if vocab is not None:
        atomic.write_json(run_dir / "vocab.json", {"tokens": list(vocab)})
    if normaliser is not None:
        atomic.write_json(run_dir / "normaliser.json", normaliser)


def write_result(run_dir: Path, result: dict[str, Any]) -> None:
    atomic.write_json(run_dir / "result.json", result)


def config_from_json(saved: Any, run_dir: Path, override: dict[str, Any] | None = None) -> TrainConfig:
    """Validate a run's config.json and return its TrainConfig (errors name the field)."""
    where = run_dir / "config.json"
    if not isinstance(saved, dict):
        raise RunError(f"{where}: expected a JSON object")
    if saved.get("format") != CONFIG_FORMAT:
        raise RunError(f"{where}: unknown config format {saved.get('format')!r} (this lstmkit reads {CONFIG_FORMAT})")
    for key in ("task", "model", "train"):
        if not isinstance(saved.get(key), dict):
            raise RunError(f"{where}: field {key!r} is missing or not an object")
    d = dict(saved["train"])
    for k, v in (override or {}).items():
        if v is not None:
            d[k] = v
    try:
        return TrainConfig.from_dict(d)
    except (TypeError, ValueError) as e:
        raise RunError(f"{where}: {e}") from None


def read_config(run_dir: Path, override: dict[str, Any] | None = None) -> tuple[dict[str, Any], TrainConfig]:
    """config.json of the run folder ``run_dir``, checked, and its TrainConfig (with ``override``)."""
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: not a run folder (no such directory); give the --out folder of 'lstmkit train'")
    if not (run_dir / "config.json").exists():
        raise RunError(f"{run_dir}: not a run folder (config.json is missing)")
    cfg = read_json(run_dir / "config.json", "the run's config")
    return cfg, config_from_json(cfg, run_dir, override)


# ----------------------------------------------------------------------------- weights


def save_weights(run_dir: Path, model: SequenceModel, step: int) -> None:
    """model.safetensors of a training run: the model's state_dict, as torch names it."""
    save_tensors(
        run_dir / "model.safetensors",
        dict(model.state_dict()),
        metadata={"step": str(step), "lstmkit_version": __version__},
    )


def load_weights(model: SequenceModel, path: Path, config: Any = None) -> None:
    """Fill ``model`` from the model.safetensors ``path``; ``config`` is the run's config.json (a dict):
    a quantized or low-rank run is rebuilt into the float weights the model has, and a run quantized
    for the int8 kernel loads with the kernel on."""
    tensors, _ = load_tensors(path, "the model weights")
    comp = config.get("compress") if isinstance(config, dict) else None
    try:
        dense = dense_weights(tensors, comp, model.state_dict(), str(path), str(path.parent / "config.json"))
        fit_weights(model, dense, str(path))
    except InputError as e:
        raise RunError(str(e)) from None
    if isinstance(comp, dict) and comp.get("method") == "quantize" and comp.get("int8_kernel"):
        _enable_int8(model, path)


def _enable_int8(model: SequenceModel, path: Path) -> None:
    """Turn the int8 kernel on for a run quantized with it (float32 with a warning where it cannot run)."""
    if not isinstance(model.rnn, LSTM):
        raise RunError(f"{path.parent / 'config.json'}: 'int8_kernel' is set but the model has no lstmkit LSTM")
    try:
        model.rnn.use_int8()
    except InputError as e:
        warnings.warn(f"{path.parent}: running float32 with the dequantized weights ({e})", stacklevel=3)


# ----------------------------------------------------------------------------- metrics


def start_metrics(run_dir: Path) -> None:
    """An empty metrics.jsonl for a new run."""
    atomic.write_text(run_dir / "metrics.jsonl", "")


def append_metrics(run_dir: Path, records: list[dict[str, Any]]) -> None:
    """Append one JSON line per record to metrics.jsonl and fsync it (a crash may cut the last line)."""
    if not records:
        return
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop metric records after the checkpoint we resume from (they will be written again)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if isinstance(r, dict) and r.get("split") != "test" and int(r.get("step", 0)) <= step:
            keep.append(line)
    atomic.write_text(path, "".join(k + "\n" for k in keep))


# ----------------------------------------------------------------------------- a run as an object


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
            if name == "csv":  # forecasting runs made before the reference was an option corrected seasonal naive
                cfg.setdefault("reference", "seasonal-naive")
            self._task = make_task(name, seed=seed, **cfg)
        return self._task

    def evaluate(self, split: str = "test", batch_size: int = 256) -> dict[str, float]:
        if split not in ("val", "test"):
            raise InputError(f"split must be 'val' or 'test', got {split!r}")
        return evaluate_model(self.model, self.task, split, batch_size)  # type: ignore[arg-type]

    def forecast(self, frame: Any = None, horizon: int | None = None) -> Any:
        """A forecasting run's forecast of the `horizon` steps after the end of every series: a pandas
        DataFrame with [id], date, median and one column per quantile (``q0.1`` …).

        `frame`: newer data (a DataFrame or a CSV path with the training file's columns) whose newest
        rows are the context; default: the run's own data. The model is not retrained.
        """
        task = self.task
        if not isinstance(task, ForecastTask):
            raise InputError(
                f"{self.path}: forecasting needs a forecasting run (lstmkit train csv), this one is {task.name}"
            )
        model = self.model
        model.eval()
        return task.forecast_frame(lambda b: model(b.x), frame, horizon)

    def sample(
        self,
        prompt: str = "",
        length: int = 200,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
    ) -> str:
        """Continue ``prompt`` (a language-model run only; see :func:`lstmkit.train.sample.sample_text`)."""
        cfg = self.model_config
        if (
            cfg.target != "class_steps"
            or cfg.input_type != "tokens"
            or cfg.output_size != cfg.input_size
            or self.vocab is None
        ):
            raise InputError(
                f"{self.path}: sampling needs a language-model run (lstmkit train text), "
                f"this one is {self.config['task']['name']}"
            )
        return sample_text(self.model, self.vocab, prompt, length, temperature, top_k, seed)


def load_run(run_dir: str | Path) -> Run:
    """The run folder ``run_dir`` as a :class:`Run` (compressed runs included); RunError names the
    file and the problem where the folder cannot be used."""
    path = Path(run_dir)
    cfg, tcfg = read_config(path)
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
