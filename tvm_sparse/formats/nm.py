"""N:M fine-grained structured sparsity (2:4 as in NVIDIA's Sparse Tensor Cores).

Along the reduction axis, every group of ``m`` consecutive weights keeps at
most ``n``. The format stores exactly ``n`` values per group (zeros fill groups
with fewer nonzeros) and, per kept value, its position in the group
(``ceil(log2 m)`` bits: 2 bits for 2:4), packed little-endian into bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hw.encoding import kept_positions, nm_violations, pack_bits, position_bits
from .errors import FormatError


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
            raise FormatError(
                f"weight is not {n}:{m}: {bad} group(s) of {m} hold more than {n} nonzeros"
            )
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
