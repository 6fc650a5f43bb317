"""Pruning: unstructured magnitude pruning on Zhu & Gupta's gradual schedule, and structured
removal of whole hidden units (H shrinks, so every product gets smaller).

Unstructured (Zhu & Gupta 2017, "To prune, or not to prune"): during fine-tuning, at steps
t = t_0, t_0 + Δt, …, t_0 + nΔt, each pruned matrix keeps its largest-magnitude weights and the
rest are set (and held) to 0, at sparsity

    s_t = s_f + (s_i − s_f) (1 − (t − t_0) / (n Δt))³

rising fast at first and flattening out at the final sparsity s_f; the last steps fine-tune with
the mask fixed. The pruned matrices are W_ih and W_hh (and W_hr) of every layer, each to the same
sparsity (layer-wise ranking). The run stores dense float weights with exact zeros.

Structured: each layer keeps the same number of hidden units (``ModelConfig.hidden_size`` is
shared), chosen by an importance score per unit:

* ``"weights"``: the L2 norm of every weight that reads or writes the unit (its four gate rows in
  W_ih and W_hh, its column in W_hh, in the next layer's W_ih or in the head);
* ``"activity"``: on validation data, the mean |h_t| of the unit times the norm of its outgoing
  weights: a unit whose output is ~0 (output gate closed or memory empty) can go whatever its
  weights are.

Removing unit j deletes rows j, H+j, 2H+j, 3H+j of W_ih, W_hh and both biases, column j of W_hh,
of the next layer's W_ih and of the head, column j of the peepholes and the unit's layer-norm
entries; then the model is fine-tuned.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError
from ..models import SequenceModel
from .common import check_out, count_params, finetune, float_lstm_source, write_run


def check_sparsity(sparsity: Any) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= float(sparsity) < 1.0:
        raise InputError(f"prune: sparsity must be in [0, 1), got {sparsity!r}")
    return float(sparsity)


def zhu_gupta(step: int, s_final: float, begin: int, end: int, every: int, s_init: float = 0.0) -> float:
    """Sparsity at ``step`` on the cubic schedule from ``s_init`` at ``begin`` to ``s_final`` at ``end``,
    updated every ``every`` steps (constant in between)."""
    if step < begin:
        return 0.0
    if end <= begin or step >= end:
        return s_final
    t = begin + ((step - begin) // every) * every
    return s_final + (s_init - s_final) * (1.0 - (t - begin) / (end - begin)) ** 3


def magnitude_mask(w: Tensor, sparsity: float) -> Tensor:
    """A 0/1 mask zeroing the round(sparsity · n) smallest |w| (ties broken by position)."""
    n = w.numel()
    k = int(round(sparsity * n))
    mask = torch.ones(n, dtype=w.dtype, device=w.device)
    if k > 0:
        idx = torch.argsort(w.detach().abs().flatten(), stable=True)[:k]
        mask[idx] = 0
    return mask.view_as(w)


def prunable(model: SequenceModel) -> list[str]:
    return [
        f"rnn.{n}" for n, _ in model.rnn.named_parameters() if n.startswith(("weight_ih", "weight_hh", "weight_hr"))
    ]


def sparsity_of(model: SequenceModel) -> dict[str, float]:
    sd = model.state_dict()
    return {n: float((sd[n] == 0).sum()) / sd[n].numel() for n in prunable(model)}


def prune_run(
    run: Any,
    out: str | Path,
    *,
    sparsity: float | None = None,
    units: float | None = None,
    score: str = "weights",
    steps: int = 200,
    lr: float = 1e-3,
    batch_size: int | None = None,
    seed: int = 0,
    evaluate: bool = True,
) -> dict[str, Any]:
    """Prune ``run`` into ``out``: ``sparsity`` (unstructured, gradual, then fine-tuning) or ``units``
    (the fraction of hidden units to remove, structured, then fine-tuning)."""
    if (sparsity is None) == (units is None):
        raise InputError("prune: give exactly one of --sparsity (unstructured) and --units (structured)")
    src = float_lstm_source(run, "prune", "prune")
    out = check_out(src, out)
    bs = batch_size or src.train_config.batch_size
    before = count_params(src.model)
    if sparsity is not None:
        s_f = check_sparsity(sparsity)
        model = SequenceModel(src.model_config)
        model.load_state_dict(src.model.state_dict())
        names = prunable(model)
        params = dict(model.named_parameters())
        masks: dict[str, Tensor] = {}
        end = max(1, int(steps * 0.75))
        every = max(1, end // 10)

        def apply(step: int) -> None:
            if step == end or (step <= end and step % every == 0):
                s = zhu_gupta(step, s_f, 0, end, every)
                for n in names:  # pruned weights are 0, so they rank lowest: the pruned set only grows
                    masks[n] = magnitude_mask(params[n].data, s)
            for n in names:
                params[n].data.mul_(masks[n])

        with torch.no_grad():
            apply(0 if steps else end)
        info = finetune(
            model, src.task, steps=steps, lr=lr, batch_size=bs, seed=seed, after_step=apply, select_from=end
        )
        model_cfg = src.model_config
        settings: dict[str, Any] = {"method": "prune", "kind": "unstructured", "sparsity": s_f, "steps": steps}
        extra = {
            "sparsity": sparsity_of(model),
            "params_nonzero": before - sum(int((model.state_dict()[n] == 0).sum()) for n in names),
            "source_params": before,
            "finetune": info,
        }
    else:
        assert units is not None
        frac = check_sparsity(units)
        if score not in ("weights", "activity"):
            raise InputError(f"prune: --score must be 'weights' or 'activity', got {score!r}")
        if src.model_config.proj_size:
            raise InputError("prune: structured pruning of a model with a projection (proj_size) is not supported")
        H = src.model_config.hidden_size
        keep_n = H - int(round(frac * H))
        if keep_n < 1:
            raise InputError(f"prune: removing {frac:.0%} of {H} units leaves none; give a smaller --units")
        scores = unit_scores(src.model, src, score)
        keeps = [torch.sort(torch.argsort(sc, descending=True, stable=True)[:keep_n]).values for sc in scores]
        model_cfg = dataclasses.replace(src.model_config, hidden_size=keep_n)
        if model_cfg.tie_weights:
            raise InputError("prune: structured pruning of a model with tied weights is not supported")
        model = SequenceModel(model_cfg)
        model.load_state_dict(shrink_state(src.model.state_dict(), keeps, H, src.model_config.num_layers))
        info = finetune(model, src.task, steps=steps, lr=lr, batch_size=bs, seed=seed)
        settings = {
            "method": "prune",
            "kind": "structured",
            "units": frac,
            "score": score,
            "steps": steps,
            "kept_units": [k.tolist() for k in keeps],
        }
        extra = {"source_params": before, "params": count_params(model), "finetune": info}
    model.eval()
    tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return write_run(src, out, model_cfg, tensors, settings, model, evaluate, extra)


@torch.no_grad()
def unit_scores(model: SequenceModel, run: Any, score: str) -> list[Tensor]:
    """Per layer, an importance score (H,) for each hidden unit (see the module docstring)."""
    sd = model.state_dict()
    L, H = model.cfg.num_layers, model.cfg.hidden_size
    out = []
    for k in range(L):
        w = torch.zeros(H)
        for name in (f"rnn.weight_ih_l{k}", f"rnn.weight_hh_l{k}"):
            w += (sd[name].view(4, H, -1) ** 2).sum(dim=(0, 2))  # the unit's gate rows
        nxt = sd[f"rnn.weight_ih_l{k + 1}"] if k + 1 < L else sd["head.weight"]
        outgoing = (sd[f"rnn.weight_hh_l{k}"] ** 2).sum(0) + (nxt**2).sum(0)
        w += outgoing
        if score == "weights":
            out.append(w.sqrt())
        else:
            batch = run.task.eval_batches("val", 256)[0]
            _, trace = model(batch.x, batch.lengths, return_gates=True)
            act = trace.h[k].abs().mean(dim=(0, 1))  # (H,)
            out.append(act * outgoing.sqrt())
    return out


def shrink_state(sd: dict[str, Tensor], keeps: list[Tensor], H: int, L: int) -> dict[str, Tensor]:
    """The state_dict with only the kept units of each layer (see the module docstring)."""
    new = dict(sd)
    for k, keep in enumerate(keeps):
        gate_rows = torch.cat([keep + g * H for g in range(4)])
        for name in list(new):
            if not name.startswith("rnn.") or not name.endswith(f"_l{k}"):
                continue
            t = new[name]  # (the previous layer may already have cut this layer's W_ih columns)
            base = name[4:].rsplit("_l", 1)[0]
            if base in (
                "weight_ih",
                "bias_ih",
                "bias_hh",
                "layer_norm_ih_weight",
                "layer_norm_ih_bias",
                "layer_norm_hh_weight",
                "layer_norm_hh_bias",
            ):
                t = t[gate_rows]
            elif base == "weight_hh":
                t = t[gate_rows][:, keep]
            elif base in ("weight_peephole",):
                t = t[:, keep]
            elif base in ("layer_norm_c_weight", "layer_norm_c_bias"):
                t = t[keep]
            new[name] = t.contiguous()
        if k + 1 < L:
            new[f"rnn.weight_ih_l{k + 1}"] = new[f"rnn.weight_ih_l{k + 1}"][:, keep].contiguous()
        else:
            new["head.weight"] = new["head.weight"][:, keep].contiguous()
    return new


__all__ = ["check_sparsity", "magnitude_mask", "prune_run", "shrink_state", "sparsity_of", "unit_scores", "zhu_gupta"]
