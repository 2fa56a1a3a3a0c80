"""Which format pays for a weight on a target, and by how much.

The host CPU model compares the block-sparse kernel with the dense matmul
schedule per useful FLOP:

    speedup(r x c) = efficiency(r, c) / block_density(r x c)

``efficiency`` is the throughput of the sparse kernel on the nonzero blocks
relative to the dense schedule on the whole matrix. It depends on how many
SIMD lanes a block-row fills (``r`` output features form one vector), on how
many columns share a block's index (``c``), and drops for tiny matrices where
loop overheads dominate. The constants were
measured with ``benchmarks/bsr_matmul.py`` (BERT-base shapes, AVX-512 host)
and are deliberately conservative: a rewrite happens only where the
prediction clears ``min_speedup``; below break-even the layer stays dense.

Blocks one output row high (``1 x c``, unstructured weights as ``1 x 1``) run
the kernel's row-vectorised variant (the activation rows form the vectors), at
``_ROW_VECTOR_EFFICIENCY`` of the dense schedule per stored FMA.

An N:M weight (every group fully compliant) runs the N:M kernel, predicted at
``0.65 * M / N`` of the dense schedule's speed (1.3x for 2:4; measured 1.3-1.4x
for 2:4 and 2.2-2.6x for 1:4 and 2:8 on the BERT-base shapes). The kernel needs
AVX-512 permutes; without them N:M is not a candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .profile import WeightProfile

#: Sparse-kernel throughput on stored blocks relative to the dense schedule,
#: when a block-row fills a 16-lane vector.
_FULL_VECTOR_EFFICIENCY = 0.75
#: Extra cost per block-row and row tile (loop setup, stores), in units of block FMAs.
_ROW_OVERHEAD_BLOCKS = 1.0
#: Cost of a stored block beyond its ``c`` column FMAs (its index load and address arithmetic), in column
#: FMAs; ``_FULL_VECTOR_EFFICIENCY`` was measured with one-column blocks, which pay it on every column.
#: Measured: 8x1 blocks 1.32 ms vs 8x8 blocks 1.03 ms on a 28x28 3x3 256->256 convolution at density 0.1.
_BLOCK_OVERHEAD_COLUMNS = 0.3
#: Throughput of the row-vectorised kernel (blocks one output high) on stored blocks relative to the
#: dense schedule: measured 0.45 with 1x1 blocks on a 768x3072 weight at density 0.1, 128 rows.
_ROW_VECTOR_EFFICIENCY = 0.35
#: N:M kernel throughput per kept value relative to the dense schedule.
_NM_EFFICIENCY = 0.65


def _column_efficiency(c: int) -> float:
    """Throughput with ``c``-column blocks relative to one-column blocks (the per-block cost amortised)."""
    return (1 + _BLOCK_OVERHEAD_COLUMNS) / (1 + _BLOCK_OVERHEAD_COLUMNS / c)


def _lane_efficiency(r: int) -> float:
    """Fraction of full-vector throughput reached with ``r``-lane vectors."""
    if r >= 16:
        return 1.0
    return {8: 0.75, 4: 0.35}.get(r, 0.12 if r < 4 else 0.5)


#: The host CPU's weight formats: the dense kernel, the block-sparse one (BSR) and the N:M one.
KernelFormat = Literal["dense", "bsr", "nm"]


@dataclass(frozen=True)
class FormatChoice:
    """A format for one weight and its predicted speedup over dense."""

    format: KernelFormat
    block_shape: tuple[int, int] | None
    predicted_speedup: float
    nm: tuple[int, int] | None = None  # (N, M) for "nm"

    @property
    def label(self) -> str:
        if self.format == "dense":
            return "dense"
        if self.format == "nm":
            return "nm {}:{}".format(*self.nm)
        r, c = self.block_shape
        return f"bsr {r}x{c}"


DENSE = FormatChoice("dense", None, 1.0)


class CPUCostModel:
    """Predicts the sparse kernels' speedup over the dense schedule on the host CPU."""

    def __init__(self, min_speedup: float = 1.1, nm_kernel: bool = True):
        self.min_speedup = min_speedup
        self.nm_kernel = nm_kernel  # whether the target can run the N:M kernel (AVX-512)

    def predict(self, profile: WeightProfile, block_shape: tuple[int, int]) -> float:
        r, c = block_shape
        density = profile.block_density[block_shape]
        rows, cols = profile.shape
        block_cols = -(-cols // c)
        # Per block-row the kernel pays its stored blocks plus a fixed overhead.
        work = density * block_cols + _ROW_OVERHEAD_BLOCKS / c
        efficiency = (
            _ROW_VECTOR_EFFICIENCY if r == 1 else _FULL_VECTOR_EFFICIENCY * _lane_efficiency(r)
        )
        return efficiency * _column_efficiency(c) * block_cols / work

    def candidates(self, profile: WeightProfile, nm: bool = True) -> list[FormatChoice]:
        """Every measured block shape, and (with ``nm``) each N:M pattern the weight follows exactly, best first."""
        choices = [FormatChoice("bsr", b, self.predict(profile, b)) for b in profile.block_density]
        if nm and self.nm_kernel:
            choices += [
                FormatChoice("nm", None, _NM_EFFICIENCY * m / n, nm=(n, m))
                for (n, m), compliance in profile.nm_compliance.items()
                if compliance == 1.0 and 16 % m == 0
            ]
        return sorted(choices, key=lambda ch: -ch.predicted_speedup)

    def choose(self, profile: WeightProfile, nm: bool = True) -> FormatChoice:
        """The best format, or dense when no sparse format clears ``min_speedup``."""
        candidates = self.candidates(profile, nm)
        best = candidates[0] if candidates else DENSE
        return best if best.predicted_speedup >= self.min_speedup else DENSE
