"""Magnitude pruning of a weight seen as ``(out_features, in_features)``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..formats import FormatError, pad_to_blocks, parse_block_shape


@dataclass(frozen=True)
class Pattern:
    """A pruning pattern: ``unstructured``, ``block`` (with a block shape) or ``nm`` (N of every M)."""

    kind: str
    block_shape: tuple[int, int] | None = None
    n: int | None = None
    m: int | None = None

    def __str__(self) -> str:
        if self.kind == "block":
            return "block:{}x{}".format(*self.block_shape)
        if self.kind == "nm":
            return f"nm:{self.n}:{self.m}"
        return self.kind


def parse_pattern(text: str) -> Pattern:
    """Parse ``unstructured``, ``block:RxC`` or ``nm:N:M``."""
    kind, _, arg = text.strip().lower().partition(":")
    if kind == "unstructured" and not arg:
        return Pattern("unstructured")
    if kind == "block" and arg:
        return Pattern("block", block_shape=parse_block_shape(arg))
    if kind == "nm":
        parts = arg.split(":")
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            n, m = int(parts[0]), int(parts[1])
            if 0 < n < m:
                return Pattern("nm", n=n, m=m)
            raise FormatError(f"pattern {text!r}: need 0 < N < M")
    raise FormatError(f"unknown pruning pattern {text!r} (use unstructured, block:RxC or nm:N:M)")


def _check_density(density: float) -> float:
    if not 0.0 < density <= 1.0:
        raise FormatError(f"density must be in (0, 1], got {density}")
    return float(density)


def _keep_top(scores: np.ndarray, keep: int) -> np.ndarray:
    """Boolean mask of the ``keep`` largest scores (ties broken by position)."""
    mask = np.zeros(scores.size, dtype=bool)
    if keep > 0:
        mask[np.argsort(-scores.ravel(), kind="stable")[:keep]] = True
    return mask.reshape(scores.shape)


def prune_unstructured(weight: np.ndarray, density: float) -> np.ndarray:
    """Keep the ``density`` fraction of entries with the largest magnitude."""
    keep = round(_check_density(density) * weight.size)
    return np.where(_keep_top(np.abs(weight), keep), weight, 0).astype(weight.dtype)


def prune_blocks(weight: np.ndarray, block_shape, density: float) -> np.ndarray:
    """Keep the ``density`` fraction of ``r x c`` blocks with the largest L2 norm."""
    r, c = parse_block_shape(block_shape)
    rows, cols = weight.shape
    padded = pad_to_blocks(weight, r, c)
    nbr, nbc = padded.shape[0] // r, padded.shape[1] // c
    norms = np.sqrt((padded.reshape(nbr, r, nbc, c).astype(np.float64) ** 2).sum(axis=(1, 3)))
    keep = _keep_top(norms, max(1, round(_check_density(density) * norms.size)))
    mask = np.kron(keep, np.ones((r, c), dtype=bool))[:rows, :cols]
    return np.where(mask, weight, 0).astype(weight.dtype)


def prune_nm(weight: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep the ``n`` largest of every ``m`` consecutive entries along the reduction axis."""
    rows, cols = weight.shape
    padded = np.pad(weight, ((0, 0), (0, -cols % m)))
    groups = np.abs(padded).reshape(rows, -1, m)
    order = np.argsort(-groups, axis=2, kind="stable")
    mask = np.zeros_like(groups, dtype=bool)
    np.put_along_axis(mask, order[:, :, :n], True, axis=2)
    return np.where(mask.reshape(rows, -1)[:, :cols], weight, 0).astype(weight.dtype)


def prune_weight(weight: np.ndarray, pattern: Pattern | str, density: float | None = None) -> np.ndarray:
    """Prune ``weight`` (out, in) to ``pattern``; N:M fixes its own density."""
    pattern = parse_pattern(pattern) if isinstance(pattern, str) else pattern
    w = np.asarray(weight)
    if w.ndim != 2 or not np.issubdtype(w.dtype, np.floating):
        raise FormatError(f"can only prune 2-D floating-point weights, got {w.dtype} {w.shape}")
    if pattern.kind == "nm":
        return prune_nm(w, pattern.n, pattern.m)
    if density is None:
        raise FormatError(f"pattern {pattern} needs a density")
    if pattern.kind == "block":
        return prune_blocks(w, pattern.block_shape, density)
    return prune_unstructured(w, density)
