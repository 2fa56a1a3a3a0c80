"""Post-training int8 quantization of a device layer (symmetric, per output channel for weights, or per
tensor for shared-weight layers).

A layer ``y = act(x @ W.T + b)`` runs on the device as::

    x_q   = clip(round(x / s_x), -127, 127)                 (host, int8)
    acc   = x_q @ W_q.T + b_q                                (device, int32)
    y_q   = clip(round(acc * M[o]), -128, 127), M = s_x * s_w[o] / s_y   (device REQUANT)
    y     = y_q * s_y                                        (host)

with ``W_q = round(W / s_w[o])``, ``b_q = round(b / (s_x * s_w[o]))`` and
``M`` held as an integer multiplier and a right shift. ``s_x`` and ``s_y``
come from the absolute maxima seen on calibration inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..hw.integer import requantize

INT8_MAX = 127
#: Multipliers stay below 2**30 so that ``acc * multiplier`` fits the device's 64-bit product.
MULTIPLIER_BITS = 30


def scale_of(absmax: float) -> float:
    """The symmetric int8 scale of a tensor whose largest magnitude is ``absmax`` (1 for an all-zero one)."""
    return float(absmax) / INT8_MAX if absmax > 0 else 1.0


def quantize(x: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.rint(x / scale), -INT8_MAX, INT8_MAX).astype(np.int8)


@dataclass(frozen=True)
class QuantizedLayer:
    """The integer operands and scales of one device layer."""

    weight: np.ndarray  # int8 [N, K]
    weight_scale: np.ndarray  # float [N]
    bias: np.ndarray  # int32 [N]
    input_scale: float
    output_scale: float
    multiplier: np.ndarray  # int64 [N]
    shift: int

    @staticmethod
    def from_float(
        weight: np.ndarray,
        bias: np.ndarray | None,
        input_absmax: float,
        output_absmax: float,
        per_tensor: bool = False,
    ) -> QuantizedLayer:
        """``per_tensor`` gives every output channel the layer's scale, so that a weight holding few distinct
        values (a shared-weight codebook) keeps as few distinct int8 values."""
        absmax = np.abs(weight).max(axis=1)
        if per_tensor:
            absmax = np.full_like(absmax, absmax.max())
        weight_scale = np.where(absmax > 0, absmax / INT8_MAX, 1.0)
        w_q = np.clip(np.rint(weight / weight_scale[:, None]), -INT8_MAX, INT8_MAX).astype(np.int8)
        s_x, s_y = scale_of(input_absmax), scale_of(output_absmax)
        acc_scale = s_x * weight_scale
        b = np.zeros(weight.shape[0]) if bias is None else bias
        b_q = np.clip(np.rint(b / acc_scale), -(2**31), 2**31 - 1).astype(np.int64)
        real = acc_scale / s_y
        shift = (
            MULTIPLIER_BITS - 1 - max(0, math.ceil(math.log2(real.max())))
            if real.max() > 0
            else MULTIPLIER_BITS - 1
        )
        shift = int(min(62, max(1, shift)))
        multiplier = np.clip(np.rint(real * 2.0**shift), 0, 2**MULTIPLIER_BITS - 1).astype(np.int64)
        return QuantizedLayer(w_q, weight_scale, b_q, s_x, s_y, multiplier, shift)

    def reference(self, x_q: np.ndarray, relu: bool) -> np.ndarray:
        """The device's integer result for ``x_q`` (numpy, exact): what the simulator must reproduce."""
        acc = x_q.astype(np.int64) @ self.weight.astype(np.int64).T + self.bias
        return requantize(acc, self.multiplier, self.shift, relu)
