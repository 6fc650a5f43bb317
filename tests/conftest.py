from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
# Plain calls run torch's LSTM in the tests (the measured choice depends on the machine and its load);
# tests/test_dispatch.py tests the measured dispatch itself. Subprocesses inherit both.
os.environ.setdefault("LSTMKIT_DISPATCH", "torch")
_HERE = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("LSTMKIT_DISPATCH_CACHE", os.path.join(_HERE, "..", ".pytest_cache", "dispatch.json"))
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
