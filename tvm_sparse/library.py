"""Compiled libraries on disk: the exported Relax VM executable plus its I/O description.

``tvm-sparse compile`` writes ``LIB.so`` (``export_library``) and ``LIB.so.json``
(input names, shapes, with ``null`` or a name for each symbolic dimension, dtypes
and, for token ids, the valid index range, in the model's order; output names). The
library alone also works: ``relax.VirtualMachine(tvm.runtime.load_module(path),
tvm.cpu())["main"](*inputs)`` after ``import tvm_sparse`` (which registers the device
runtime's functions); :func:`load_library` also sizes TVM's thread pool to every CPU
(:func:`~tvm_sparse.threads.use_available_cpus`), which that bare path leaves to the caller.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tvm
from tvm import relax

from .errors import TVMSparseError
from .input_shapes import specialize
from .integer_inputs import integer_inputs
from .threads import use_available_cpus


def metadata_path(library: str) -> str:
    return f"{library}.json"


def _dim(dim):
    """A dimension as the metadata records it: an int, a symbolic dimension's name, or None (unnamed)."""
    if isinstance(dim, tvm.tirx.IntImm):
        return int(dim)
    return str(dim) if not isinstance(dim, tvm.tirx.Var) or dim.name else None


def write_metadata(
    library: str, loaded, partition: dict | None = None, input_shapes: dict | None = None
) -> None:
    """Record the model's I/O (and for sparse-accel, where each layer runs) next to the library.

    Each input gets its ``name``, ``dtype`` and ``shape`` (symbolic dimensions
    as their name, or ``null`` when unnamed, unless ``input_shapes`` set them:
    see :func:`~tvm_sparse.input_shapes.specialize`); an integer input that
    indexes tables also gets ``index_range``, ``[low, high)``.
    """
    mod = specialize(loaded.mod, input_shapes)
    integers = integer_inputs(mod)
    inputs = []
    for name, param in zip(loaded.input_names, mod["main"].params):
        spec = {
            "name": name,
            "shape": [_dim(d) for d in param.ty.shape],
            "dtype": loaded.input_dtypes[name],
        }
        integer = integers.get(param.name)
        if integer is not None and integer.indexes_table:
            spec["index_range"] = [integer.low, integer.high]
        inputs.append(spec)
    meta = {"inputs": inputs, "outputs": list(loaded.output_names)}
    if partition is not None:
        meta["partition"] = partition
    with open(metadata_path(library), "w") as f:
        json.dump(meta, f, indent=2)


class Library:
    """A loaded library, its VM and what its inputs must look like."""

    def __init__(self, path: str, vm: relax.VirtualMachine, meta: dict | None):
        self.path = path
        self.vm = vm
        self.meta = meta

    def check_inputs(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Order ``feeds`` as the model expects them, checking names, dtypes, shapes and index ranges.

        A symbolic dimension (a name or ``null`` in the metadata) takes any
        size, the same one wherever its name appears; static dimensions must
        match. Raises ``TVMSparseError`` with one line naming the input.
        """
        if self.meta is None:
            return list(feeds.values())
        expected = self.meta["inputs"]
        names = [spec["name"] for spec in expected]
        unknown = sorted(set(feeds) - set(names))
        if unknown:
            raise TVMSparseError(
                f"unknown input(s) {', '.join(unknown)}; the model takes {', '.join(names)}"
            )
        missing = [n for n in names if n not in feeds]
        if missing:
            raise TVMSparseError(f"missing input(s) {', '.join(missing)}")
        sizes: dict = {}  # symbolic dimension name -> (size, the input that set it)
        for spec in expected:
            _check_input(spec, feeds[spec["name"]], sizes)
        return [feeds[n] for n in names]

    def output_names(self, count: int) -> list[str]:
        names = list(self.meta["outputs"]) if self.meta else []
        return names if len(names) == count else [f"output{i}" for i in range(count)]

    def run(self, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        dev = tvm.cpu()
        result = self.vm["main"](
            *[tvm.runtime.tensor(np.ascontiguousarray(x), dev) for x in inputs]
        )
        values = [result] if hasattr(result, "numpy") else list(result)
        values = [v.numpy() for v in values]
        return dict(zip(self.output_names(len(values)), values))


def _check_input(spec: dict, value: np.ndarray, sizes: dict) -> None:
    name, shape = spec["name"], spec["shape"]
    if str(value.dtype) != spec["dtype"]:
        raise TVMSparseError(f"input {name}: dtype {value.dtype}, expected {spec['dtype']}")
    expected = (
        "("
        + ", ".join("?" if d is None else str(d) for d in shape)
        + ("," if len(shape) == 1 else "")
        + ")"
    )
    if value.ndim != len(shape) or any(
        isinstance(d, int) and d != s for d, s in zip(shape, value.shape)
    ):
        raise TVMSparseError(f"input {name}: shape {tuple(value.shape)}, expected {expected}")
    for d, s in zip(shape, value.shape):
        if isinstance(d, str) and sizes.setdefault(d, (s, name))[0] != s:
            raise TVMSparseError(
                f"input {name}: dimension {d} is {s}, but {sizes[d][0]} in input {sizes[d][1]}"
            )
    if "index_range" in spec and value.size:
        low, high = spec["index_range"]
        if value.min() < low or value.max() >= high:
            raise TVMSparseError(
                f"input {name}: values must lie in [{low}, {high}) (it indexes a table of {high} rows), got {value.min()}..{value.max()}"
            )


def load_library(path: str) -> Library:
    """Load a library written by ``tvm-sparse compile`` (or any exported Relax executable).

    Runs on every available CPU unless ``TVM_NUM_THREADS`` is set (:func:`~tvm_sparse.threads.use_available_cpus`).
    """
    if os.path.isdir(path):
        raise TVMSparseError(f"{path}: is a directory, not a compiled library")
    if not os.path.isfile(path):
        raise TVMSparseError(f"{path}: no such library")
    use_available_cpus()
    try:
        vm = relax.VirtualMachine(tvm.runtime.load_module(path), tvm.cpu())
        vm["main"]
    except Exception:
        raise TVMSparseError(f"{path}: not a compiled tvm-sparse library") from None
    meta = None
    if os.path.isfile(metadata_path(path)):
        with open(metadata_path(path)) as f:
            meta = json.load(f)
    return Library(path, vm, meta)
