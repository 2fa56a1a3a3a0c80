"""Compiling a model for ``sparse-accel``: calibrate, quantize, partition, build.

1. The model goes through the host graph passes (BatchNorm folding, NHWC
   convolutions, constant folding).
2. Calibration: a build where every device-capable layer runs in float and
   records its input/output ranges is run on the calibration inputs (the
   user's, checked and kept in each input's dtype, or by default 4 generated
   samples: see :mod:`tvm_sparse.accel.calibration`; pass real data for real
   accuracy).
3. Deployment: :class:`~tvm_sparse.transform.OffloadToAccel` quantizes each
   device layer, encodes and tiles it, and compiles it to a program; the
   rest of the model goes through the host CPU pipeline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import tvm
from tvm import relax

from .. import progress
from ..frontend import load_model
from ..hw.device import Device
from ..pipeline import cpu_pipeline
from ..prepare import prepare
from ..target import host_target
from ..transform.offload import OffloadToAccel
from . import runtime
from .calibration import calibration_inputs


@dataclass
class AccelBuild:
    """The executable and how the model was partitioned."""

    executable: relax.Executable
    device: Device
    placements: list = field(default_factory=list)
    quantized: dict = field(default_factory=dict)  # device layer name -> QuantizedLayer

    def to_dict(self) -> dict:
        return {"device": self.device.name, "layers": [asdict(p) for p in self.placements]}

    def to_table(self) -> str:
        width = max([32] + [len(p.name) for p in self.placements])  # whole names
        rows = [
            f"device {self.device.name}",
            f"{'layer':{width}s} {'op':7s} {'runs on':8s} {'mode':11s} {'quant. error':>12s}  note",
        ]
        for p in self.placements:
            err = (
                f"{p.quantization_error:12.2e}" if p.quantization_error is not None else f"{'':12s}"
            )
            mode = f"{p.mode}+table" if p.weight_table else p.mode
            note = p.reason or "; ".join(
                filter(
                    None,
                    [f"weights shared: {p.weight_table} values" if p.weight_table else "", p.hint],
                )
            )
            rows.append(f"{p.name:{width}s} {p.op:7s} {p.target:8s} {mode:11s} {err}  {note}")
        return "\n".join(rows)


def build_for_device(
    model, device: Device, calibration=None, fast_math: bool = True, input_shapes=None
) -> AccelBuild:
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

    calibrate = OffloadToAccel(device, "calibrate")
    with progress.task("compiling the calibration build"):
        calib_exe = tvm.compile(
            calibrate(prepared), target=host, relax_pipeline=cpu_pipeline(host, None, fast_math)
        )
    vm = relax.VirtualMachine(calib_exe, tvm.cpu())
    with runtime.calibration_statistics() as stats:
        with progress.task("calibration samples", total=len(samples)) as advance:
            for sample in samples:
                vm["main"](*[tvm.runtime.tensor(a) for a in sample])
                advance()

    deploy = OffloadToAccel(device, "deploy", stats)
    with progress.task(f"compiling for {device.name}: device layers, host code"):
        exe = tvm.compile(
            deploy(prepared), target=host, relax_pipeline=cpu_pipeline(host, None, fast_math)
        )
    return AccelBuild(exe, device, deploy.placements, deploy.quantized)
