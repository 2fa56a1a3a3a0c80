"""Which format pays for a weight on a target, and by how much.

The host CPU model compares the block-sparse kernel with the dense matmul
schedule per useful FLOP:

    speedup(r x c) = efficiency(r, c) / block_density(r x c)

``efficiency`` is the throughput of the sparse kernel on the nonzero blocks
relative to the dense schedule on the whole matrix. It depends on how many
SIMD lanes a block-row fills (``r`` output features form one vector) and
drops for tiny matrices where loop overheads dominate. The constants were
measured with ``benchmarks/bsr_matmul.py`` (BERT-base shapes, AVX-512 host)
and are deliberately conservative: a rewrite happens only where the
prediction clears ``min_speedup``; below break-even the layer stays dense.
"""

from __future__ import annotations

from dataclasses import dataclass

from .profile import WeightProfile

#: Sparse-kernel throughput on stored blocks relative to the dense schedule,
#: when a block-row fills a 16-lane vector.
_FULL_VECTOR_EFFICIENCY = 0.75
#: Extra cost per block-row and row tile (loop setup, stores), in units of block FMAs.
_ROW_OVERHEAD_BLOCKS = 1.0


def _lane_efficiency(r: int) -> float:
    """Fraction of full-vector throughput reached with ``r``-lane vectors."""
    if r >= 16:
        return 1.0
    return {8: 0.75, 4: 0.35}.get(r, 0.12 if r < 4 else 0.5)


@dataclass(frozen=True)
class FormatChoice:
    """A format for one weight and its predicted speedup over dense."""

    format: str  # "dense" or "bsr"
    block_shape: tuple[int, int] | None
    predicted_speedup: float

    @property
    def label(self) -> str:
        if self.format == "dense":
            return "dense"
        r, c = self.block_shape
        return f"bsr {r}x{c}"


DENSE = FormatChoice("dense", None, 1.0)


class CPUCostModel:
    """Predicts the block-sparse kernel's speedup over the dense schedule on the host CPU."""

    def __init__(self, min_speedup: float = 1.1):
        self.min_speedup = min_speedup

    def predict(self, profile: WeightProfile, block_shape: tuple[int, int]) -> float:
        r, c = block_shape
        density = profile.block_density[block_shape]
        rows, cols = profile.shape
        block_cols = -(-cols // c)
        # Per block-row the kernel pays its stored blocks plus a fixed overhead.
        work = density * block_cols + _ROW_OVERHEAD_BLOCKS / c
        return _FULL_VECTOR_EFFICIENCY * _lane_efficiency(r) * block_cols / work

    def candidates(self, profile: WeightProfile) -> list[FormatChoice]:
        """Every measured block shape with its prediction, best first."""
        choices = [FormatChoice("bsr", b, self.predict(profile, b)) for b in profile.block_density]
        return sorted(choices, key=lambda ch: -ch.predicted_speedup)

    def choose(self, profile: WeightProfile) -> FormatChoice:
        """The best format, or dense when no sparse format clears ``min_speedup``."""
        best = self.candidates(profile)[0] if profile.block_density else DENSE
        return best if best.predicted_speedup >= self.min_speedup else DENSE
