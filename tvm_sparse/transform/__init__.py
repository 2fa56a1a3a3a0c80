"""Relax passes (``tvm.transform.Pass`` objects)."""

from .dense_matmul import DenseMatmulKernels
from .sparsify import SparsifyWeights

__all__ = ["DenseMatmulKernels", "SparsifyWeights"]
