"""Magnitude pruning of a weight seen as ``(out_features, in_features)``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from ..formats import FormatError, pad_to_blocks, parse_block_shape

#: The pruning patterns' kinds (:class:`Pattern`).
PatternKind = Literal["unstructured", "block", "nm", "decompose"]
PATTERN_KINDS: tuple[PatternKind, ...] = get_args(PatternKind)


@dataclass(frozen=True)
class Pattern:
    """A pruning pattern: ``unstructured``, ``block`` (with a block shape), ``nm`` (N of every M), or
    ``decompose`` (kernel decomposition of convolutions, with its rank or energy and lossy options).

    Another ``kind`` is a :class:`~tvm_sparse.formats.FormatError`; :func:`parse_pattern` reads the
    text forms."""

    kind: PatternKind
    block_shape: tuple[int, int] | None = None
    n: int | None = None
    m: int | None = None
    rank: int | None = None
    energy: float | None = None
    coefficient_density: float | None = None
    coefficient_block: tuple[int, int] = (16, 1)
    hybrid_quantization: bool = False

    def __post_init__(self):
        if self.kind not in PATTERN_KINDS:
            raise FormatError(
                f"unknown pruning pattern kind {self.kind!r} (one of {', '.join(PATTERN_KINDS)})"
            )

    def __str__(self) -> str:
        if self.kind == "block":
            return "block:{}x{}".format(*self.block_shape)
        if self.kind == "nm":
            return f"nm:{self.n}:{self.m}"
        if self.kind == "decompose":
            parts = [f"rank={self.rank}" if self.rank else f"energy={self.energy}"]
            if self.coefficient_density is not None:
                parts.append(f"coef-density={self.coefficient_density}")
            if self.coefficient_block != (16, 1):
                parts.append("coef-block={}x{}".format(*self.coefficient_block))
            if self.hybrid_quantization:
                parts.append("quant=hybrid")
            return "decompose:" + ",".join(parts)
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
    if kind == "decompose":
        return _parse_decompose(text, arg)
    raise FormatError(
        f"unknown pruning pattern {text!r} (use unstructured, block:RxC, nm:N:M or decompose:rank=R[,coef-density=D][,quant=hybrid])"
    )


def _parse_decompose(text: str, arg: str) -> Pattern:
    options = {}
    for item in filter(None, arg.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise FormatError(f"pattern {text!r}: expected key=value, got {item!r}")
        options[key.strip()] = value.strip()
    unknown = sorted(set(options) - {"rank", "energy", "coef-density", "coef-block", "quant"})
    if unknown:
        raise FormatError(
            f"pattern {text!r}: unknown option(s) {', '.join(unknown)} (rank, energy, coef-density, coef-block, quant)"
        )
    block = parse_block_shape(options.get("coef-block", "16x1"))
    try:
        rank = int(options["rank"]) if "rank" in options else None
        energy = float(options["energy"]) if "energy" in options else (None if rank else 0.99)
        density = float(options["coef-density"]) if "coef-density" in options else None
    except ValueError as err:
        raise FormatError(f"pattern {text!r}: {err}") from None
    if rank is not None and rank < 1:
        raise FormatError(f"pattern {text!r}: rank must be at least 1")
    if energy is not None and not 0 < energy <= 1:
        raise FormatError(f"pattern {text!r}: energy must be in (0, 1]")
    if density is not None:
        _check_density(density)
    if options.get("quant", "hybrid") != "hybrid":
        raise FormatError(f"pattern {text!r}: the only quantization is quant=hybrid")
    return Pattern(
        "decompose",
        rank=rank,
        energy=energy,
        coefficient_density=density,
        coefficient_block=block,
        hybrid_quantization="quant" in options,
    )


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
    """Keep the ``density`` fraction of ``r x c`` blocks with the largest root-mean-square magnitude
    (the L2 norm over the entries a block has: one cut by the weight's edge is not pruned for the entries
    it lacks)."""
    r, c = parse_block_shape(block_shape)
    rows, cols = weight.shape
    padded = pad_to_blocks(weight, r, c)
    nbr, nbc = padded.shape[0] // r, padded.shape[1] // c
    squares = (padded.reshape(nbr, r, nbc, c).astype(np.float64) ** 2).sum(axis=(1, 3))
    entries = pad_to_blocks(np.ones(weight.shape), r, c).reshape(nbr, r, nbc, c).sum(axis=(1, 3))
    rms = np.sqrt(squares / entries)
    keep = _keep_top(rms, max(1, round(_check_density(density) * rms.size)))
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


def prune_weight(
    weight: np.ndarray, pattern: Pattern | str, density: float | None = None
) -> np.ndarray:
    """Prune ``weight`` (out, in) to ``pattern``; N:M fixes its own density (N/M: a ``density`` with it is a
    :class:`FormatError`, as is a missing one with the other patterns)."""
    pattern = parse_pattern(pattern) if isinstance(pattern, str) else pattern
    w = np.asarray(weight)
    if w.ndim != 2 or not np.issubdtype(w.dtype, np.floating):
        raise FormatError(f"can only prune 2-D floating-point weights, got {w.dtype} {w.shape}")
    if pattern.kind == "nm":
        if density is not None:
            raise FormatError(
                f"a density does not apply to {pattern}: N:M keeps {pattern.n} of every {pattern.m} weights"
            )
        return prune_nm(w, pattern.n, pattern.m)
    if pattern.kind == "decompose":
        raise FormatError(
            "decompose applies to convolution weights [O, I, k, k] (see prune.decompose), not to a matrix"
        )
    if density is None:
        raise FormatError(f"pattern {pattern} needs a density")
    if pattern.kind == "block":
        return prune_blocks(w, pattern.block_shape, density)
    return prune_unstructured(w, density)
