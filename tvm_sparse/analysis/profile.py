"""Sparsity profile of one weight matrix (``(out_features, in_features)``)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from ..compress.balanced import imbalance
from ..formats import block_nonzero_mask

#: Block shapes (output rows x reduction columns) the analysis measures.
CANDIDATE_BLOCKS: tuple[tuple[int, int], ...] = (
    (1, 1), (4, 1), (8, 1), (16, 1), (1, 4), (1, 8), (4, 4), (8, 8), (16, 16), (32, 32),
)  # fmt: skip

#: N:M patterns checked along the reduction axis.
CANDIDATE_NM: tuple[tuple[int, int], ...] = ((2, 4), (1, 4), (2, 8))


@dataclass
class WeightProfile:
    """Density, zero-block statistics and N:M compliance of a weight."""

    shape: tuple[int, int]
    density: float
    #: block shape -> fraction of blocks holding a nonzero (padded to whole blocks)
    block_density: dict[tuple[int, int], float] = field(default_factory=dict)
    #: block shape -> nonzeros over the stored blocks' in-bounds elements (1.0: zeros are whole blocks)
    block_fill: dict[tuple[int, int], float] = field(default_factory=dict)
    #: (n, m) -> fraction of m-groups along the reduction axis with at most n nonzeros
    nm_compliance: dict[tuple[int, int], float] = field(default_factory=dict)
    #: max over mean nonzeros of the rows dealt round-robin to PROCESSING_UNITS units (ESE's load imbalance)
    imbalance: float = 1.0

    @property
    def structure(self) -> str:
        """The coarsest structure the zeros follow exactly, as a short label."""
        if self.density >= 1.0:
            return "dense"
        if self.density == 0.0:
            return "all-zero"
        exact = [b for b, fill in self.block_fill.items() if b != (1, 1) and fill >= 1.0]
        if exact:
            r, c = max(exact, key=lambda b: (b[0] * b[1], b[0]))
            return f"block {r}x{c}"
        for n, m in CANDIDATE_NM:
            if self.nm_compliance.get((n, m)) == 1.0 and self.density <= n / m + 1e-9:
                return f"{n}:{m}"
        return "unstructured"

    def measure_block(self, weight: np.ndarray, block: tuple[int, int]) -> float:
        """The block density for ``block``, measured on ``weight`` if not yet known."""
        if block not in self.block_density:
            self.block_density[block], self.block_fill[block] = _block_stats(weight, block)
        return self.block_density[block]

    def to_dict(self) -> dict:
        """The profile as JSON-able values."""
        return {
            "shape": list(self.shape),
            "density": round(self.density, 6),
            "structure": self.structure,
            "block_density": {f"{r}x{c}": round(d, 6) for (r, c), d in self.block_density.items()},
            "block_fill": {f"{r}x{c}": round(f, 6) for (r, c), f in self.block_fill.items()},
            "nm_compliance": {f"{n}:{m}": round(v, 6) for (n, m), v in self.nm_compliance.items()},
            f"imbalance_{PROCESSING_UNITS}_units": round(self.imbalance, 6),
        }

    def to_json(self) -> dict:
        """Deprecated: :meth:`to_dict`."""
        warnings.warn(
            "WeightProfile.to_json() is deprecated: use to_dict()", DeprecationWarning, stacklevel=2
        )
        return self.to_dict()


#: Processing units the load imbalance is measured over (the device's 16 output lanes).
PROCESSING_UNITS = 16


def _block_stats(weight: np.ndarray, block: tuple[int, int]) -> tuple[float, float]:
    """(block density, fill) of ``weight`` cut into ``block``-shaped tiles."""
    r, c = block
    mask = block_nonzero_mask(weight, r, c)
    rows, cols = weight.shape
    stored = np.kron(mask, np.ones((r, c), dtype=bool))[:rows, :cols].sum()
    nnz = np.count_nonzero(weight)
    return float(mask.mean()) if mask.size else 0.0, float(nnz / stored) if stored else 1.0


def nm_compliance(weight: np.ndarray, n: int, m: int) -> float:
    """Fraction of ``m``-long groups along the reduction axis with at most ``n`` nonzeros."""
    rows, cols = weight.shape
    padded = np.pad(weight != 0, ((0, 0), (0, -cols % m)))
    counts = padded.reshape(rows, -1, m).sum(axis=2)
    return float((counts <= n).mean()) if counts.size else 1.0


def profile_weight(
    weight: np.ndarray, blocks=CANDIDATE_BLOCKS, patterns=CANDIDATE_NM
) -> WeightProfile:
    """Measure ``weight``; cheap (a few vectorised passes per candidate)."""
    w = np.asarray(weight)
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D weight, got shape {w.shape}")
    density = float(np.count_nonzero(w)) / w.size if w.size else 0.0
    profile = WeightProfile(
        shape=tuple(int(s) for s in w.shape),
        density=density,
        nm_compliance={(n, m): nm_compliance(w, n, m) for n, m in patterns},
        imbalance=imbalance(w, PROCESSING_UNITS),
    )
    for block in blocks:
        profile.measure_block(w, block)
    return profile
