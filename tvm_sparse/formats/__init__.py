"""Sparse weight containers (pure numpy, validated)."""

from .bsr import BSRMatrix, block_nonzero_mask, pad_to_blocks, parse_block_shape
from .errors import FormatError

__all__ = ["BSRMatrix", "FormatError", "block_nonzero_mask", "pad_to_blocks", "parse_block_shape"]
