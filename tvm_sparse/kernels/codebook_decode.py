"""TIR kernel that decodes shared weights: ``values = codebook[indices]``.

A weight stored as uint8 indices into a float codebook (Deep Compression's
weight sharing) is a quarter of its float32 size. The decode runs once per
call, in parallel, ahead of the kernel that consumes the values, so that
kernel stays the float one.
"""

from __future__ import annotations

from tvm.script import tirx as T

from .bsr_matmul import VECTOR_LANES


def codebook_decode_kernel(shape: tuple[int, ...], entries: int, name: str = "codebook_decode"):
    """``name(indices uint8[shape], codebook float32[entries], values float32[shape])``."""
    shape = tuple(
        int(extent) for extent in shape
    )  # builtins cannot be called in TVMScript annotations
    size = 1
    for extent in shape:
        size *= extent
    rows, lanes = (size // VECTOR_LANES, VECTOR_LANES) if size % VECTOR_LANES == 0 else (size, 1)

    @T.prim_func
    def kernel(
        indices_in: T.Buffer(shape, "uint8"),
        codebook: T.Buffer((entries,), "float32"),
        values_out: T.Buffer(shape, "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        indices = T.decl_buffer((rows, lanes), "uint8", data=indices_in.data)
        values = T.decl_buffer((rows, lanes), "float32", data=values_out.data)
        for i in T.parallel(rows):
            for lane in T.vectorized(lanes):
                values[i, lane] = codebook[T.Cast("int32", indices[i, lane])]

    return kernel.with_attr("global_symbol", name)
