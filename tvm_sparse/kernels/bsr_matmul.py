"""TIR kernel for ``Y = X @ W.T + bias`` with a constant block-sparse ``W``.

The kernel is generated per weight: its shapes, block shape and number of
stored blocks are compile-time constants, and the block index arrays are
passed as constant tensors.

Layout and register tiling (``W`` is ``(N, K)``, blocks are ``r x c``):

* the ``r`` output features of a block-row form one SIMD vector, so a block
  column ``W[br*r:(br+1)*r, k]`` is one vector load (data is stored
  ``[block, c, r]``);
* ``MT`` rows of ``X`` are processed together, each with its own
  accumulator vector; ``X[m, k]`` enters as a broadcast, which LLVM folds into
  the FMA as an embedded-broadcast memory operand;
* ``X`` is first repacked per row tile as ``X_tiles[tile, K, MT]``, so the
  operands of a block are contiguous rather than ``K`` floats apart (rows of a
  ``K = 3072`` matrix all map to the same L1 cache set);
* the work is parallel over (row tile, block-row) pairs; rows of ``M`` that do
  not fill a tile are handled by a second, narrower loop nest.
"""

# ruff: noqa: F821  (the row_tile macro is non-hygienic: X, data, indices, indptr, B, Y are the
# parameters of the PrimFunc that expands it)

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm.script import tirx as T

from ..formats import BSRMatrix


@dataclass(frozen=True)
class BSRKernelParams:
    """The generator's knobs (the schedule of this kernel)."""

    rows_per_tile: int

    @staticmethod
    def default(block_shape: tuple[int, int]) -> BSRKernelParams:
        """Eight accumulator vectors of up to 16 lanes, the sweet spot measured on AVX-512."""
        r, _ = block_shape
        return BSRKernelParams(rows_per_tile=8 if r <= 16 else max(1, 128 // r))


@dataclass(frozen=True)
class BSRKernelArgs:
    """Constant tensors the kernel reads, in argument order after ``X``."""

    data: np.ndarray  # [num_blocks, c, r]
    indices: np.ndarray  # [num_blocks] int32
    indptr: np.ndarray  # [block_rows + 1] int32

    @staticmethod
    def from_bsr(weight: BSRMatrix) -> BSRKernelArgs:
        r, c = weight.block_shape
        data = np.ascontiguousarray(weight.data.transpose(0, 2, 1), dtype="float32")
        indices = weight.indices.astype("int32")
        if weight.num_blocks == 0:  # zero-size buffers are not allowed; this block is never read
            data = np.zeros((1, c, r), "float32")
            indices = np.zeros(1, "int32")
        return BSRKernelArgs(data, indices, weight.indptr.astype("int32"))


def bsr_matmul_kernel(
    m: int,
    weight: BSRMatrix,
    params: BSRKernelParams | None = None,
    name: str = "bsr_matmul",
):
    """Return the PrimFunc ``name(X[m, Kp], data, indices, indptr, bias[Np], Y[m, Np])``.

    The bias is always an argument (zeros for layers without one): it
    initialises the accumulators, so it costs nothing. ``Kp``/``Np`` are ``K``/``N`` rounded up to the block shape; the caller pads
    ``X`` and crops ``Y`` when the block does not divide the weight.
    """
    r, c = weight.block_shape
    n_pad = (len(weight.indptr) - 1) * r
    k_pad = -(-weight.shape[1] // c) * c
    block_rows = len(weight.indptr) - 1
    num_stored = max(weight.num_blocks, 1)
    params = params or BSRKernelParams.default((r, c))
    mt = min(params.rows_per_tile, m)
    full_tiles, tail = divmod(m, mt)
    row_tiles = full_tiles + (tail > 0)
    column_loop = T.unroll if c <= 16 else T.serial  # wide blocks (packed dense) keep a loop

    @T.macro(hygienic=False)
    def row_tile(t, br, rows, column_loop):
        acc = T.decl_buffer((rows, r), "float32", scope="local")
        for mm in T.unroll(rows):
            for lane in T.vectorized(r):
                acc[mm, lane] = B[br * r + lane]
        for j in range(indptr[br], indptr[br + 1]):
            k0 = indices[j] * c
            for cc in column_loop(c):
                for mm in T.unroll(rows):
                    for lane in T.vectorized(r):
                        acc[mm, lane] = acc[mm, lane] + X_tiles[t, k0 + cc, mm] * data[j, cc, lane]
        for mm in T.unroll(rows):
            for lane in T.vectorized(r):
                Y[t * mt + mm, br * r + lane] = acc[mm, lane]

    @T.prim_func
    def kernel(
        X: T.Buffer((m, k_pad), "float32"),
        data: T.Buffer((num_stored, c, r), "float32"),
        indices: T.Buffer((num_stored,), "int32"),
        indptr: T.Buffer((block_rows + 1,), "int32"),
        B: T.Buffer((n_pad,), "float32"),
        Y: T.Buffer((m, n_pad), "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        X_tiles = T.alloc_buffer((row_tiles, k_pad, mt), "float32")
        for t in T.parallel(row_tiles):
            for k in range(k_pad):
                for mm in T.unroll(mt):
                    X_tiles[t, k, mm] = T.if_then_else(t * mt + mm < m, X[T.min(t * mt + mm, m - 1), k], T.float32(0))
        for t in T.parallel(full_tiles * block_rows):
            row_tile(t // block_rows, t % block_rows, mt, column_loop)
        if tail > 0:
            for br in T.parallel(block_rows):
                row_tile(full_tiles, br, tail, column_loop)

    return kernel.with_attr("global_symbol", name)
