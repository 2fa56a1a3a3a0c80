"""Weight sharing (Deep Compression, EIE): a layer's nonzero weights quantized to ``2^b`` shared values.

The codebook is found by 1-D k-means over the nonzero weights, initialised
linearly over their range (Deep Compression found linear initialisation keeps
the rare large weights best). Zeros stay exact zeros: pruned positions are
not part of the codebook, so pruning and weight sharing compose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..formats import FormatError


@dataclass(frozen=True)
class Codebook:
    """``values[indices]`` at the nonzero positions of the original weight (row-major order), zeros elsewhere."""

    bits: int
    values: np.ndarray  # float32 [2^bits]
    indices: (
        np.ndarray
    )  # uint8/uint16 [nonzeros]: codebook entry of each nonzero, in row-major order
    mask: np.ndarray  # bool, the weight's shape: where the nonzeros are

    def dequantize(self) -> np.ndarray:
        out = np.zeros(self.mask.shape, np.float32)
        out[self.mask] = self.values[self.indices]
        return out


def codebook_quantize(weight: np.ndarray, bits: int, iterations: int = 30) -> Codebook:
    """Cluster the nonzeros of ``weight`` into ``2^bits`` shared values (``bits`` from 1 to 8)."""
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 8:
        raise FormatError(f"codebook bits must be an integer from 1 to 8, got {bits!r}")
    w = np.asarray(weight, np.float32)
    mask = w != 0
    nonzeros = w[mask]
    size = 1 << bits
    if nonzeros.size == 0:
        return Codebook(bits, np.zeros(size, np.float32), np.zeros(0, np.uint8), mask)
    centroids = np.linspace(nonzeros.min(), nonzeros.max(), size).astype(np.float64)
    order = np.argsort(nonzeros)
    ordered = nonzeros[order].astype(np.float64)
    for _ in range(iterations):  # Lloyd's iterations in 1-D
        starts, counts = _clusters(ordered, centroids)
        # reduceat repeats a value for empty clusters; they keep their old centroid instead
        updated = np.where(
            counts > 0, np.add.reduceat(ordered, starts) / np.maximum(counts, 1), centroids
        )
        if np.allclose(updated, centroids):
            break
        centroids = np.sort(updated)
    _, counts = _clusters(ordered, centroids)
    indices = np.empty(nonzeros.size, np.uint8)
    indices[order] = np.repeat(np.arange(size), counts)
    return Codebook(int(bits), centroids.astype(np.float32), indices, mask)


def shared_values(
    values: np.ndarray, max_entries: int = 256
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(codebook float32 [entries], codes uint8 of values' shape)`` with ``codebook[codes] == values``, when
    ``values`` (a codebook-quantized weight, as the pruner writes it) holds at most ``max_entries`` (<= 256)
    distinct values; None otherwise."""
    codebook, codes = np.unique(np.asarray(values, np.float32), return_inverse=True)
    if codebook.size > min(max_entries, 256):
        return None
    return codebook, codes.reshape(np.shape(values)).astype(np.uint8)


def _clusters(ordered: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each centroid's cluster starts in the sorted values, and its size: in 1-D the boundaries are
    the midpoints between consecutive (sorted) centroids."""
    cuts = np.searchsorted(ordered, (centroids[1:] + centroids[:-1]) / 2)
    starts = np.r_[0, cuts]
    return starts, np.diff(np.r_[starts, ordered.size])
