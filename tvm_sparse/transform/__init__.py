"""Relax passes (``tvm.transform.Pass`` objects)."""

from .channel_shrink import ShrinkChannels
from .conv import ConvKernels
from .decomposed_conv import DecomposedConvKernels
from .dense_matmul import DenseMatmulKernels
from .pool import PoolKernels
from .softmax import SoftmaxKernels
from .sparsify import SparsifyWeights

__all__ = [
    "ConvKernels",
    "DecomposedConvKernels",
    "DenseMatmulKernels",
    "PoolKernels",
    "ShrinkChannels",
    "SoftmaxKernels",
    "SparsifyWeights",
]
