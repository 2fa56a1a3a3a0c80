"""Block compressed sparse row (BSR) matrices.

A weight matrix ``W`` of shape ``(rows, cols)`` is cut into ``r x c`` blocks.
Only blocks holding at least one nonzero are stored, row of blocks by row of
blocks (the layout of ``scipy.sparse.bsr_matrix``):

* ``data[i]`` is the ``r x c`` block number ``i``;
* ``indices[i]`` is its block-column;
* ``indptr[br]:indptr[br + 1]`` are the blocks of block-row ``br``.

Shapes that the block does not divide are padded with zeros up to the next
multiple; ``shape`` keeps the logical size and ``to_dense`` crops back to it.

Inside tvm-sparse a linear layer's weight is always seen as ``(out_features,
in_features)``, so a ``16x1`` block spans 16 output features and one input
feature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import FormatError


def parse_block_shape(block_shape) -> tuple[int, int]:
    """Accept ``(r, c)`` or ``"RxC"`` and return a validated ``(r, c)``."""
    if isinstance(block_shape, str):
        parts = block_shape.lower().split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise FormatError(f"block shape {block_shape!r} is not of the form RxC (e.g. 16x1)")
        block_shape = tuple(int(p) for p in parts)
    try:
        r, c = (int(v) for v in block_shape)
    except (TypeError, ValueError):
        raise FormatError(f"block shape {block_shape!r} is not a pair of integers") from None
    if r < 1 or c < 1:
        raise FormatError(f"block shape {r}x{c} must have positive sides")
    return r, c


def _check_matrix(dense) -> np.ndarray:
    arr = np.asarray(dense)
    if arr.ndim != 2:
        raise FormatError(f"expected a 2-D weight matrix, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise FormatError(f"expected a floating-point weight, got dtype {arr.dtype}")
    if not np.all(np.isfinite(arr)):
        raise FormatError("weight contains NaN or infinite values")
    return arr


def pad_to_blocks(dense: np.ndarray, r: int, c: int) -> np.ndarray:
    """Zero-pad a 2-D array so that ``r`` divides its rows and ``c`` its columns."""
    rows, cols = dense.shape
    pad_r, pad_c = -rows % r, -cols % c
    if pad_r or pad_c:
        dense = np.pad(dense, ((0, pad_r), (0, pad_c)))
    return dense


def block_nonzero_mask(dense: np.ndarray, r: int, c: int) -> np.ndarray:
    """Boolean ``(ceil(rows/r), ceil(cols/c))`` map of blocks holding a nonzero."""
    padded = pad_to_blocks(np.asarray(dense), r, c)
    nbr, nbc = padded.shape[0] // r, padded.shape[1] // c
    return (padded.reshape(nbr, r, nbc, c) != 0).any(axis=(1, 3))


@dataclass(frozen=True, eq=False)
class BSRMatrix:
    """A validated BSR matrix; build it with :meth:`from_dense`."""

    shape: tuple[int, int]
    block_shape: tuple[int, int]
    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray

    def __post_init__(self):
        r, c = parse_block_shape(self.block_shape)
        rows, cols = self.shape
        nbr, nbc = -(-rows // r), -(-cols // c)
        if self.indptr.ndim != 1 or len(self.indptr) != nbr + 1:
            raise FormatError(f"indptr must have {nbr + 1} entries, has {len(self.indptr)}")
        if self.indptr[0] != 0 or np.any(np.diff(self.indptr) < 0):
            raise FormatError("indptr must start at 0 and never decrease")
        nnzb = int(self.indptr[-1])
        if self.indices.shape != (nnzb,):
            raise FormatError(f"indices must have {nnzb} entries, has {self.indices.shape}")
        if self.data.shape != (nnzb, r, c):
            raise FormatError(f"data must have shape {(nnzb, r, c)}, has {self.data.shape}")
        if nnzb and (self.indices.min() < 0 or self.indices.max() >= nbc):
            raise FormatError(f"block-column indices must lie in [0, {nbc})")
        for br in range(nbr):
            row = self.indices[self.indptr[br] : self.indptr[br + 1]]
            if np.any(np.diff(row) <= 0):
                raise FormatError(f"block-row {br}: column indices must be strictly increasing")

    @classmethod
    def from_dense(cls, dense, block_shape) -> BSRMatrix:
        """Compress ``dense``, keeping every block that has a nonzero."""
        arr = _check_matrix(dense)
        r, c = parse_block_shape(block_shape)
        padded = pad_to_blocks(arr, r, c)
        nbr, nbc = padded.shape[0] // r, padded.shape[1] // c
        blocks = padded.reshape(nbr, r, nbc, c).transpose(0, 2, 1, 3)
        mask = (blocks != 0).any(axis=(2, 3))
        block_rows, block_cols = np.nonzero(mask)
        indptr = np.zeros(nbr + 1, dtype=np.int32)
        np.cumsum(mask.sum(axis=1), out=indptr[1:])
        return cls(
            shape=arr.shape,
            block_shape=(r, c),
            data=np.ascontiguousarray(blocks[block_rows, block_cols]),
            indices=block_cols.astype(np.int32),
            indptr=indptr,
        )

    def to_dense(self) -> np.ndarray:
        """The dense matrix, cropped to the logical shape."""
        r, c = self.block_shape
        nbr, nbc = len(self.indptr) - 1, -(-self.shape[1] // c)
        out = np.zeros((nbr, nbc, r, c), dtype=self.data.dtype)
        block_rows = np.repeat(np.arange(nbr), np.diff(self.indptr))
        out[block_rows, self.indices] = self.data
        dense = out.transpose(0, 2, 1, 3).reshape(nbr * r, nbc * c)
        return dense[: self.shape[0], : self.shape[1]]

    @property
    def num_blocks(self) -> int:
        """Number of stored (nonzero) blocks."""
        return int(self.indptr[-1])

    @property
    def block_density(self) -> float:
        """Stored blocks over all blocks of the padded matrix."""
        r, c = self.block_shape
        total = (-(-self.shape[0] // r)) * (-(-self.shape[1] // c))
        return self.num_blocks / total if total else 0.0

    @property
    def nbytes(self) -> int:
        """Bytes of values plus indices, as stored."""
        return self.data.nbytes + self.indices.nbytes + self.indptr.nbytes
