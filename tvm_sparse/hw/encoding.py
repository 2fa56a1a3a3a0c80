"""Weight tiles in the device's sparse encodings (what ``WGT`` and ``META`` hold), and run-length coded activations.

A GEMM tile's weight is ``[k, n]`` (reduction x output), int8.

* Block mode: the stored ``block_rows x block_cols`` blocks, row-major in
  block order (``kb * (n / block_cols) + nb``); ``META`` holds their count
  (little-endian ``uint16``) and then one relative index per block, the
  count of empty blocks skipped before it, in the device's ``index_bits``
  bits (packed like N:M metadata), as Deep Compression and SCNN index
  weights. A gap longer than ``2**index_bits - 1`` blocks is bridged by
  stored zero blocks (an entry ``2**index_bits - 1`` per ``2**index_bits``
  blocks); blocks after the last entry are implicit. A tile of at most
  ``2**index_bits`` blocks never needs bridging (the shipped 16x16 blocks
  with 16-bit indices).
* N:M mode: along ``k``, every group of ``m`` rows keeps ``n_keep`` values per
  column: ``WGT`` is ``[k * n_keep / m, n]`` and ``META`` the position of each
  kept value inside its group (``ceil(log2 m)`` bits, packed little-endian
  into bytes in the same row-major order; 2 bits per value for 2:4).
* Weight sharing (any mode): ``WGT``'s values travel as ``index_bits``-bit
  indices into the layer's table of int8 values, packed like N:M metadata;
  ``LOAD_CODED`` expands them.

Activations (``INP`` tiles, on devices with activation compression) travel
run-length coded as in SCNN (Parashar et al., ISCA 2017) and EIE: a tile's
nonzero int8 values in row-major order, each with the count of zeros before
it in ``run_bits`` bits (the block mode's relative indices, bridging stored
zeros included, packed like N:M metadata); zeros after the last entry are
implicit. ``LOAD_RLE`` expands them.
"""

from __future__ import annotations

import numpy as np

from .isa import ProgramError

__all__ = [
    "BLOCK_COUNT_BYTES",
    "absolute_positions",
    "block_grid",
    "block_metadata_bytes",
    "block_stream_bytes",
    "code_values",
    "encode_runs",
    "kept_positions",
    "nm_violations",
    "nonzero_blocks",
    "pack_bits",
    "pack_blocks",
    "pack_nm",
    "position_bits",
    "relative_indices",
    "unpack_bits",
    "weight_table",
]


def position_bits(m: int) -> int:
    """Bits of a position inside a group of ``m`` (N:M metadata: 2 for 2:4)."""
    return max(1, (m - 1).bit_length())


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Unsigned ``values`` of ``bits`` bits each, packed little-endian into bytes."""
    flat = np.asarray(values, dtype=np.uint64).ravel()
    bit_matrix = (flat[:, None] >> np.arange(bits, dtype=np.uint64)) & 1
    return np.packbits(bit_matrix.astype(np.uint8).ravel(), bitorder="little").tobytes()


def unpack_bits(data, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` values."""
    bit_array = np.unpackbits(np.asarray(data, dtype=np.uint8), bitorder="little")[: count * bits]
    return (bit_array.reshape(count, bits).astype(np.int64) << np.arange(bits)).sum(axis=1)


def nm_violations(weight: np.ndarray, n: int, m: int) -> int:
    """How many groups of ``m`` along the last axis hold more than ``n`` nonzeros (``weight``'s last
    axis is padded with zeros to a multiple of ``m``)."""
    w = np.asarray(weight)
    pad = -w.shape[-1] % m
    if pad:
        w = np.concatenate([w, np.zeros((*w.shape[:-1], pad), w.dtype)], axis=-1)
    groups = w.reshape(*w.shape[:-1], -1, m)
    return int((np.count_nonzero(groups, axis=-1) > n).sum())


def kept_positions(groups: np.ndarray, n: int) -> np.ndarray:
    """Per group, ``n`` positions in ascending order: the nonzeros, then zero fillers."""
    order = np.argsort(groups == 0, axis=-1, kind="stable")[..., :n]
    return np.sort(order, axis=-1)


def block_grid(weight: np.ndarray, block_rows: int, block_cols: int) -> np.ndarray:
    """``weight[k, n]`` as its ``[k / block_rows, n / block_cols, block_rows, block_cols]`` blocks."""
    k, n = weight.shape
    if k % block_rows or n % block_cols:
        raise ProgramError(
            f"a {k}x{n} weight tile is not a whole number of {block_rows}x{block_cols} blocks"
        )
    return weight.reshape(k // block_rows, block_rows, n // block_cols, block_cols).transpose(
        0, 2, 1, 3
    )


def nonzero_blocks(grid: np.ndarray) -> np.ndarray:
    """Which blocks of a :func:`block_grid` hold a nonzero (bool ``[k / block_rows, n / block_cols]``)."""
    return (grid != 0).any(axis=(2, 3))


#: Bytes of the entry count that opens a tile's block metadata (little-endian ``uint16``).
BLOCK_COUNT_BYTES = 2


def relative_indices(positions: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Relative indices of increasing ``positions`` (Deep Compression, Han et al. ICLR'16; SCNN): ``(skips,
    slots)``, int64. ``skips[e]`` is entry ``e``'s count of positions skipped since the previous entry
    (``index_bits`` bits); ``slots[i]`` is the entry of ``positions[i]``. A gap over ``2**index_bits - 1``
    is bridged by entries that skip ``2**index_bits - 1`` and store a zero."""
    span = 1 << index_bits
    gaps = np.diff(np.asarray(positions, np.int64), prepend=-1) - 1
    entries = gaps // span + 1  # bridging entries, then the position's own
    slots = np.cumsum(entries) - 1
    skips = np.full(int(entries.sum()), span - 1, np.int64)
    skips[slots] = gaps % span
    return skips, slots


def absolute_positions(skips: np.ndarray) -> np.ndarray:
    """Inverse of :func:`relative_indices`: each entry's position (bridging entries included)."""
    return np.cumsum(np.asarray(skips, np.int64) + 1) - 1


def block_metadata_bytes(entries: int, index_bits: int) -> int:
    """Bytes of a tile's block metadata: the count, then ``entries`` packed ``index_bits``-bit indices."""
    return BLOCK_COUNT_BYTES + -(-entries * index_bits // 8)


def block_stream_bytes(
    weight: np.ndarray, block_rows: int, block_cols: int, index_bits: int
) -> tuple[int, int]:
    """``(value bytes, metadata bytes)`` of int8 ``weight[k, n]`` encoded as one block tile (bridging blocks
    included, no limit on the count): what a layer's block-sparse weight costs to store and move, to within
    the per-tile restarts of its relative indices."""
    skips, _ = relative_indices(
        np.flatnonzero(nonzero_blocks(block_grid(weight, block_rows, block_cols))), index_bits
    )
    return skips.size * block_rows * block_cols, block_metadata_bytes(skips.size, index_bits)


def pack_blocks(
    weight: np.ndarray, block_rows: int, block_cols: int, index_bits: int
) -> tuple[np.ndarray, bytes]:
    """``(blocks[entries, block_rows, block_cols] int8, metadata)``: the nonzero blocks of int8 ``weight[k, n]``
    and the bridging zero blocks their ``index_bits``-bit relative indices need (module docstring)."""
    grid = block_grid(weight, block_rows, block_cols)
    present = nonzero_blocks(grid)
    skips, slots = relative_indices(np.flatnonzero(present), index_bits)
    if skips.size >= 2**16:
        raise ProgramError(f"{skips.size} blocks do not fit one tile's 16-bit block count")
    blocks = np.zeros((skips.size, block_rows, block_cols), np.int8)
    blocks[slots] = grid[present]
    return blocks, np.array([skips.size], "<u2").tobytes() + pack_bits(skips, index_bits)


def pack_nm(weight: np.ndarray, n_keep: int, m: int) -> tuple[np.ndarray, bytes]:
    """``(values[k * n_keep / m, n], metadata)`` of ``weight[k, n]``, which must have at most ``n_keep`` nonzeros per group."""
    k, n = weight.shape
    if k % m:
        raise ProgramError(f"reduction length {k} is not a multiple of M={m}")
    bad = nm_violations(weight.T, n_keep, m)
    if bad:
        raise ProgramError(
            f"weight tile has {bad} group(s) with more than {n_keep} nonzeros of {m}"
        )
    groups = weight.reshape(k // m, m, n)
    positions = kept_positions(groups.transpose(0, 2, 1), n_keep).transpose(
        0, 2, 1
    )  # [groups, n_keep, n]
    values = np.take_along_axis(groups, positions, axis=1).reshape(k // m * n_keep, n)
    return np.ascontiguousarray(values, dtype=np.int8), pack_bits(
        positions.reshape(-1, n), position_bits(m)
    )


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


def encode_runs(tile: np.ndarray, run_bits: int) -> tuple[np.ndarray, bytes]:
    """``(values[entries] int8, runs)``: int8 ``tile`` (any shape, read row-major) run-length coded with
    ``run_bits``-bit zero runs (SCNN/EIE; module docstring); ``runs`` packs one count per entry."""
    flat = np.asarray(tile, np.int8).ravel()
    nonzero = np.flatnonzero(flat)
    runs, slots = relative_indices(nonzero, run_bits)
    values = np.zeros(runs.size, np.int8)  # bridging entries store zeros
    values[slots] = flat[nonzero]
    return values, pack_bits(runs, run_bits)
