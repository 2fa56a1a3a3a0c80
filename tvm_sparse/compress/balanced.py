"""Load-balance-aware pruning (ESE): every processing unit keeps the same number of nonzeros.

Rows of an ``(out, in)`` weight are dealt to ``units`` processing units
round-robin (row ``i`` to unit ``i % units``, as ESE interleaves them). Plain
magnitude pruning leaves some units more work than others, and the slowest
unit sets the time; balanced pruning keeps the top weights of each unit's
rows separately, so all units finish together.
"""

from __future__ import annotations

import numpy as np

from ..formats import FormatError


def _check(units: int) -> None:
    if not isinstance(units, (int, np.integer)) or units < 1:
        raise FormatError(f"processing units must be a positive integer, got {units!r}")


def imbalance(weight: np.ndarray, units: int) -> float:
    """Max over mean nonzeros per unit (1.0: balanced; ``units`` wider than the rows count as idle)."""
    _check(units)
    counts = np.array([np.count_nonzero(weight[u::units]) for u in range(units)], np.float64)
    return float(counts.max() / counts.mean()) if counts.mean() > 0 else 1.0


def prune_balanced(weight: np.ndarray, density: float, units: int) -> np.ndarray:
    """Keep the ``density`` fraction of each unit's weights by magnitude (the same count per unit, when the
    units divide the rows)."""
    _check(units)
    if not 0 < density <= 1:
        raise FormatError(f"density must be in (0, 1], got {density}")
    w = np.asarray(weight)
    out = np.zeros_like(w)
    for u in range(units):
        part = w[
            u::units
        ]  # units get the same rows, give or take one when they do not divide the rows
        keep = int(round(density * part.size))
        if keep:
            flat = np.argsort(-np.abs(part), axis=None, kind="stable")[:keep]
            kept = np.zeros(part.size, bool)
            kept[flat] = True
            out[u::units] = np.where(kept.reshape(part.shape), part, 0)
    return out
