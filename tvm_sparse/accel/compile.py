"""Compiling a model for ``sparse-accel``: calibrate, quantize, partition, build.

1. The model goes through the host graph passes (BatchNorm folding, NHWC
   convolutions, constant folding).
2. Calibration: a build where every device-capable layer runs in float and
   records its input/output ranges is run on the calibration inputs (the
   user's, or by default 4 samples of standard-normal noise of the input
   shapes, seeded; pass real data for real accuracy).
3. Deployment: :class:`~tvm_sparse.transform.OffloadToAccel` quantizes each
   device layer, encodes and tiles it, and compiles it to a program; the
   rest of the model goes through the host CPU pipeline.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import tvm
from tvm import relax

from ..build import cpu_pipeline
from ..prepare import prepare
from ..errors import ModelError
from ..frontend import load_model
from ..target import host_target
from ..transform.offload import OffloadToAccel
from . import runtime
from .device import Device

DEFAULT_CALIBRATION_SAMPLES = 4


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
        rows = [f"device {self.device.name}", f"{'layer':32s} {'op':7s} {'runs on':8s} {'mode':11s} {'quant. error':>12s}  note"]
        for p in self.placements:
            err = f"{p.quantization_error:12.2e}" if p.quantization_error is not None else f"{'':12s}"
            mode = f"{p.mode}+table" if p.weight_table else p.mode
            note = p.reason or (f"weights shared: {p.weight_table} values" if p.weight_table else "")
            rows.append(f"{p.name[:32]:32s} {p.op:7s} {p.target:8s} {mode:11s} {err}  {note}")
        return "\n".join(rows)


def _calibration_inputs(mod: tvm.IRModule, calibration) -> list[list[np.ndarray]]:
    params = mod["main"].params
    if calibration is not None:
        samples = [calibration] if isinstance(calibration, dict) else list(calibration)
        names = [p.name for p in params]
        out = []
        for sample in samples:
            missing = [n for n in names if n not in sample]
            if missing:
                raise ModelError(f"calibration sample lacks input(s) {missing} (the model's inputs: {names})")
            out.append([np.asarray(sample[n], dtype="float32") for n in names])
        return out
    rng = np.random.default_rng(0)
    shapes = []
    for p in params:
        try:
            shapes.append(tuple(int(d) for d in p.ty.shape))
        except (TypeError, ValueError):
            raise ModelError(f"input {p.name} has a dynamic shape: pass calibration samples") from None
    return [[rng.standard_normal(s).astype("float32") for s in shapes] for _ in range(DEFAULT_CALIBRATION_SAMPLES)]


def build_for_device(model, device: Device, calibration=None, fast_math: bool = True) -> AccelBuild:
    """Compile ``model`` for ``device``; ``calibration`` is a dict of input arrays or a list of them."""
    mod = load_model(model).mod
    host = host_target()
    prepared = prepare(mod)
    samples = _calibration_inputs(prepared, calibration)

    runtime.CALIBRATION.clear()
    calibrate = OffloadToAccel(device, "calibrate")
    calib_exe = tvm.compile(calibrate(prepared), target=host, relax_pipeline=cpu_pipeline(host, None, fast_math))
    vm = relax.VirtualMachine(calib_exe, tvm.cpu())
    for sample in samples:
        vm["main"](*[tvm.runtime.tensor(a) for a in sample])
    stats = dict(runtime.CALIBRATION)

    deploy = OffloadToAccel(device, "deploy", stats)
    exe = tvm.compile(deploy(prepared), target=host, relax_pipeline=cpu_pipeline(host, None, fast_math))
    return AccelBuild(exe, device, deploy.placements, deploy.quantized)
