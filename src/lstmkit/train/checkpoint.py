"""The training state of a run folder, for exact resume.

A checkpoint is one safetensors file under ``train_state/`` holding the model, the optimizer's
tensors and torch's RNG state; ``train_state.json`` holds the rest (step, optimizer scalars and
param groups, scheduler, the data generator's state, early stopping, elapsed time) and points at the
newest complete checkpoint with its SHA-256. It is replaced last, so a crash at any moment leaves
the previous checkpoint in force. Loading never unpickles: tensors come from safetensors, everything
else from JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import atomic
from .runfolder import RunError, load_tensors, read_json, save_tensors

STATE_VERSION = 1

__all__ = ["STATE_VERSION", "last_checkpoint_step", "load_checkpoint", "restore_checkpoint", "save_checkpoint"]


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = val
            else:
                scalars[f"{idx}.{key}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        if not name.startswith("optim."):
            continue
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = t
    for name, val in info.get("scalars", {}).items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = val
    opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})


def _rng_to_json(rng: np.random.Generator) -> dict[str, Any]:
    st = rng.bit_generator.state
    return json.loads(json.dumps(st, default=int))  # type: ignore[no-any-return]


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LambdaLR,
    rng: np.random.Generator,
    extra: dict[str, Any],
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the checkpoint of ``step`` and point train_state.json at it; keep the newest two.
    ``extra_tensors`` (e.g. the state carried by stateful training, ``carry.0``…) are saved beside the
    model's and come back from :func:`load_checkpoint` under the same names."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for k, v in (extra_tensors or {}).items():
        tensors[k] = v.detach().contiguous().clone()
    opt_t, opt_info = optimizer_to_tensors(opt)
    tensors.update(opt_t)
    tensors["rng.torch"] = torch.get_rng_state()
    name = f"train_state/ckpt-{step:09d}.safetensors"
    info = {
        "version": STATE_VERSION,
        "step": step,
        "checkpoint": name,
        "optimizer": opt_info,
        "scheduler": sched.state_dict(),
        "data_rng": _rng_to_json(rng),
        **extra,
    }
    info["scheduler"].pop("lr_lambdas", None)
    sha = save_tensors(run_dir / name, tensors)
    info["sha256"] = sha
    atomic.write_json(run_dir / "train_state.json", info)
    # keep the newest two checkpoints; older ones are no longer pointed at
    ckpts = sorted((run_dir / "train_state").glob("ckpt-*.safetensors"))
    for old in ckpts[:-2]:
        if old.name != Path(name).name:
            old.unlink(missing_ok=True)


def load_checkpoint(run_dir: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """train_state.json and the tensors of the checkpoint it points at (its SHA-256 checked)."""
    info = read_json(run_dir / "train_state.json", "the training state")
    if not isinstance(info, dict) or info.get("version") != STATE_VERSION:
        version = info.get("version") if isinstance(info, dict) else None
        raise RunError(
            f"{run_dir / 'train_state.json'}: unknown training-state version {version!r} "
            f"(this lstmkit reads {STATE_VERSION})"
        )
    name = info.get("checkpoint")
    if not isinstance(name, str) or "/" not in name or ".." in name:
        raise RunError(f"{run_dir / 'train_state.json'}: field 'checkpoint' is not a checkpoint file name")
    tensors, _ = load_tensors(run_dir / name, "the checkpoint", sha256=info.get("sha256"))
    return info, tensors


def restore_checkpoint(
    info: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LambdaLR,
    rng: np.random.Generator,
) -> int:
    """Put a loaded checkpoint back into the model, optimizer, scheduler, torch's RNG and the data
    generator ``rng``; returns its step."""
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer_from_tensors(opt, tensors, info["optimizer"])
    sched_state = dict(info["scheduler"])
    sched_state["lr_lambdas"] = [None] * len(opt.param_groups)  # the lambda comes from the config
    sched.load_state_dict(sched_state)
    torch.set_rng_state(tensors["rng.torch"])
    rng.bit_generator.state = info["data_rng"]
    return int(info["step"])


def last_checkpoint_step(run_dir: Path) -> int:
    """The step of the checkpoint train_state.json points at (0 when there is none or it is unreadable)."""
    try:
        return int(json.loads((run_dir / "train_state.json").read_text())["step"])
    except Exception:
        return 0
