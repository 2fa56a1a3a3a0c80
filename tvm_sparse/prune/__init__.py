"""Pruning of numpy weights and ONNX models (magnitude, block, N:M) and kernel decomposition."""

from .decompose import (
    Decomposition,
    decompose_kernels,
    energy_profile,
    prune_coefficients,
    quantize_hybrid,
)
from .magnitude import (
    Pattern,
    parse_pattern,
    prune_blocks,
    prune_nm,
    prune_unstructured,
    prune_weight,
)
from .onnx_model import PrunedLayer, UnprunedLayer, prune_onnx

__all__ = [
    "Decomposition",
    "Pattern",
    "PrunedLayer",
    "UnprunedLayer",
    "decompose_kernels",
    "energy_profile",
    "parse_pattern",
    "prune_blocks",
    "prune_coefficients",
    "prune_nm",
    "prune_onnx",
    "prune_unstructured",
    "prune_weight",
    "quantize_hybrid",
]
