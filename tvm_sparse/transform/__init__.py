"""Relax passes (``tvm.transform.Pass`` objects)."""

from .channel_shrink import ShrinkChannels
from .conv import ConvKernels
from .decomposed_conv import DecomposedConvKernels
from .dense_matmul import DenseMatmulKernels
from .sparsify import SparsifyWeights

__all__ = ["ConvKernels", "DecomposedConvKernels", "DenseMatmulKernels", "ShrinkChannels", "SparsifyWeights"]
