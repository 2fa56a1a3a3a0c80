"""Kernel decomposition of convolutions (PENNI / ESCALATE).

Every ``k x k`` kernel of a layer ``W[O, I, k, k]`` is written as a
combination of ``r`` basis kernels shared by the whole layer::

    W[o, i] ~= sum_j coeff[o, i, j] * basis[j]

The basis is the top ``r`` right singular vectors of the ``[O*I, k*k]``
matrix of kernels (so the approximation is the best rank-``r`` one) and the
coefficients are the projections on it. The rank is given, or the smallest
that captures an energy fraction of the singular values. Optional, explicitly
lossy steps: magnitude pruning of the coefficients (in blocks of 16 output
maps x 1 input channel, the shape the block-sparse kernels run fastest) and
hybrid quantization (8-bit basis, ternary coefficients per output channel).

ESCALATE's reorganised computation: first combine input channels with the
coefficients (a 1x1 convolution producing ``O * r`` maps, channel ``o * r + j``),
then convolve each output's ``r`` maps with the shared basis and sum (a grouped
convolution with ``O`` groups whose kernels are the basis).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..formats import FormatError
from .magnitude import prune_blocks

#: Coefficient pruning keeps whole blocks of 16 output channels (same basis index) x 1 input channel:
#: contiguous rows of the 1x1 convolution once its maps are ordered basis-major (``j * O + o``).
COEFFICIENT_BLOCK = (16, 1)


@dataclass(frozen=True)
class Decomposition:
    """``weight ~= einsum('oij,jhw->oihw', coefficients, basis)``."""

    basis: np.ndarray  # [r, k, k]
    coefficients: np.ndarray  # [O, I, r]
    energy: float  # fraction of the squared singular values the rank keeps

    @property
    def rank(self) -> int:
        return self.basis.shape[0]

    def weight(self) -> np.ndarray:
        return np.einsum("oij,jhw->oihw", self.coefficients, self.basis).astype(self.basis.dtype)

    def relative_error(self, weight: np.ndarray) -> float:
        return float(np.linalg.norm(self.weight() - weight) / max(np.linalg.norm(weight), 1e-30))


def energy_profile(weight: np.ndarray) -> np.ndarray:
    """Energy captured by the best rank-r basis, for r = 1 .. k*k."""
    s = np.linalg.svd(_kernel_matrix(weight), compute_uv=False)
    energy = np.cumsum(s**2)
    return energy / energy[-1] if energy[-1] > 0 else np.ones_like(energy)


def _kernel_matrix(weight: np.ndarray) -> np.ndarray:
    w = np.asarray(weight)
    if w.ndim != 4 or w.shape[2] != w.shape[3]:
        raise FormatError(
            f"kernel decomposition needs square conv kernels [O, I, k, k], got shape {w.shape}"
        )
    return w.reshape(w.shape[0] * w.shape[1], -1).astype(np.float64)


def decompose_kernels(
    weight: np.ndarray, rank: int | None = None, energy: float = 0.99
) -> Decomposition:
    """The best rank-``rank`` shared basis (or the smallest rank capturing ``energy``)."""
    w = np.asarray(weight)
    matrix = _kernel_matrix(w)
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    total = float((s**2).sum())
    if rank is None:
        if not 0 < energy <= 1:
            raise FormatError(f"energy must be in (0, 1], got {energy}")
        captured = np.cumsum(s**2) / total if total > 0 else np.ones_like(s)
        rank = int(np.searchsorted(captured, energy - 1e-12) + 1)
    if not 1 <= rank <= vt.shape[0]:
        raise FormatError(
            f"rank must be between 1 and {vt.shape[0]} for {w.shape[2]}x{w.shape[3]} kernels, got {rank}"
        )
    o, i, k, _ = w.shape
    basis = vt[:rank].reshape(rank, k, k)
    coefficients = (u[:, :rank] * s[:rank]).reshape(o, i, rank)
    kept = float((s[:rank] ** 2).sum() / total) if total > 0 else 1.0
    return Decomposition(basis.astype(w.dtype), coefficients.astype(w.dtype), kept)


def prune_coefficients(
    d: Decomposition, density: float, block: tuple[int, int] = COEFFICIENT_BLOCK
) -> Decomposition:
    """Keep the ``density`` fraction of coefficient blocks by magnitude: ``block`` is (output channels of one
    basis kernel, input channels); 16x1 suits the CPU kernels, 16x16 the device's block mode."""
    o, i, r = d.coefficients.shape
    maps = d.coefficients.transpose(2, 0, 1).reshape(r * o, i)  # basis-major maps: row j * O + o
    pruned = prune_blocks(maps, block, density)
    return Decomposition(d.basis, pruned.reshape(r, o, i).transpose(1, 2, 0).copy(), d.energy)


def quantize_hybrid(d: Decomposition) -> Decomposition:
    """8-bit basis (symmetric, per basis kernel) and ternary coefficients (per output channel: 0 or +-alpha)."""
    basis = d.basis
    scale = np.abs(basis).reshape(d.rank, -1).max(axis=1) / 127
    scale = np.where(scale > 0, scale, 1)[:, None, None]
    basis_q = np.clip(np.rint(basis / scale), -127, 127) * scale
    c = d.coefficients
    magnitude = np.abs(c)
    threshold = 0.7 * magnitude.mean(axis=(1, 2), keepdims=True)
    keep = magnitude > threshold
    alpha = np.where(
        keep.any(axis=(1, 2), keepdims=True),
        (magnitude * keep).sum(axis=(1, 2), keepdims=True)
        / np.maximum(keep.sum(axis=(1, 2), keepdims=True), 1),
        0,
    )
    ternary = np.sign(c) * keep * alpha
    return Decomposition(basis_q.astype(basis.dtype), ternary.astype(c.dtype), d.energy)
