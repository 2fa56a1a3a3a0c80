"""Local quantization (Cambricon-S): every block of a block-sparse weight has its own scale.

A block's values are symmetric ``b``-bit integers times the block's float
scale (its largest magnitude over ``2^(b-1) - 1``). Blocks adapt to their own
range, so the error is lower than with one scale per tensor or per row, for
one float per stored block. All-zero blocks keep scale 0 and stay zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..formats import FormatError


@dataclass(frozen=True)
class BlockQuantized:
    bits: int
    block_shape: tuple[int, int]
    scales: np.ndarray  # float32 [ceil(rows / r), ceil(cols / c)], 0 for all-zero blocks
    codes: np.ndarray  # int16 [rows, cols], |code| <= 2^(bits-1) - 1

    @property
    def stored_blocks(self) -> int:
        return int(np.count_nonzero(self.scales))

    def dequantize(self) -> np.ndarray:
        r, c = self.block_shape
        rows, cols = self.codes.shape
        per_value = np.repeat(np.repeat(self.scales, r, axis=0), c, axis=1)[:rows, :cols]
        return (self.codes * per_value).astype(np.float32)


def quantize_blocks(weight: np.ndarray, block_shape: tuple[int, int], bits: int) -> BlockQuantized:
    """Quantize ``weight`` (2-D) with one symmetric scale per ``block_shape`` block (``bits`` from 2 to 16)."""
    if not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 16:
        raise FormatError(f"local quantization bits must be an integer from 2 to 16, got {bits!r}")
    w = np.asarray(weight, np.float32)
    if w.ndim != 2:
        raise FormatError(f"local quantization takes a 2-D weight, got shape {w.shape}")
    r, c = block_shape
    rows, cols = w.shape
    padded = np.zeros((-(-rows // r) * r, -(-cols // c) * c), np.float32)
    padded[:rows, :cols] = w
    grid = padded.reshape(padded.shape[0] // r, r, padded.shape[1] // c, c)
    levels = (1 << (bits - 1)) - 1
    scales = (np.abs(grid).max(axis=(1, 3)) / levels).astype(np.float32)
    safe = np.where(scales > 0, scales, 1.0)[:, None, :, None]
    codes = np.clip(np.rint(grid / safe), -levels, levels).reshape(padded.shape)[:rows, :cols]
    return BlockQuantized(int(bits), (r, c), scales, codes.astype(np.int16))
