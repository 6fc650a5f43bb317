"""Weight quantization with one scale per output row (NumPy only; torch-free).

For a weight W (R, C) and b bits (q_max = 2^(b-1) − 1: 127 for int8, 7 for int4)::

    s_r = max_c |W_rc| / q_max        (s_r = 1 for an all-zero row, whose codes are all 0)
    q_rc = clip(round(W_rc / s_r), −q_max, q_max)   round half to even (np.rint)
    W_rc ≈ q_rc · s_r

Symmetric, so 0 stays exactly 0 (pruned weights remain pruned). int4 codes are packed two per
byte: column 2j in the low nibble and 2j+1 in the high nibble, each stored as q + 8 (1…15).
A matrix–vector product never needs the float matrix: x Wᵀ = (x qᵀ) · s, the scale applied per
output after the product.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

BITS = (8, 4)


def qmax(bits: int) -> int:
    if bits not in BITS:
        raise InputError(f"quantize: bits must be 8 or 4, got {bits!r}")
    return 2 ** (bits - 1) - 1


def quantize_rows(w: np.ndarray, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """W (R, C) float -> (q (R, C) int8 in [−q_max, q_max], s (R,) float32)."""
    if w.ndim != 2:
        raise ValueError(f"quantize: expected a 2-D weight matrix, got shape {w.shape}")
    w = np.asarray(w, dtype=np.float32)
    if not np.all(np.isfinite(w)):
        raise InputError("quantize: the weights contain NaN or inf; the run is damaged")
    m = qmax(bits)
    amax = np.abs(w).max(axis=1) if w.shape[1] else np.zeros(w.shape[0], np.float32)
    s = np.where(amax > 0, amax / m, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / s[:, None]), -m, m).astype(np.int8)
    return q, s


def dequantize_rows(q: np.ndarray, s: np.ndarray) -> np.ndarray:
    """(q (R, C), s (R,)) -> W (R, C) float32."""
    return q.astype(np.float32) * s.astype(np.float32)[:, None]


def pack_int4(q: np.ndarray) -> np.ndarray:
    """int8 codes (R, C) in [−7, 7] -> uint8 (R, ⌈C/2⌉), two codes per byte."""
    if q.ndim != 2 or q.size and (q.min() < -7 or q.max() > 7):
        raise ValueError("pack_int4: expected a 2-D array of codes in [-7, 7]")
    R, C = q.shape
    u = (q.astype(np.int16) + 8).astype(np.uint8)
    if C % 2:
        u = np.concatenate([u, np.full((R, 1), 8, np.uint8)], axis=1)
    return (u[:, 0::2] | (u[:, 1::2] << 4)).astype(np.uint8)


def unpack_int4(packed: np.ndarray, cols: int) -> np.ndarray:
    """uint8 (R, ⌈C/2⌉) -> int8 codes (R, C)."""
    lo = (packed & 0x0F).astype(np.int8) - 8
    hi = (packed >> 4).astype(np.int8) - 8
    out = np.empty((packed.shape[0], packed.shape[1] * 2), np.int8)
    out[:, 0::2] = lo
    out[:, 1::2] = hi
    return out[:, :cols]


__all__ = ["BITS", "dequantize_rows", "pack_int4", "qmax", "quantize_rows", "unpack_int4"]
