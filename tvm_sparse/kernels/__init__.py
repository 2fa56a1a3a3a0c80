"""TIR generators for the sparse and dense operators of the host CPU."""

from .bsr_matmul import VECTOR_LANES, BSRKernelArgs, BSRKernelParams, Im2Col, bsr_matmul_kernel

__all__ = ["VECTOR_LANES", "BSRKernelArgs", "BSRKernelParams", "Im2Col", "bsr_matmul_kernel"]
