"""lstmkit: the LSTM with first-class gates.

The input gate notes what is worth remembering, the forget gate lets old memory fade, the cell
holds the memory, and the output gate recalls what is needed now. lstmkit gives you that cell
exactly and fast, trains it on the long-memory problems, shows what each gate does, and ships it
small.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .core import LSTM, LSTMCell, Trace

    SAFE_GLOBALS: list[type[Any]]

__version__ = "0.1.0"

__all__ = ["LSTM", "LSTMCell", "SAFE_GLOBALS", "Trace", "__version__", "load"]

# SAFE_GLOBALS: the classes to allow when loading a saved model that holds lstmkit modules,
#     with torch.serialization.safe_globals([MyModel, nn.Embedding, ..., *lstmkit.SAFE_GLOBALS]):
#         model = torch.load(path, weights_only=True)
# ([lstmkit.LSTM, lstmkit.LSTMCell]: their saved state holds tensors and plain values only.)


def __getattr__(name: str) -> Any:
    # torch is imported on first use, so that `lstmkit.runtime` (NumPy only) imports without it
    if name in ("LSTM", "LSTMCell", "Trace"):
        from . import core

        return getattr(core, name)
    if name == "SAFE_GLOBALS":
        from .core import LSTM, LSTMCell

        return [LSTM, LSTMCell]
    raise AttributeError(f"module 'lstmkit' has no attribute {name!r}")


def load(run_dir: Any) -> Any:
    """Load a trained run folder: its model, config and vocabulary/normaliser (see lstmkit.train)."""
    from .train import load_run

    return load_run(run_dir)
