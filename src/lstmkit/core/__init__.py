"""The core: the reference equations (functional), the cell (cell), the layer (lstm), the variants
(variants), gate traces (trace), the int8 inference path (int8), streaming (stream) and the dispatch
rule that picks the path of a plain call (dispatch)."""

from .cell import LSTMCell
from .lstm import LSTM
from .stream import Stream
from .trace import Trace

__all__ = ["LSTM", "LSTMCell", "Stream", "Trace"]
