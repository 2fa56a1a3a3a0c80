"""TIR generators for the sparse operators."""

from .bsr_matmul import BSRKernelArgs, BSRKernelParams, bsr_matmul_kernel

__all__ = ["BSRKernelArgs", "BSRKernelParams", "bsr_matmul_kernel"]
