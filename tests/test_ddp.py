"""Data-parallel training with torchrun (2 processes, gloo, loopback) gives the same weights as one
process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import tiny_mystery_args
from safetensors.torch import load_file

from lstmkit.train import TrainConfig, train

ARGS = tiny_mystery_args(max_steps=12, eval_every=6, lr=0.005)


@pytest.mark.slow  # torchrun starts two processes and trains three times
def test_two_processes_match_one(tmp_path):
    env = {**os.environ, "LSTMKIT_NO_KERNELS": "1", "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "lstmkit.cli",
        "train",
        "mystery",
        "--out",
        str(tmp_path / "ddp"),
        *ARGS,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = TrainConfig(
        task="mystery",
        task_params={"T": 20, "suspects": 4, "red_herrings": 1, "n_val": 32, "n_test": 32},
        hidden_size=16,
        embedding_size=8,
        batch_size=8,
        max_steps=12,
        eval_every=6,
        lr=0.005,
    )
    train(cfg, tmp_path / "one", progress=False)
    a = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    b = load_file(str(tmp_path / "one" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-5, rtol=1e-4), (k, (a[k] - b[k]).abs().max())
    import json

    res = json.loads((tmp_path / "ddp" / "result.json").read_text())
    assert res["world_size"] == 2 and res["per_process_batch"] == 4
