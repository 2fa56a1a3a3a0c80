"""Weight tiles in the device's sparse encodings (what ``WGT`` and ``META`` hold).

A GEMM tile's weight is ``[k, n]`` (reduction x output), int8.

* Block mode: the stored ``block_rows x block_cols`` blocks, row-major in
  block order; ``META`` holds their count and then one position per block,
  all little-endian ``uint16``: ``kb * (n / block_cols) + nb``.
* N:M mode: along ``k``, every group of ``m`` rows keeps ``n_keep`` values per
  column: ``WGT`` is ``[k * n_keep / m, n]`` and ``META`` the position of each
  kept value inside its group (``ceil(log2 m)`` bits, packed little-endian
  into bytes in the same row-major order; 2 bits per value for 2:4).
* Weight sharing (any mode): ``WGT``'s values travel as ``index_bits``-bit
  indices into the layer's table of int8 values, packed like N:M metadata;
  ``LOAD_CODED`` expands them.
"""

from __future__ import annotations

import numpy as np

from ..formats.nm import kept_positions, nm_violations, pack_bits, position_bits, unpack_bits
from .isa import ProgramError

__all__ = ["block_grid", "code_values", "nonzero_blocks", "pack_bits", "pack_blocks", "pack_nm", "unpack_bits", "weight_table"]


def block_grid(weight: np.ndarray, block_rows: int, block_cols: int) -> np.ndarray:
    """``weight[k, n]`` as its ``[k / block_rows, n / block_cols, block_rows, block_cols]`` blocks."""
    k, n = weight.shape
    if k % block_rows or n % block_cols:
        raise ProgramError(f"a {k}x{n} weight tile is not a whole number of {block_rows}x{block_cols} blocks")
    return weight.reshape(k // block_rows, block_rows, n // block_cols, block_cols).transpose(0, 2, 1, 3)


def nonzero_blocks(grid: np.ndarray) -> np.ndarray:
    """Which blocks of a :func:`block_grid` hold a nonzero (bool ``[k / block_rows, n / block_cols]``)."""
    return np.abs(grid).sum(axis=(2, 3)) > 0


def pack_blocks(weight: np.ndarray, block_rows: int, block_cols: int) -> tuple[np.ndarray, bytes]:
    """``(blocks[count, block_rows, block_cols], metadata)`` of the nonzero blocks of ``weight[k, n]``."""
    n = weight.shape[1]
    grid = block_grid(weight, block_rows, block_cols)
    kb, nb = np.nonzero(nonzero_blocks(grid))
    if len(kb) >= 2**16:
        raise ProgramError(f"{len(kb)} blocks do not fit one tile's 16-bit block count")
    positions = np.concatenate([[len(kb)], kb * (n // block_cols) + nb]).astype("<u2")
    return np.ascontiguousarray(grid[kb, nb], dtype=np.int8), positions.tobytes()


def pack_nm(weight: np.ndarray, n_keep: int, m: int) -> tuple[np.ndarray, bytes]:
    """``(values[k * n_keep / m, n], metadata)`` of ``weight[k, n]``, which must have at most ``n_keep`` nonzeros per group."""
    k, n = weight.shape
    if k % m:
        raise ProgramError(f"reduction length {k} is not a multiple of M={m}")
    bad = nm_violations(weight.T, n_keep, m)
    if bad:
        raise ProgramError(f"weight tile has {bad} group(s) with more than {n_keep} nonzeros of {m}")
    groups = weight.reshape(k // m, m, n)
    positions = kept_positions(groups.transpose(0, 2, 1), n_keep).transpose(0, 2, 1)  # [groups, n_keep, n]
    values = np.take_along_axis(groups, positions, axis=1).reshape(k // m * n_keep, n)
    return np.ascontiguousarray(values, dtype=np.int8), pack_bits(positions.reshape(-1, n), position_bits(m))


def weight_table(values: np.ndarray, index_bits: int) -> np.ndarray | None:
    """The shared-weight table of int8 ``values``: their distinct values, sorted, padded to ``2**index_bits``
    entries; None when there are more distinct values than entries."""
    distinct = np.unique(np.asarray(values, np.int8))
    if distinct.size > 1 << index_bits:
        return None
    table = np.full(1 << index_bits, distinct[-1] if distinct.size else 0, np.int8)
    table[: distinct.size] = distinct
    return table


def code_values(values: np.ndarray, table: np.ndarray, index_bits: int) -> bytes:
    """``values`` (row-major) as packed ``index_bits``-bit indices into ``table`` (sorted, as :func:`weight_table` makes it)."""
    flat = np.asarray(values, np.int8).ravel()
    indices = np.searchsorted(table, flat)
    if flat.size and (indices.max() >= table.size or (table[indices] != flat).any()):
        raise ProgramError("a weight value is not in the layer's shared-weight table")
    return pack_bits(indices, index_bits)
