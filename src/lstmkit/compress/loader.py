"""Loading the weights of any run folder, compressed or not (the hook ``lstmkit.train.run`` calls).

``load_weights(model, path, config)`` fills ``model`` from ``path`` (model.safetensors) given the run's
config.json: quantized runs store int8/int4 codes and row scales, low-rank runs store the factors of
each factorised matrix; both are rebuilt into the float weights the model has. Every other run
(pruned, distilled, uncompressed) is an ordinary state_dict and loads as before. Reads safetensors
only: nothing can execute code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..train.checkpoint import RunError, load_tensors
from ..train.run import fit_weights


def load_weights(model: nn.Module, path: str | Path, config: Any) -> None:
    """Fill ``model`` from the run's model.safetensors ``path``; ``config`` is its config.json (a dict)."""
    path = Path(path)
    comp = config.get("compress") if isinstance(config, dict) else None
    method = comp.get("method") if isinstance(comp, dict) else None
    if method not in ("quantize", "lowrank"):
        from ..train.run import load_weights_into

        load_weights_into(model, path)
        return
    assert isinstance(comp, dict)
    where = str(path)
    tensors, _ = load_tensors(path, "the model weights")
    want = model.state_dict()
    try:
        if method == "quantize":
            from .quantize import dequantize_saved

            names, bits = comp.get("quantized"), comp.get("bits")
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or bits not in (8, 4):
                raise RunError(
                    f"{path.parent / 'config.json'}: field 'compress' needs 'quantized' names and bits 8 or 4"
                )
            merged = comp.get("merged_biases", [])
            if not isinstance(merged, list) or not all(isinstance(n, str) and ".bias_hh_l" in n for n in merged):
                raise RunError(f"{path.parent / 'config.json'}: field 'compress.merged_biases' must list bias_hh names")
            dense = dequantize_saved(tensors, names, int(bits), where, merged)
            for n in names:  # int4 unpacks to an even number of columns
                if n in want and dense[n].dim() == 2 and dense[n].shape[1] > want[n].shape[1]:
                    dense[n] = dense[n][:, : want[n].shape[1]].contiguous()
        else:
            from .lowrank import dense_from_factors

            dense = dense_from_factors(tensors, comp, where)
    except RunError:
        raise
    except ValueError as e:
        raise RunError(str(e)) from None
    fit_weights(model, dense, path)
    if method == "quantize" and comp.get("int8_kernel"):
        _enable_int8(model, path)


def _enable_int8(model: nn.Module, path: Path) -> None:
    """Turn the int8 kernel on for a run quantized with it (float32 with a warning where it cannot run)."""
    import warnings

    rnn = getattr(model, "rnn", None)
    use = getattr(rnn, "use_int8", None)
    if use is None:
        raise RunError(f"{path.parent / 'config.json'}: 'int8_kernel' is set but the model has no lstmkit LSTM")
    try:
        use()
    except ValueError as e:
        warnings.warn(f"{path.parent}: running float32 with the dequantized weights ({e})", stacklevel=3)


def weights_on_disk(run_dir: str | Path) -> int:
    """Bytes of the run's model.safetensors."""
    return (Path(run_dir) / "model.safetensors").stat().st_size


def load_any_run(run_dir: str | Path) -> Any:
    """:func:`lstmkit.train.load_run` for every run folder, compressed ones included.

    Once ``lstmkit.train.run.load_run`` calls :func:`load_weights` (the one-line hook) this is the
    same as ``load_run``; until then it rebuilds quantized and low-rank runs itself."""
    from ..models import ModelConfig, SequenceModel
    from ..train.checkpoint import read_json
    from ..train.loop import config_from_json
    from ..train.run import Run, load_run

    path = Path(run_dir)
    cfg = read_json(path / "config.json", "the run's config") if (path / "config.json").exists() else None
    comp = cfg.get("compress") if isinstance(cfg, dict) else None
    if not isinstance(comp, dict) or comp.get("method") not in ("quantize", "lowrank"):
        return load_run(path)
    assert isinstance(cfg, dict)
    tcfg = config_from_json(cfg, path)
    try:
        mcfg = ModelConfig.from_dict(cfg["model"])
    except (TypeError, ValueError) as e:
        raise RunError(f"{path / 'config.json'}: field 'model': {e}") from None
    model = SequenceModel(mcfg)
    load_weights(model, path / "model.safetensors", cfg)
    model.eval()
    vocab = None
    if (path / "vocab.json").exists():
        v = read_json(path / "vocab.json", "the vocabulary")
        if not isinstance(v, dict) or not isinstance(v.get("tokens"), list):
            raise RunError(f"{path / 'vocab.json'}: field 'tokens' must be a list of strings")
        vocab = [str(t) for t in v["tokens"]]
    norm = read_json(path / "normaliser.json", "the normaliser") if (path / "normaliser.json").exists() else None
    return Run(path, cfg, tcfg, mcfg, model, vocab, norm)


__all__ = ["load_any_run", "load_weights", "weights_on_disk"]
