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

Blocks one output row high (``1 x c``: unstructured weights are ``1 x 1``) fill
no vector along the outputs, so their row tiles run the other way round: the
``MT`` rows of the packed tile form the vectors (``MT / lanes`` of them per
accumulator), a stored block ``W[n, k:k+c]`` enters as ``c`` broadcasts, and
each output's blocks alternate between two accumulator sets so consecutive
FMAs do not wait for one another. This is the CSR-times-dense product
vectorised along the dense operand (the activation tile stays in cache while
the weight streams through), as sparse-inference engines do for unstructured
pruning.
"""

# ruff: noqa: F821  (the row_tile macro is non-hygienic: X, data, indices, indptr, B, Y are the
# parameters of the PrimFunc that expands it)

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from tvm.script import tirx as T

from ..compress.codebook import shared_values
from ..formats import BSRMatrix
from .isa import VectorISA, vector_isa
from .rows import MAX_TAIL_TILES, Dim, is_static, own_vars, row_tiling

#: float32 lanes of the widest vector the kernels target (AVX-512); on narrower ISAs LLVM splits it.
VECTOR_LANES = 16
#: Row tiles below which per-tile packing (``pack_in_tile``) would leave threads idle.
FEW_TILES = 4
#: Accumulator registers of a register tile on a 16-register ISA (AVX2).
ACCUMULATOR_REGISTERS_16 = 12


@dataclass(frozen=True)
class BSRKernelParams:
    """The generator's knobs (the schedule of this kernel)."""

    rows_per_tile: int
    #: walk the parallel (row tile, block row) pairs block row first (a weight panel stays in cache)
    #: instead of row tile first (a packed input tile does)
    weight_major: bool = False
    #: pack each row tile inside the parallel loop, just before its block rows use it, into a per-tile
    #: scratch buffer (the packed input never makes a round trip to memory; ``weight_major`` is moot)
    pack_in_tile: bool = False

    @staticmethod
    def default(
        block_shape: tuple[int, int], im2col: bool = False, isa: VectorISA | None = None
    ) -> BSRKernelParams:
        """The default for ``isa`` (default: the current target's).

        AVX-512: eight accumulator vectors of up to 16 lanes, the sweet spot measured there; sixteen
        half-width ones for narrow blocks on im2col rows, where they also halve the packing overhead
        (measured 1.5 vs 2.2 ms on a 28x28 3x3 256->256 convolution with 8x8 blocks at density 0.1).
        With 16 registers (AVX2): as many rows as keep twelve accumulator registers, leaving the
        others to the weight vectors and the broadcast (the 6x16 tile of AVX2 GEMM kernels for
        16-row blocks). Im2col rows are packed per tile (the same convolution at batch 8: 7.0 vs
        15.6 ms, and 4-30% faster on dense convolutions); matmul rows are packed first (per tile is
        faster on some shapes and slower on others: a tuning knob). Blocks one output high run
        16-row tiles packed per tile (a 768 x 3072 unstructured weight at density 0.1, 128 rows: 3.4
        ms against 6.7-9.6 ms with 8-32 rows packed first, 3.5-4.0 ms with 8 or 32 packed per tile)."""
        isa = isa or vector_isa()
        r, _ = block_shape
        if r == 1:  # rows are the vector lanes: two chains of one (AVX-512) or two (AVX2) vectors
            return BSRKernelParams(rows_per_tile=16, pack_in_tile=True)
        if isa.registers >= 32:
            rows = (
                16
                if im2col and r <= VECTOR_LANES // 2
                else 8
                if r <= VECTOR_LANES
                else max(1, 128 // r)
            )
        else:
            rows = max(1, ACCUMULATOR_REGISTERS_16 // isa.registers_for(r))
        return BSRKernelParams(rows_per_tile=min(rows, 1 << MAX_TAIL_TILES), pack_in_tile=im2col)


@dataclass(frozen=True)
class BSRKernelArgs:
    """Constant tensors the kernel reads, in argument order after ``X``.

    With a ``codebook`` (shared weights), ``data`` holds uint8 indices into it instead of the values.
    """

    data: np.ndarray  # [num_blocks, c, r] float32, or uint8 indices into ``codebook``
    indices: np.ndarray  # [num_blocks] int32
    indptr: np.ndarray  # [block_rows + 1] int32
    codebook: np.ndarray | None = None  # float32 [entries]

    @staticmethod
    def from_bsr(weight: BSRMatrix, shared: bool = False) -> BSRKernelArgs:
        """``shared``: store the block values as uint8 indices into their codebook when they take at most 256
        distinct values (else they stay float); :func:`~.codebook_decode.codebook_decode_kernel` turns the
        indices into the kernel's ``data``."""
        r, c = weight.block_shape
        data = np.ascontiguousarray(weight.data.transpose(0, 2, 1), dtype="float32")
        indices = weight.indices.astype("int32")
        if weight.num_blocks == 0:  # zero-size buffers are not allowed; this block is never read
            data = np.zeros((1, c, r), "float32")
            indices = np.zeros(1, "int32")
        coded = shared_values(data) if shared and weight.num_blocks else None
        codebook, data = coded if coded is not None else (None, data)
        return BSRKernelArgs(data, indices, weight.indptr.astype("int32"), codebook)


@dataclass(frozen=True)
class Im2Col:
    """The rows of ``X`` gathered from an NHWC image, for a convolution as a matmul.

    Row ``(n, oh, ow)`` of ``X`` is the receptive field of one output pixel,
    column ``(group, kh, kw, c)`` one weight tap: with the weight as
    ``[O, groups * KH * KW * C/groups]`` (block-diagonal over groups), the
    convolution is ``X @ W.T``. Padding reads as zeros. ``N``, ``H`` and ``W``
    may be symbolic (``tirx`` expressions).
    """

    input_shape: tuple  # N, H, W, C
    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)  # top, left
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    padding_end: tuple[int, int] | None = None  # bottom, right (default: as top, left)

    @property
    def out_hw(self) -> tuple:
        _, h, w, _ = self.input_shape
        end = self.padding_end or self.padding
        return tuple(
            (size + before + after - dil * (k - 1) - 1) // s + 1
            for size, before, after, dil, k, s in zip(
                (h, w), self.padding, end, self.dilation, self.kernel, self.strides
            )
        )

    @property
    def rows(self) -> int:
        oh, ow = self.out_hw
        return self.input_shape[0] * oh * ow

    @property
    def columns(self) -> int:
        return self.kernel[0] * self.kernel[1] * self.input_shape[3]

    def weight_matrix(self, weight: np.ndarray) -> np.ndarray:
        """The ``[O, columns]`` matrix of an ``OHWI`` weight (``I = C/groups``), zero outside each group."""
        out_channels = weight.shape[0]
        per_group = out_channels // self.groups
        taps = weight.reshape(out_channels, -1)
        matrix = np.zeros((out_channels, self.columns), weight.dtype)
        for g in range(self.groups):
            rows = slice(g * per_group, (g + 1) * per_group)
            matrix[rows, g * taps.shape[1] : (g + 1) * taps.shape[1]] = taps[rows]
        return matrix


def bsr_matmul_kernel(
    m: Dim,
    weight: BSRMatrix,
    params: BSRKernelParams | None = None,
    name: str = "bsr_matmul",
    im2col: Im2Col | None = None,
    relu: bool = False,
):
    """Return the PrimFunc ``name(X, data, indices, indptr, bias[Np], Y[m, Np])``.

    ``X`` is the ``[m, Kp]`` matrix, or with ``im2col`` the NHWC image whose
    patches form it (``m`` must then be ``im2col.rows``, and ``Y`` is the
    NHWC output ``[N, OH, OW, Np]``). ``m`` (and the image's ``N, H, W``) may
    be symbolic (a ``tirx`` expression of int64 variables): one kernel then
    serves every size (see :mod:`.rows`). The bias is always an argument
    (zeros for layers without one): it initialises the accumulators, so it
    costs nothing; ``relu`` clamps the result at the store. ``Kp``/``Np`` are
    ``K``/``N`` rounded up to the block shape; the caller pads ``X`` and crops
    ``Y`` when the block does not divide the weight.

    Raises ``ValueError`` when ``im2col`` does not describe an ``m x K`` matrix.
    """
    r, c = weight.block_shape
    n_pad = (len(weight.indptr) - 1) * r
    k = weight.shape[1]
    k_pad = -(-k // c) * c
    block_rows = len(weight.indptr) - 1
    num_stored = max(weight.num_blocks, 1)
    params = params or BSRKernelParams.default((r, c))
    if im2col is not None:
        if (
            is_static(m)
            and is_static(im2col.rows)
            and int(im2col.rows) != int(m)
            or im2col.columns != k
        ):
            raise ValueError(
                f"im2col gives a {im2col.rows}x{im2col.columns} matrix, the kernel multiplies {m}x{k}"
            )
        im2col = dataclasses.replace(im2col, input_shape=own_vars(im2col.input_shape))
        m = im2col.rows
    else:
        (m,) = own_vars((m,), "m")
    mt, full_tiles, tails = row_tiling(m, params.rows_per_tile)
    has_tail = bool(tails)
    row_tiles = full_tiles + has_tail
    # Per-tile packing parallelises over row tiles only: with a handful of them, pack first and
    # parallelise over (row tile, block row) pairs instead.
    pack_in_tile = params.pack_in_tile and not (is_static(full_tiles) and full_tiles < FEW_TILES)
    column_loop = T.unroll if c <= 16 else T.serial  # wide blocks (packed dense) keep a loop
    # A convolution writes its NHWC output directly (the same memory as the [m, Np] matrix).
    y_shape = (im2col.input_shape[0], *im2col.out_hw, n_pad) if im2col is not None else (m, n_pad)

    @T.macro
    def row_tile(X_tiles, data, indices, indptr, B, Y, row0, br, rows, xt, x0):
        acc = T.decl_buffer((rows, r), "float32")  # a small stack array: LLVM keeps it in registers
        for mm in T.unroll(rows):
            for lane in T.vectorized(r):
                acc[mm, lane] = B[br * r + lane]
        for j in range(indptr[br], indptr[br + 1]):
            for cc in column_loop(c):
                for mm in T.unroll(rows):
                    for lane in T.vectorized(r):
                        acc[mm, lane] = (
                            acc[mm, lane]
                            + X_tiles[xt, indices[j] * c + cc, x0 + mm] * data[j, cc, lane]
                        )
        for mm in T.unroll(rows):
            for lane in T.vectorized(r):
                Y[row0 + mm, br * r + lane] = (
                    T.max(acc[mm, lane], T.float32(0)) if relu else acc[mm, lane]
                )

    @T.macro
    def row_vector_sums(acc, X_tiles, data, indices, indptr, B, n, rows, xt, x0):
        # acc[0, :rows] = output n (a 1 x c block row) for ``rows`` rows, the rows as vector lanes,
        # in two chains of FMAs (acc[1] the second) summed at the end.
        for mm in T.vectorized(rows):
            acc[0, mm] = B[n]
            acc[1, mm] = T.float32(0)
        start = indptr[n]
        stored = indptr[n + 1] - start
        for jj in range(stored // 2):
            for s in T.unroll(2):
                for cc in column_loop(c):
                    for mm in T.vectorized(rows):
                        acc[s, mm] = (
                            acc[s, mm]
                            + X_tiles[xt, indices[start + jj * 2 + s] * c + cc, x0 + mm]
                            * data[start + jj * 2 + s, cc, 0]
                        )
        if stored % 2 == 1:
            for cc in column_loop(c):
                for mm in T.vectorized(rows):
                    acc[0, mm] = (
                        acc[0, mm]
                        + X_tiles[xt, indices[start + stored - 1] * c + cc, x0 + mm]
                        * data[start + stored - 1, cc, 0]
                    )
        for mm in T.vectorized(rows):
            acc[0, mm] = (
                T.max(acc[0, mm] + acc[1, mm], T.float32(0)) if relu else acc[0, mm] + acc[1, mm]
            )

    @T.macro
    def row_vector_tile(X_tiles, data, indices, indptr, B, Y, row0, n, rows, xt, x0):
        acc = T.decl_buffer((2, rows), "float32")
        row_vector_sums(acc, X_tiles, data, indices, indptr, B, n, rows, xt, x0)
        for mm in T.unroll(rows):  # one column of Y: scalar stores, N floats apart
            Y[row0 + mm, n] = acc[0, mm]

    @T.macro
    def row_vector_tiles(X_tile, data, indices, indptr, B, Y, row0):
        # Every output for one packed tile of ``mt`` rows, into a [N, mt] scratch (contiguous vector
        # stores), then into Y: strided stores inside the FMA loop cost 1.3x (768x3072, density 0.1).
        S = T.alloc_buffer((block_rows, mt), "float32")
        for n in range(block_rows):
            acc = T.decl_buffer((2, mt), "float32")
            row_vector_sums(acc, X_tile, data, indices, indptr, B, n, mt, 0, 0)
            for mm in T.vectorized(mt):
                S[n, mm] = acc[0, mm]
        for n in range(block_rows):
            for mm in T.unroll(mt):
                Y[row0 + mm, n] = S[n, mm]

    if r == 1:
        row_tile = row_vector_tile

    @T.macro
    def tail_tile(X_tiles, data, indices, indptr, B, Y, xt, i):
        # The i-th tile of the rows past the full tiles (if there is one, and the row count takes it).
        if i < len(tails):
            if tails[i].when:
                for br in T.parallel(block_rows):
                    row_tile(
                        X_tiles,
                        data,
                        indices,
                        indptr,
                        B,
                        Y,
                        full_tiles * mt + tails[i].offset,
                        br,
                        tails[i].rows,
                        xt,
                        tails[i].offset,
                    )

    @T.macro
    def tail_tiles(X_tiles, data, indices, indptr, B, Y, xt):
        tail_tile(X_tiles, data, indices, indptr, B, Y, xt, 0)
        tail_tile(X_tiles, data, indices, indptr, B, Y, xt, 1)
        tail_tile(X_tiles, data, indices, indptr, B, Y, xt, 2)
        tail_tile(X_tiles, data, indices, indptr, B, Y, xt, 3)
        tail_tile(X_tiles, data, indices, indptr, B, Y, xt, 4)

    def row_of(t, mm, last: bool):
        """Row ``mm`` of tile ``t``; the rows of the last (tail) tile past ``m`` read row ``m - 1``."""
        return T.min(t * mt + mm, m - 1) if last else t * mt + mm

    if im2col is None:
        x_shape = (m, k_pad)

        @T.macro
        def pack_tile(X, X_tiles, t, xt, last):
            for kk in range(k_pad):
                for mm in T.unroll(mt):
                    X_tiles[xt, kk, mm] = X[row_of(t, mm, last), kk]

    else:
        x_shape = im2col.input_shape
        _, height, width, channels = x_shape
        out_h, out_w = im2col.out_hw
        kernel_h, kernel_w = im2col.kernel
        (stride_h, stride_w), (pad_top, pad_left), (dil_h, dil_w) = (
            im2col.strides,
            im2col.padding,
            im2col.dilation,
        )
        groups = im2col.groups
        group_channels = channels // groups

        @T.macro
        def pack_tile(X, X_tiles, t, xt, last):
            # Each row's image and window origin, computed once per tile (divisions are costly per tap).
            origin = T.decl_buffer((mt, 3), "int64")
            for mm in T.unroll(mt):
                origin[mm, 0] = row_of(t, mm, last) // (out_h * out_w)
                origin[mm, 1] = row_of(t, mm, last) // out_w % out_h * stride_h - pad_top
                origin[mm, 2] = row_of(t, mm, last) % out_w * stride_w - pad_left
            for g, kh, kw in T.grid(groups, kernel_h, kernel_w):
                for ci in range(group_channels):
                    for mm in T.unroll(mt):
                        X_tiles[
                            xt, ((g * kernel_h + kh) * kernel_w + kw) * group_channels + ci, mm
                        ] = T.if_then_else(
                            T.And(
                                T.And(
                                    0 <= origin[mm, 1] + kh * dil_h,
                                    origin[mm, 1] + kh * dil_h < height,
                                ),
                                T.And(
                                    0 <= origin[mm, 2] + kw * dil_w,
                                    origin[mm, 2] + kw * dil_w < width,
                                ),
                            ),
                            X[
                                origin[mm, 0],
                                T.min(T.max(origin[mm, 1] + kh * dil_h, 0), height - 1),
                                T.min(T.max(origin[mm, 2] + kw * dil_w, 0), width - 1),
                                g * group_channels + ci,
                            ],
                            T.float32(0),
                        )
            for kk, mm in T.grid(k_pad - k, mt):
                X_tiles[xt, k + kk, mm] = T.float32(0)

    @T.prim_func
    def kernel(
        X: T.Buffer(x_shape, "float32"),
        data: T.Buffer((num_stored, c, r), "float32"),
        indices: T.Buffer((num_stored,), "int32"),
        indptr: T.Buffer((block_rows + 1,), "int32"),
        B: T.Buffer((n_pad,), "float32"),
        Y_out: T.Buffer(y_shape, "float32"),
    ):
        T.func_attr({"tirx.noalias": True})
        Y = T.decl_buffer((m, n_pad), "float32", data=Y_out.data)
        if pack_in_tile:
            for t in T.parallel(full_tiles):
                X_tile = T.alloc_buffer((1, k_pad, mt), "float32")
                pack_tile(X, X_tile, t, 0, False)
                if r == 1:
                    row_vector_tiles(X_tile, data, indices, indptr, B, Y, t * mt)
                else:
                    for br in range(block_rows):
                        row_tile(X_tile, data, indices, indptr, B, Y, t * mt, br, mt, 0, 0)
            if has_tail:
                X_last = T.alloc_buffer((1, k_pad, mt), "float32")
                pack_tile(X, X_last, full_tiles, 0, True)
                tail_tiles(X_last, data, indices, indptr, B, Y, 0)
        else:
            X_tiles = T.alloc_buffer((row_tiles, k_pad, mt), "float32")
            for t in T.parallel(full_tiles):
                pack_tile(X, X_tiles, t, t, False)
            if has_tail:
                pack_tile(X, X_tiles, full_tiles, full_tiles, True)
            for w in T.parallel(full_tiles * block_rows):
                if params.weight_major:
                    row_tile(
                        X_tiles,
                        data,
                        indices,
                        indptr,
                        B,
                        Y,
                        w % full_tiles * mt,
                        w // full_tiles,
                        mt,
                        w % full_tiles,
                        0,
                    )
                else:
                    row_tile(
                        X_tiles,
                        data,
                        indices,
                        indptr,
                        B,
                        Y,
                        w // block_rows * mt,
                        w % block_rows,
                        mt,
                        w // block_rows,
                        0,
                    )
            if has_tail:
                tail_tiles(X_tiles, data, indices, indptr, B, Y, full_tiles)

    return kernel.with_attr("global_symbol", name)
