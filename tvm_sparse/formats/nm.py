"""N:M fine-grained structured sparsity (2:4 as in NVIDIA's Sparse Tensor Cores).

Along the reduction axis, every group of ``m`` consecutive weights keeps at
most ``n``. The format stores exactly ``n`` values per group (zeros fill groups
with fewer nonzeros) and, per kept value, its position in the group
(``ceil(log2 m)`` bits: 2 bits for 2:4), packed little-endian into bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import FormatError


def position_bits(m: int) -> int:
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


@dataclass(frozen=True)
class NMMatrix:
    """An ``(out, in)`` weight in N:M form along ``in``; ``in`` is padded to a multiple of ``m``."""

    shape: tuple[int, int]
    n: int
    m: int
    values: np.ndarray  # [out, groups, n]
    positions: np.ndarray  # [out, groups, n] uint8, within each group

    @staticmethod
    def from_dense(weight: np.ndarray, n: int, m: int) -> NMMatrix:
        w = np.asarray(weight)
        if w.ndim != 2:
            raise FormatError(f"an N:M weight must be 2-D, got shape {w.shape}")
        if not 0 < n < m:
            raise FormatError(f"N:M needs 0 < N < M, got {n}:{m}")
        bad = nm_violations(w, n, m)
        if bad:
            raise FormatError(f"weight is not {n}:{m}: {bad} group(s) of {m} hold more than {n} nonzeros")
        rows, cols = w.shape
        padded = np.zeros((rows, -(-cols // m) * m), w.dtype)
        padded[:, :cols] = w
        groups = padded.reshape(rows, -1, m)
        positions = kept_positions(groups, n)
        values = np.take_along_axis(groups, positions, axis=-1)
        return NMMatrix((rows, cols), n, m, values, positions.astype(np.uint8))

    def to_dense(self) -> np.ndarray:
        rows, cols = self.shape
        groups = np.zeros((rows, self.values.shape[1], self.m), self.values.dtype)
        np.put_along_axis(groups, self.positions.astype(np.int64), self.values, axis=-1)
        return groups.reshape(rows, -1)[:, :cols]

    @property
    def metadata(self) -> bytes:
        """The packed positions (``position_bits(m)`` per kept value, row-major)."""
        return pack_bits(self.positions, position_bits(self.m))

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + len(self.metadata)
