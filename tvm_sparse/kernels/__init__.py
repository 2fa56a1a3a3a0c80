"""TIR generators for the sparse and dense operators of the host CPU."""

import tvm

from .bsr_matmul import VECTOR_LANES, BSRKernelArgs, BSRKernelParams, Im2Col, bsr_matmul_kernel


def add_kernel(builder, taken: set, func: tvm.tirx.PrimFunc, base: str) -> tvm.ir.GlobalVar:
    """Add ``func`` to ``builder``'s module under a C-safe symbol made from ``base``, unique among
    ``taken`` (which it joins)."""
    symbol = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in base)
    unique, i = symbol, 1
    while unique in taken:
        unique, i = f"{symbol}_{i}", i + 1
    taken.add(unique)
    return builder.add_func(func.with_attr("global_symbol", unique), unique)


__all__ = [
    "VECTOR_LANES",
    "BSRKernelArgs",
    "BSRKernelParams",
    "Im2Col",
    "add_kernel",
    "bsr_matmul_kernel",
]
