"""Pruning of numpy weights and ONNX models (magnitude, block, N:M)."""

from .magnitude import Pattern, parse_pattern, prune_blocks, prune_nm, prune_unstructured, prune_weight
from .onnx_model import PrunedLayer, prune_onnx

__all__ = [
    "Pattern",
    "PrunedLayer",
    "parse_pattern",
    "prune_blocks",
    "prune_nm",
    "prune_onnx",
    "prune_unstructured",
    "prune_weight",
]
