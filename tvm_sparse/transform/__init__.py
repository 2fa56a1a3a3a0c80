"""Relax passes (``tvm.transform.Pass`` objects)."""

from .conv import ConvKernels
from .dense_matmul import DenseMatmulKernels
from .sparsify import SparsifyWeights

__all__ = ["ConvKernels", "DenseMatmulKernels", "SparsifyWeights"]
