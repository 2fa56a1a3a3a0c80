"""Compiling a model for ``sparse-accel``: calibrate, quantize, partition, build.

1. The model goes through the host graph passes (BatchNorm folding, NHWC
   convolutions, constant folding).
2. Calibration: a build where every device-capable layer runs in float and
   records its input/output ranges is run on the calibration inputs (the
   user's, checked and kept in each input's dtype, or by default 4 generated
   samples: see :mod:`tvm_sparse.accel.calibration`; pass real data for real
   accuracy).
3. Deployment: the Relax backend (:mod:`tvm_sparse.backend`) partitions the
   model with the device's pattern table and its codegen step quantizes each
   device layer, encodes and tiles it, and compiles it to a program; the
   rest of the model goes through the host CPU pipeline.

The calibration build and the deployed one partition the same graph, so
their layers correspond one to one.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .. import progress
from ..backend import partition_for_sparse_accel, run_codegen
from ..frontend import load_model
from ..hw.device import Device
from ..pipeline import cpu_pipeline
from ..prepare import prepare
from ..result import BuildResult
from ..target import accel_target, host_target
from . import runtime
from .calibration import calibration_inputs

#: The name :func:`tvm_sparse.accel.compile`'s result had before :func:`tvm_sparse.build` returned the same.
AccelBuild = BuildResult


def build_for_device(
    model, device: Device, calibration=None, fast_math: bool = True, input_shapes=None
) -> BuildResult:
    """Compile ``model`` for ``device``.

    ``calibration``: a dict ``{input name: array}`` is one sample holding every
    input (or several: arrays with one more leading axis than their inputs are
    samples stacked on that axis, the same number for every input); a list of
    such dicts is several samples; ``None`` generates samples
    (:func:`~tvm_sparse.accel.calibration.calibration_inputs`, which names the
    ``ModelError`` it raises for bad samples). ``input_shapes``
    (``{input name: shape}``) sets the listed inputs' symbolic dimensions
    (as :func:`tvm_sparse.build` does).
    """
    mod = load_model(model, input_shapes).mod  # specialised before the graph is folded
    host = host_target()
    prepared = prepare(mod)
    samples = calibration_inputs(prepared, calibration)

    partitioned, plan = partition_for_sparse_accel(prepared, device)
    calibrate = run_codegen(partitioned, plan, "calibrate")
    with progress.task("compiling the calibration build"):
        calib_exe = tvm.compile(
            calibrate.mod, target=host, relax_pipeline=cpu_pipeline(host, None, fast_math)
        )
    vm = relax.VirtualMachine(calib_exe, tvm.cpu())
    with runtime.calibration_statistics() as stats:
        with progress.task("calibration samples", total=len(samples)) as advance:
            for sample in samples:
                vm["main"](*[tvm.runtime.tensor(a) for a in sample])
                advance()

    deploy = run_codegen(partitioned, plan, "deploy", stats)
    with progress.task(f"compiling for {device.name}: host code"):
        exe = tvm.compile(
            deploy.mod, target=host, relax_pipeline=cpu_pipeline(host, None, fast_math)
        )
    return BuildResult(exe, accel_target(device), device, deploy.placements, deploy.quantized)
