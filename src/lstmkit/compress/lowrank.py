"""Low-rank factorisation of W_ih and W_hh by truncated SVD, then fine-tuning of the factors.

For each matrix W (4H, C) = U Σ Vᵀ, keep the r largest singular values:
``W ≈ A B`` with ``A = U_r Σ_r^½`` (4H, r) and ``B = Σ_r^½ V_rᵀ`` (r, C), which has r·(4H + C)
parameters instead of 4H·C, so it is smaller only for r < 4H·C / (4H + C). The rank is given
(``rank=r``, the same for every matrix, or a dict per name) or chosen per matrix as the smallest r
whose singular values keep a fraction ``energy`` of Σσ² (Eckart–Young: the best rank-r
approximation in the Frobenius norm). Fine-tuning trains A and B (the product is never a free
matrix). The run folder stores ``<name>.u`` = A and ``<name>.v`` = B; it loads as the dense product.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..errors import InputError
from ..models import SequenceModel
from .common import check_out, count_params, finetune, float_lstm_source, write_run


def energy_rank(s: Tensor, energy: float) -> int:
    """The smallest r with Σ_{k<r} σ_k² ≥ energy · Σ σ² (s sorted descending)."""
    if not 0.0 < energy <= 1.0:
        raise InputError(f"lowrank: energy must be in (0, 1], got {energy}")
    e = (s.double() ** 2).cumsum(0)
    total = float(e[-1])
    if total == 0.0:
        return 1
    return int(torch.searchsorted(e, torch.tensor(energy * total, dtype=e.dtype) * (1 - 1e-12)).item()) + 1


def factorise(w: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """W (R, C) -> A (R, r), B (r, C) with A B the best rank-r approximation of W."""
    R, C = w.shape
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise InputError(f"lowrank: rank must be a positive int, got {rank!r}")
    if rank > min(R, C):
        raise InputError(f"lowrank: rank {rank} is larger than the {R}x{C} matrix allows (at most {min(R, C)})")
    U, S, Vh = torch.linalg.svd(w.detach().double(), full_matrices=False)
    root = S[:rank].sqrt()
    return (U[:, :rank] * root).to(w.dtype).contiguous(), (root[:, None] * Vh[:rank]).to(w.dtype).contiguous()


class LowRank(nn.Module):
    """A parametrization: the weight is A @ B (the original tensor is ignored)."""

    def __init__(self, a: Tensor, b: Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a.clone())
        self.b = nn.Parameter(b.clone())

    def forward(self, _: Tensor) -> Tensor:
        return self.a @ self.b


def target_names(model: SequenceModel) -> list[str]:
    return [n for n, p in model.rnn.named_parameters() if n.startswith(("weight_ih", "weight_hh"))]


def lowrank_run(
    run: Any,
    out: str | Path,
    *,
    rank: int | dict[str, int] | None = None,
    energy: float | None = None,
    steps: int = 200,
    lr: float = 1e-3,
    batch_size: int | None = None,
    seed: int = 0,
    evaluate: bool = True,
) -> dict[str, Any]:
    """Factorise W_ih and W_hh of ``run`` (``rank`` or ``energy``), fine-tune ``steps`` steps, write ``out``."""
    if (rank is None) == (energy is None):
        raise InputError("lowrank: give exactly one of --rank and --energy")
    src = float_lstm_source(run, "lowrank", "factorise")
    out = check_out(src, out)
    model = SequenceModel(src.model_config)
    model.load_state_dict(src.model.state_dict())
    before = count_params(model)
    ranks: dict[str, int] = {}
    for name in target_names(model):
        w = getattr(model.rnn, name).detach()
        if isinstance(rank, dict):
            if name not in rank:
                raise InputError(f"lowrank: no rank given for {name!r}; the rank dict needs every W_ih and W_hh")
            r = rank[name]
        elif rank is not None:
            r = rank
        else:
            assert energy is not None
            r = energy_rank(torch.linalg.svdvals(w.double()), energy)
        a, b = factorise(w, r)
        parametrize.register_parametrization(model.rnn, name, LowRank(a, b), unsafe=True)
        ranks[name] = r
    factor_params = [p for n, p in model.named_parameters() if not n.endswith(".original")]
    info = finetune(
        model,
        src.task,
        steps=steps,
        lr=lr,
        batch_size=batch_size or src.train_config.batch_size,
        seed=seed,
        params=factor_params,
    )
    saved: dict[str, Tensor] = {}
    dense = SequenceModel(src.model_config)
    dense_state: dict[str, Tensor] = {}
    for k, v in model.state_dict().items():
        if ".parametrizations." in k:
            continue
        saved[k] = v.detach().clone()
        dense_state[k] = saved[k]
    for name in ranks:
        lr_mod: Any = model.rnn.parametrizations[name][0]  # type: ignore[index]
        a, b = lr_mod.a.detach().clone(), lr_mod.b.detach().clone()
        saved[f"rnn.{name}.u"], saved[f"rnn.{name}.v"] = a, b
        dense_state[f"rnn.{name}"] = a @ b
    dense.load_state_dict(dense_state)
    dense.eval()
    after = (
        before
        - sum(getattr(src.model.rnn, n).numel() for n in ranks)
        + sum(saved[f"rnn.{n}.u"].numel() + saved[f"rnn.{n}.v"].numel() for n in ranks)
    )
    return write_run(
        src,
        out,
        src.model_config,
        saved,
        {"method": "lowrank", "ranks": {f"rnn.{n}": r for n, r in ranks.items()}, "energy": energy, "steps": steps},
        dense,
        evaluate,
        {"params": after, "source_params": before, "finetune": info},
    )


__all__ = ["energy_rank", "factorise", "lowrank_run"]
