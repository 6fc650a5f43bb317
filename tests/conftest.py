from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
# Plain calls run the dispatch's default, the fixed rule that users run (tests/test_dispatch.py tests it).
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def backends() -> list[str]:
    """The lstmkit paths to test: torch and reference always, fused where the kernels are usable."""
    out = ["torch", "reference"]
    try:
        from lstmkit import kernels

        if hasattr(kernels, "available") and kernels.available():
            out.append("fused")
    except ImportError:
        pass
    return out


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny_mystery_args(hidden: int = 16, embedding: int = 8, batch: int = 8, **options: object) -> list[str]:
    """Command-line options for a mystery run that trains in seconds (tests share it)."""
    args = "--length 20 --suspects 4 --red-herrings 1 --n-val 32 --n-test 32 --quiet".split()
    args += ["--hidden-size", str(hidden), "--embedding-size", str(embedding), "--batch-size", str(batch)]
    for k, v in options.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


# ----------------------------------------------------------------------------- tiny run folders (shared)

TINY_MYSTERY = {"T": 12, "suspects": 4, "red_herrings": 1, "n_val": 32, "n_test": 32}


def make_run(
    path: Path,
    *,
    task: str = "mystery",
    task_params: dict[str, Any] | None = None,
    hidden: int = 8,
    layers: int = 1,
    variants: dict[str, Any] | None = None,
    scale: float = 0.5,
    seed: int = 0,
) -> Path:
    """A run folder with random (not trained) weights, written by the run folder's own writers."""
    from lstmkit.data import make_task
    from lstmkit.models import build_model
    from lstmkit.train import TrainConfig, runfolder
    from lstmkit.train.config import model_config_for

    cfg = TrainConfig(
        task=task,
        task_params=dict(TINY_MYSTERY if task_params is None else task_params),
        hidden_size=hidden,
        num_layers=layers,
        embedding_size=6,
        variants=variants or {},
        batch_size=8,
        max_steps=1,
        eval_every=1,
    )
    t = make_task(cfg.task, seed=cfg.seed, **cfg.task_params)
    mcfg = model_config_for(cfg, t)
    torch.manual_seed(seed)
    model = build_model(mcfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    path.mkdir(parents=True, exist_ok=True)
    runfolder.write_config(path, runfolder.new_config(cfg, t, mcfg))
    runfolder.write_data_files(path, t.vocab, t.normaliser)
    runfolder.save_weights(path, model, 0)
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny mystery run trained by ``lstmkit.train.train`` (10 steps, evaluations and checkpoints at
    steps 5 and 10), shared by the whole session: copy it before changing anything in it."""
    from lstmkit.train import TrainConfig, train

    out = tmp_path_factory.mktemp("trained") / "r"
    cfg = TrainConfig(
        task="mystery",
        task_params={"T": 20, "suspects": 4, "red_herrings": 1, "n_val": 32, "n_test": 32},
        hidden_size=8,
        embedding_size=4,
        batch_size=4,
        max_steps=10,
        eval_every=5,
    )
    train(cfg, out, progress=False)
    return out
