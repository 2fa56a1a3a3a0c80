"""What :func:`tvm_sparse.build` returns: the executable and what the build decided."""

from __future__ import annotations

from dataclasses import asdict

import tvm
from tvm.relax.vm_build import VMExecutable

from .backend.plan import Placement
from .codegen.quantize import QuantizedLayer
from .hw.device import Device


class BuildResult(VMExecutable):
    """A compiled model. It is the Relax VM executable (run it with
    ``relax.VirtualMachine(result, tvm.cpu())``, save it with ``result.export_library(path)``) and
    carries what the build decided.

    Attributes
    ----------
    target : tvm.target.Target
        The target the model was compiled for.
    device : Device or None
        The ``sparse-accel`` device, None for the host CPU.
    placements : list of Placement
        Device builds: every weight-carrying layer, in program order, with where it runs, its mode,
        quantization error and notes (the partition). Empty for the host CPU.
    quantized : dict
        Device builds: each device layer's integer operands (:class:`QuantizedLayer`) by layer name.
    tuning_report : str or None
        With a tuning database: which kernels used a tuned schedule and which their default.
    """

    def __init__(
        self,
        executable: VMExecutable,
        target: tvm.target.Target,
        device: Device | None = None,
        placements: list[Placement] | None = None,
        quantized: dict[str, QuantizedLayer] | None = None,
        tuning_report: str | None = None,
    ):
        super().__init__(executable.mod)
        self.target, self.device = target, device
        self.placements = list(placements or [])
        self.quantized = dict(quantized or {})
        self.tuning_report = tuning_report

    @property
    def executable(self) -> BuildResult:
        """The executable: this object (kept for code written against ``accel.compile(...).executable``)."""
        return self

    def to_dict(self) -> dict | None:
        """The partition as the library metadata records it, ``{"device", "layers": [placement
        fields]}``; None for a host CPU build."""
        if self.device is None:
            return None
        return {"device": self.device.name, "layers": [asdict(p) for p in self.placements]}

    def to_table(self) -> str:
        """The partition as a text table (device builds; "" for the host CPU)."""
        if self.device is None:
            return ""
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
