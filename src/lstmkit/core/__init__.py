"""The core: the reference equations, LSTMCell, LSTM, variants, gate traces and the dispatch point."""

from .lstm import LSTM, LSTMCell, Trace

__all__ = ["LSTM", "LSTMCell", "Trace"]
