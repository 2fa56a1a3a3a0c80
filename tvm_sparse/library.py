"""Compiled libraries on disk: the exported Relax VM executable plus its I/O description.

``tvm-sparse compile`` writes ``LIB.so`` (``export_library``) and ``LIB.so.json``
(input names, shapes and dtypes in the model's order, output names). The
library alone also works: ``relax.VirtualMachine(tvm.runtime.load_module(path),
tvm.cpu())["main"](*inputs)``.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tvm
from tvm import relax

from .errors import TVMSparseError


def metadata_path(library: str) -> str:
    return f"{library}.json"


def write_metadata(library: str, loaded, partition: dict | None = None) -> None:
    """Record the model's I/O (and for sparse-accel, where each layer runs) next to the library."""
    meta = {
        "inputs": [
            {"name": n, "shape": list(loaded.input_shapes[n]), "dtype": loaded.input_dtypes[n]}
            for n in loaded.input_names
        ],
        "outputs": list(loaded.output_names),
    }
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
        """Order ``feeds`` as the model expects them, checking names, shapes and dtypes."""
        if self.meta is None:
            return list(feeds.values())
        expected = self.meta["inputs"]
        names = [spec["name"] for spec in expected]
        unknown = sorted(set(feeds) - set(names))
        if unknown:
            raise TVMSparseError(f"unknown input(s) {', '.join(unknown)}; the model takes {', '.join(names)}")
        missing = [n for n in names if n not in feeds]
        if missing:
            raise TVMSparseError(f"missing input(s) {', '.join(missing)}")
        ordered = []
        for spec in expected:
            value = feeds[spec["name"]]
            shape = tuple(spec["shape"])
            static = all(isinstance(d, int) for d in shape)
            if static and tuple(value.shape) != shape:
                raise TVMSparseError(f"input {spec['name']}: shape {tuple(value.shape)}, expected {shape}")
            if str(value.dtype) != spec["dtype"]:
                raise TVMSparseError(f"input {spec['name']}: dtype {value.dtype}, expected {spec['dtype']}")
            ordered.append(value)
        return ordered

    def output_names(self, count: int) -> list[str]:
        names = list(self.meta["outputs"]) if self.meta else []
        return names if len(names) == count else [f"output{i}" for i in range(count)]

    def run(self, inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        dev = tvm.cpu()
        result = self.vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(x), dev) for x in inputs])
        values = [result] if hasattr(result, "numpy") else list(result)
        values = [v.numpy() for v in values]
        return dict(zip(self.output_names(len(values)), values))


def load_library(path: str) -> Library:
    """Load a library written by ``tvm-sparse compile`` (or any exported Relax executable)."""
    if not os.path.isfile(path):
        raise TVMSparseError(f"{path}: no such library")
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
