"""Relax passes (``tvm.transform.Pass`` objects)."""

from .conv import ConvKernels
from .decomposed_conv import DecomposedConvKernels
from .dense_matmul import DenseMatmulKernels
from .sparsify import SparsifyWeights

__all__ = ["ConvKernels", "DecomposedConvKernels", "DenseMatmulKernels", "SparsifyWeights"]
