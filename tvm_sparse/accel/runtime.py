"""Runtime entry points of device layers, registered as TVM global functions by ``import tvm_sparse``.

The compiled Relax module calls them with ``call_dps_packed``:

* ``tvm_sparse.accel.run_layer(x, blob, out)``: quantize ``x``, run the
  layer's program on the device (the bundled simulator), dequantize into
  ``out``; the layer's counters go to the enclosing :func:`profile`;
* ``tvm_sparse.accel.calibrate_layer(x, weight, bias, info, out)``: the
  float layer in numpy, recording the largest magnitudes of its input and
  output into the statistics of the enclosing :func:`calibration_statistics`
  (the compiler's post-training quantization reads them).

A real driver would implement the same two functions. Both keep no state between calls (a layer's
blob is decoded at each call); what they record goes to the caller's scope (context variables), apart
from the deprecated :func:`last_run` record.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import tvm

from ..codegen.layer import (
    LayerHeader,
    basis_conv_float,
    conv_geometry,
    decode_layer,
    expand_float,
    gemm_rows,
)
from ..codegen.quantize import quantize
from ..errors import TVMSparseError
from ..hw.device import Device
from ..sim import run

#: The device runs recorded now: the innermost :func:`profile`'s list.
_PROFILE: ContextVar[list | None] = ContextVar("tvm_sparse_profile", default=None)
#: Deprecated with :func:`last_run`: the last 4096 device runs of the process.
_RUN: deque = deque(maxlen=4096)
#: The statistics the calibration layers run now record into (one build's: :func:`calibration_statistics`).
_CALIBRATION: ContextVar[dict | None] = ContextVar("tvm_sparse_calibration", default=None)


@contextmanager
def profile() -> Iterator[list]:
    """Record the device layers run inside the block: ``[(layer name, mode, SimReport)]`` in run order
    (:func:`~tvm_sparse.accel.run_report.run_report` tabulates them). The innermost block records;
    threads do not share one."""
    runs: list = []
    token = _PROFILE.set(runs)
    try:
        yield runs
    finally:
        _PROFILE.reset(token)


@contextmanager
def calibration_statistics() -> Iterator[dict]:
    """The statistics of the calibration layers run inside the block, ``{layer index: {"input_absmax",
    "output_absmax" (floats), "rows" (the first sample's float [M, K] input rows)}}``; blocks nest and
    threads do not share them."""
    stats: dict = {}
    token = _CALIBRATION.set(stats)
    try:
        yield stats
    finally:
        _CALIBRATION.reset(token)


def _layer(blob) -> tuple[LayerHeader, object, Device]:
    """Decode a layer's blob on every call: no cache (decoding is about 1-2% of a BERT-size layer's
    simulated run, 0.3-0.7 ms against 7 ms for a 64x128 toy layer), so the runtime keeps no state."""
    header, program = decode_layer(blob.numpy())
    return header, program, Device.from_dict(header.device)


def run_layer(x, blob, out) -> None:
    header, program, device = _layer(blob)
    rows = gemm_rows(x.numpy(), header.reduction, conv_geometry(header.conv))
    x_q = np.zeros((header.rows, header.reduction_padded), np.int8)
    x_q[:, : header.reduction] = quantize(rows, header.input_scale)
    dram = bytearray(program.dram)
    dram[header.x_addr : header.x_addr + x_q.nbytes] = x_q.tobytes()
    result = run(dataclasses.replace(program, dram=bytes(dram)), device)
    y_q = result.read(
        header.out_addr, (header.output_rows or header.rows, header.outputs_padded), np.int8
    )[:, : header.outputs]
    out.copyfrom(
        (y_q.astype(np.float32) * np.float32(header.output_scale)).reshape(header.output_shape)
    )
    record = (header.name, header.mode, result.report)
    if (runs := _PROFILE.get()) is not None:
        runs.append(record)
    _RUN.append(record)


def calibrate_layer(x, weight, bias, info, out) -> None:
    """Float forward of a layer (weight ``[N, K]``), recording the input/output absolute maxima.

    ``info`` is JSON bytes: the layer's index, ``relu``, ``reduction`` and ``conv`` geometry, or the
    ``basis`` or ``expand`` geometry of a decomposed layer's step on the basis engine.
    """
    recording = _CALIBRATION.get()
    if recording is None:
        raise TVMSparseError(
            "a calibration layer ran outside tvm_sparse.accel.runtime.calibration_statistics()"
        )
    meta = json.loads(info.numpy().tobytes())
    if (
        meta.get("basis") is not None
    ):  # a decomposed layer's basis convolution; weight is [O, r, k, k]
        rows = x.numpy().reshape(-1, meta["reduction"])
        y = (
            basis_conv_float(
                x.numpy(), weight.numpy(), meta["basis"]["stride"], meta["basis"]["padding"]
            )
            + bias.numpy()
        )
    elif (
        meta.get("expand") is not None
    ):  # a decomposed layer's basis-first step; weight is the basis [r, k, k]
        rows = x.numpy().reshape(-1, meta["reduction"])
        y = expand_float(
            x.numpy(), weight.numpy(), meta["expand"]["stride"], meta["expand"]["padding"]
        )
    else:
        rows = gemm_rows(x.numpy(), meta["reduction"], conv_geometry(meta["conv"]))
        y = rows @ weight.numpy().T + bias.numpy()
    if meta["relu"]:
        y = np.maximum(y, 0)
    stats = recording.setdefault(
        meta["index"], {"input_absmax": 0.0, "output_absmax": 0.0, "rows": rows}
    )
    stats["input_absmax"] = max(stats["input_absmax"], float(np.abs(rows).max(initial=0)))
    stats["output_absmax"] = max(stats["output_absmax"], float(np.abs(y).max(initial=0)))
    out.copyfrom(y.astype(np.float32).reshape(tuple(out.shape)))


def last_run() -> list:
    """Deprecated (use :func:`profile`): ``(layer name, mode, SimReport)`` of each device layer the
    process ran since :func:`reset_run` (the last 4096)."""
    _deprecated("last_run")
    return list(_RUN)


def reset_run() -> None:
    """Deprecated with :func:`last_run`."""
    _deprecated("reset_run")
    _RUN.clear()


def _deprecated(name: str) -> None:
    warnings.warn(
        f"tvm_sparse.accel.{name}() is deprecated: record device runs with "
        "`with tvm_sparse.accel.profile() as runs:`",
        DeprecationWarning,
        stacklevel=3,
    )


def register() -> None:
    tvm.register_global_func("tvm_sparse.accel.run_layer", run_layer, override=True)
    tvm.register_global_func("tvm_sparse.accel.calibrate_layer", calibrate_layer, override=True)
