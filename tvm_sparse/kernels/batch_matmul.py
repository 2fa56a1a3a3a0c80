"""TIR kernel for ``Y[s] = A[s] @ B[s]`` where both operands are activations.

Used for the matmuls that have no constant weight (attention scores and
context in transformers). Per batch index and 16-wide column panel, the panel
of ``B`` is packed into a contiguous ``[K, 16]`` scratch (from ``B[s, k, n]`` or,
when ``transpose_b``, from ``B[s, n, k]``), then ``MT`` rows of ``A`` are
register-tiled against it exactly like the packed dense kernel. Column panels
and row tiles that do not fill up are padded in the scratch and guarded at
the store.
"""

from __future__ import annotations

from tvm.script import tirx as T

from .bsr_matmul import ACCUMULATOR_REGISTERS_16
from .bsr_matmul import VECTOR_LANES as LANES
from .isa import VectorISA, vector_isa
from .rows import Dim, is_static, own_vars


def rows_per_tile(isa: VectorISA) -> int:
    """Rows of ``A`` per register tile: 8 x 16 lanes on AVX-512, 6 (12 accumulator registers) on AVX2."""
    return 8 if isa.registers >= 32 else ACCUMULATOR_REGISTERS_16 // isa.registers_for(LANES)


def batch_matmul_kernel(
    batch: Dim, m: Dim, n: Dim, k: Dim, transpose_b: bool, name: str = "batch_matmul"
):
    """``name(A[batch, m, k], B[batch, k, n] or B[batch, n, k], Y[batch, m, n])``; any size may be symbolic."""
    batch, m, n, k = own_vars((batch, m, n, k))
    panels = (n + LANES - 1) // LANES
    tile = rows_per_tile(vector_isa())
    mt = min(tile, m) if is_static(m) else tile
    row_tiles = (m + mt - 1) // mt
    b_shape = (batch, n, k) if transpose_b else (batch, k, n)

    @T.prim_func
    def kernel(
        A: T.Buffer((batch, m, k), "float32"),
        B: T.Buffer(b_shape, "float32"),
        Y: T.Buffer((batch, m, n), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        for t in T.parallel(batch * panels):
            s = t // panels
            n0 = (t % panels) * LANES
            packed = T.decl_buffer((k, LANES), "float32")
            for kk in range(k):
                for lane in T.vectorized(LANES):
                    if transpose_b:
                        packed[kk, lane] = T.if_then_else(
                            n0 + lane < n, B[s, T.min(n0 + lane, n - 1), kk], T.float32(0)
                        )
                    else:
                        packed[kk, lane] = T.if_then_else(
                            n0 + lane < n, B[s, kk, T.min(n0 + lane, n - 1)], T.float32(0)
                        )
            for rt in range(row_tiles):
                acc = T.decl_buffer(
                    (mt, LANES), "float32"
                )  # on the stack: LLVM keeps it in registers
                for mm in T.unroll(mt):
                    for lane in T.vectorized(LANES):
                        acc[mm, lane] = T.float32(0)
                for kk in range(k):
                    for mm in T.unroll(mt):
                        for lane in T.vectorized(LANES):
                            acc[mm, lane] = (
                                acc[mm, lane]
                                + A[s, T.min(rt * mt + mm, m - 1), kk] * packed[kk, lane]
                            )
                for mm in T.unroll(mt):
                    if rt * mt + mm < m:
                        if n0 + LANES <= n:
                            for lane in T.vectorized(LANES):
                                Y[s, rt * mt + mm, n0 + lane] = acc[mm, lane]
                        else:
                            for lane in range(LANES):
                                if n0 + lane < n:
                                    Y[s, rt * mt + mm, n0 + lane] = acc[mm, lane]

    return kernel.with_attr("global_symbol", name)
