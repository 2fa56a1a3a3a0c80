"""Sparse weight containers (pure numpy, validated)."""

from .bsr import BSRMatrix, block_nonzero_mask, pad_to_blocks, parse_block_shape
from .errors import FormatError
from .nm import NMMatrix, nm_violations

__all__ = [
    "BSRMatrix",
    "FormatError",
    "NMMatrix",
    "block_nonzero_mask",
    "nm_violations",
    "pad_to_blocks",
    "parse_block_shape",
]
