"""Calibration samples for post-training quantization: the user's, checked, or generated.

A sample is a dict ``{input name: array}`` holding every input of the model;
a list of such dicts is several samples. A dict may also hold several samples
stacked on a leading axis: an array whose shape is the input's plus one
leading axis (``(4, 128, 384)`` for an input of ``(128, 384)``) is that many
samples, and every array of the dict must then hold the same number. Each
array (each sample of a stack) is checked against its input (rank, static dimensions, the same size
for a symbolic dimension wherever it appears, values representable in the
input's dtype, indices inside the tables they index) and cast to the input's
dtype. Without samples, :data:`DEFAULT_CALIBRATION_SAMPLES` seeded samples of
the inputs' static shapes are generated:

* float inputs: standard-normal noise (only good for smoke tests);
* integer inputs that index tables (token ids into an embedding ``Gather``):
  uniform over ``[0, rows)`` of the smallest table they index;
* other integer and boolean inputs (attention masks, for example): ones,
  i.e. every position attended;
* integer inputs whose values reach an index through other computation
  (position ids computed from a mask): no values are safe to guess, so a
  ``ModelError`` names the input and asks for samples.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import tvm

from ..errors import ModelError
from ..integer_inputs import IntegerInput, integer_inputs

DEFAULT_CALIBRATION_SAMPLES = 4


def _dims(param) -> tuple:
    """The input's dimensions: ints for static ones, the variable's name for symbolic ones."""
    return tuple(int(d) if isinstance(d, tvm.tirx.IntImm) else str(d) for d in param.ty.shape)


def _how_to_pass(name: str) -> str:
    return f"calibration={{{name!r}: array}}, or tvm-sparse compile --calibration {name}=FILE.npy"


def _valid_range(dtype: str, integer: IntegerInput) -> tuple[int, int]:
    """``[low, high)``: the values of an integer input's dtype that index inside its tables (if any)."""
    low, high = (
        (0, 2) if dtype == "bool" else (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max) + 1)
    )
    if integer.indexes_table:
        low, high = max(low, integer.low), min(high, integer.high)
    return low, high


def _checked(
    name: str, value, dims: tuple, dtype: str, integer: IntegerInput | None, sizes: dict
) -> np.ndarray:
    """``value`` as the input's dtype, after checking its shape and values; ``sizes`` collects symbolic sizes."""
    array = np.asarray(value)
    if array.dtype.kind not in "biuf":
        raise ModelError(
            f"calibration input {name}: dtype {array.dtype} is not numeric (the input is {dtype})"
        )
    if array.ndim != len(dims) or any(
        isinstance(d, int) and d != s for d, s in zip(dims, array.shape)
    ):
        stacked = "(N, " + ", ".join(map(str, dims)) + ")"
        raise ModelError(
            f"calibration input {name}: shape {array.shape}, expected {dims} (or N samples stacked as {stacked})"
        )
    for d, s in zip(dims, array.shape):
        if isinstance(d, str) and sizes.setdefault(d, (s, name))[0] != s:
            raise ModelError(
                f"calibration input {name}: dimension {d} is {s}, but {sizes[d][0]} in input {sizes[d][1]}"
            )
    if integer is None:
        return array.astype(dtype)
    if array.dtype.kind == "f" and not (
        np.isfinite(array).all() and (array == np.round(array)).all()
    ):
        raise ModelError(
            f"calibration input {name}: the input is {dtype}, but the values given are not all whole numbers"
        )
    low, high = _valid_range(dtype, integer)
    if array.size and (array.min() < low or array.max() >= high):
        what = (
            f"it indexes a table of {integer.high} rows"
            if integer.indexes_table
            else f"the input is {dtype}"
        )
        raise ModelError(
            f"calibration input {name}: values must lie in [{low}, {high}) ({what}), got {array.min()}..{array.max()}"
        )
    return array.astype(dtype)


def _generated(
    name: str, dims: tuple, dtype: str, integer: IntegerInput | None, rng: np.random.Generator
) -> np.ndarray:
    if any(isinstance(d, str) for d in dims):
        raise ModelError(
            f"input {name} has a symbolic shape {dims}: pass calibration samples ({_how_to_pass(name)})"
        )
    if integer is None:
        return np.asarray(rng.standard_normal(dims)).astype(dtype)
    if integer.computes_indices:
        raise ModelError(
            f"input {name} ({dtype}) reaches an index through other computation, so no calibration values can be "
            f"guessed for it: pass samples ({_how_to_pass(name)})"
        )
    if integer.indexes_table:
        return np.asarray(rng.integers(0, _valid_range(dtype, integer)[1], dims)).astype(dtype)
    return np.ones(dims, dtype)


def _unstacked(sample: Mapping, ranks: dict) -> list[dict]:
    """The samples in one dict: itself, or one per index of the leading axis its arrays are stacked on."""
    arrays = {name: np.asarray(value) for name, value in sample.items()}
    counts = {name: len(a) if a.ndim == ranks[name] + 1 else None for name, a in arrays.items()}
    if all(count is None for count in counts.values()):
        return [arrays]
    if len(set(counts.values())) > 1:
        given = ", ".join(
            f"{name} {'one sample' if count is None else f'{count} stacked'}"
            for name, count in counts.items()
        )
        raise ModelError(
            f"calibration: the inputs of one dict must hold the same number of stacked samples, got {given}"
        )
    if not next(iter(counts.values())):
        raise ModelError(
            f"calibration: the stacked arrays of inputs {', '.join(arrays)} hold no samples"
        )
    return [{name: a[i] for name, a in arrays.items()} for i in range(next(iter(counts.values())))]


def calibration_inputs(mod: tvm.IRModule, calibration=None) -> list[list[np.ndarray]]:
    """The calibration samples for ``mod["main"]``, each a list of arrays in the order of its parameters.

    ``calibration`` is a dict ``{input name: array}`` (one sample, or a
    stack of samples on a leading axis), a list of such dicts (several), or
    ``None`` for generated samples (see the module docstring). Raises
    ``ModelError`` naming the input for a missing or unknown input, a wrong
    rank or static dimension, stacks of different lengths in one dict, a symbolic dimension of two sizes in one
    sample, non-numeric values, non-integers or out-of-range values for an
    integer input (indices outside their table included), and for generated
    samples, a symbolic shape or an integer input whose valid values cannot be
    derived.
    """
    params = mod["main"].params
    names = [p.name for p in params]
    integers = integer_inputs(mod)
    specs = [(p.name, _dims(p), str(p.ty.dtype), integers.get(p.name)) for p in params]
    if calibration is None:
        rng = np.random.default_rng(0)
        return [
            [_generated(*spec, rng) for spec in specs] for _ in range(DEFAULT_CALIBRATION_SAMPLES)
        ]
    samples = [calibration] if isinstance(calibration, Mapping) else list(calibration)
    if not samples:
        raise ModelError("calibration: no samples given")
    out = []
    for i, sample in enumerate(samples):
        if not isinstance(sample, Mapping):
            raise ModelError(
                f"calibration sample {i} is a {type(sample).__name__}; expected a dict {{input name: array}}"
            )
        unknown = [n for n in sample if n not in names]
        missing = [n for n in names if n not in sample]
        if unknown or missing:
            problem = (
                f"no input named {', '.join(map(repr, unknown))}"
                if unknown
                else f"no values for input(s) {', '.join(missing)}"
            )
            raise ModelError(f"calibration: {problem} (the model's inputs: {', '.join(names)})")
        for arrays in _unstacked(sample, {name: len(dims) for name, dims, _, _ in specs}):
            sizes: dict = {}
            out.append(
                [
                    _checked(name, arrays[name], dims, dtype, integer, sizes)
                    for name, dims, dtype, integer in specs
                ]
            )
    return out
