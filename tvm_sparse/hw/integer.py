"""The device's integer semantics, defined once: the simulator, the compiler's integer references and the
tuner's checks all use these (the tensor intrinsics write the same in TIR).

Accumulators are int32 and wrap (two's complement); requantization multiplies by an integer multiplier,
shifts right rounding half up, and saturates to int8 (to ``[0, 127]`` with ReLU).
"""

from __future__ import annotations

import numpy as np

from .isa import DeviceFault

#: The largest right shift (the product ``value * multiplier`` is an int64).
MAX_SHIFT = 62


def wrap32(values: np.ndarray) -> np.ndarray:
    """Integer ``values`` wrapped to int32 as the accumulators hold them."""
    return ((np.asarray(values).astype(np.int64) + 2**31) % 2**32 - 2**31).astype(np.int32)


def round_shift(value: np.ndarray, shift) -> np.ndarray:
    """Arithmetic shift right of int64 ``value``, rounding half up: ``(x + 2**(s-1)) >> s`` (``shift``
    scalar or per element, 0..62; :class:`DeviceFault` outside)."""
    shift = np.asarray(shift, dtype=np.int64)
    if (shift < 0).any() or (shift > MAX_SHIFT).any():
        raise DeviceFault(f"shift amount outside 0..{MAX_SHIFT}")
    rounding = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    return (value + rounding) >> shift


def requantize(value: np.ndarray, multiplier, shift: int, relu: bool = False) -> np.ndarray:
    """int64 ``value`` requantized to int8 range (as int64): ``clip(round_shift(value * multiplier, shift),
    lo, 127)``, ``lo`` 0 with ``relu`` else -128; ``multiplier`` per column or scalar."""
    return np.clip(
        round_shift(np.asarray(value, np.int64) * multiplier, np.int64(shift)),
        0 if relu else -128,
        127,
    )
