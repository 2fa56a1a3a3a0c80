"""The ``sparse-accel`` codegen step: partitioned functions -> runtime calls carrying device programs.

After :func:`~.patterns.partition_for_sparse_accel`, ``main`` calls one ``Codegen: "sparse_accel"``
function per device layer (or engine pair). :func:`run_codegen` replaces each call, as TVM's
``RunCodegen`` does for its external backends, by ``call_dps_packed`` of the device runtime
(:mod:`tvm_sparse.accel.runtime`) on the call's input, and drops the partitioned functions. Two stages:

* ``calibrate``: each layer runs in float (``tvm_sparse.accel.calibrate_layer``) and records the
  magnitudes of its input and output;
* ``deploy``: each layer is quantized with those statistics, its weight encoded in the best mode the
  device has (N:M when the weight follows the pattern, block-sparse when zero blocks pay, else dense),
  tiled to the buffers and compiled to a program (:mod:`.layers`), carried by the module as a constant
  for ``tvm_sparse.accel.run_layer``.

A decomposed convolution on a device with the basis engine runs in the order that issues fewer MACs:
combine-first (ESCALATE: the coefficient GEMM, then ``BASIS_CONV``; placements ``dense``/``block`` then
``basis``) or basis-first (PENNI: ``BASIS_CONV`` of each basis kernel on the input channels, placement
``basis-first`` under the 1x1 layer's name, then the coefficient GEMM on the strided maps under the
basis layer's name); on a device whose engine is fused, one ``fused`` layer (``DECOMP_CONV``) keeps the
maps on chip, falling back to the two steps, with a hint, where the layer does not fit its buffers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import tvm
from tvm import relax

from .. import progress
from ..codegen.quantize import QuantizedLayer
from ..graph import ConvLayer, Layer
from ..hw.isa import ProgramError
from .layers import (
    DeviceLayer,
    calibration_operands,
    compile_basis,
    compile_basis_first,
    compile_fused,
    compile_gemm,
)
from .patterns import CODEGEN, LAYERS_ATTR
from .plan import DevicePlan, EnginePair, Placement

Stage = Literal["calibrate", "deploy"]

RUN_LAYER = "tvm_sparse.accel.run_layer"
CALIBRATE_LAYER = "tvm_sparse.accel.calibrate_layer"


@dataclass
class DeviceCodegen:
    """The result of :func:`run_codegen`."""

    mod: tvm.IRModule  # the partitioned functions replaced by runtime calls
    placements: list[Placement]  # every weight-carrying layer of the plan, in program order
    quantized: dict[str, QuantizedLayer] = field(
        default_factory=dict
    )  # deploy: layer name -> operands


def run_codegen(
    mod: tvm.IRModule, plan: DevicePlan, stage: Stage = "deploy", calibration: dict | None = None
) -> DeviceCodegen:
    """Compile the ``sparse_accel`` functions of a partitioned ``mod`` (see the module docstring).

    Parameters
    ----------
    mod, plan
        The result of :func:`~.patterns.partition_for_sparse_accel`.
    stage
        ``"calibrate"`` or ``"deploy"``.
    calibration
        ``deploy`` only: the statistics a calibration build recorded,
        ``{layer index: {"input_absmax", "output_absmax", "rows"}}``
        (:func:`tvm_sparse.accel.runtime.calibration_statistics`).

    Raises
    ------
    ValueError
        An unknown stage, a deploy stage without statistics, or a layer without statistics.
    """
    if stage not in ("calibrate", "deploy"):
        raise ValueError(f"stage must be 'calibrate' or 'deploy', got {stage!r}")
    if stage == "deploy" and calibration is None:
        raise ValueError("the deploy stage needs calibration statistics")
    step = _Codegen(mod, plan, stage, calibration)
    partitioned = [
        gvar
        for gvar, func in mod.functions_items()
        if isinstance(func, relax.Function) and func.attrs and func.attrs.get("Codegen") == CODEGEN
    ]
    with progress.task(f"device layers ({stage})", total=len(partitioned)) as step.advance:
        main = step.visit_expr(mod["main"])
    step.builder_.update_func(mod.get_global_var("main"), main)
    out = step.builder_.finalize()
    out = tvm.IRModule(  # without the partitioned functions, now unused
        {g: f for g, f in out.functions_items() if not any(g.same_as(p) for p in partitioned)},
        attrs=out.attrs,
        global_infos=out.global_infos,
    )
    placements = [
        step.placements.get(i)
        or Placement(layer.name, _op(layer), "host", reason=_host_reason(plan, layer))
        for i, layer in enumerate(plan.layers)
    ]
    return DeviceCodegen(out, placements, step.quantized)


def _op(layer: Layer) -> str:
    return "conv2d" if isinstance(layer, ConvLayer) else "matmul"


def _host_reason(plan: DevicePlan, layer: Layer) -> str:
    return plan.host_reason(layer) or "no device pattern matched it"


@relax.expr_functor.mutator
class _Codegen(relax.PyExprMutator):
    def __init__(self, mod, plan: DevicePlan, stage: Stage, calibration: dict | None):
        super().__init__(mod)
        self.mod, self.plan, self.stage, self.calibration = mod, plan, stage, calibration
        self.placements: dict[int, Placement] = {}
        self.quantized: dict[str, QuantizedLayer] = {}
        self.advance = None

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        func = self.mod[call.op] if isinstance(call.op, tvm.ir.GlobalVar) else None
        if not (
            isinstance(func, relax.Function) and func.attrs and func.attrs.get("Codegen") == CODEGEN
        ):
            return super().visit_call_(call)
        composite = _composite(func)
        indices = [int(i) for i in str(composite.attrs[LAYERS_ATTR]).split(",")]
        (x,) = [self.visit_expr(arg) for arg in call.args]
        layers = [self.plan.layers[i] for i in indices]
        out = (
            self._pair(x, indices, self.plan.pairs[id(layers[0])])
            if len(layers) == 2
            else self._layer(x, indices[0], layers[0])
        )
        self.advance()
        return out

    # -- one layer ------------------------------------------------------------------------------
    def _layer(self, x: relax.Expr, index: int, layer: Layer, hint: str = "") -> relax.Expr:
        placement = Placement(layer.name, _op(layer), "device")
        self.placements[index] = placement
        if self.stage == "calibrate":
            return self._calibrate(x, layer, index)
        compiled = compile_gemm(layer, self._stats(layer, index), self.plan.device)
        self._place(placement, compiled)
        placement.hint = hint or self.plan.off_engine.get(id(layer)) or compiled.hint
        return self._run(x, compiled)

    # -- a decomposed convolution on the engine ---------------------------------------------------
    def _pair(self, x: relax.Expr, indices: list[int], pair: EnginePair) -> relax.Expr:
        combine_index, basis_index = indices
        unfused = ""
        if self.stage == "deploy" and self.plan.device.modes.decomposed_conv.fused:
            first, second = (
                self._stats(pair.combine, combine_index),
                self._stats(pair.basis, basis_index),
            )
            try:
                compiled = compile_fused(pair, first, second, self.plan.device)
            except ProgramError as err:  # does not fit the engine's buffers: two steps through DRAM
                unfused = f"two steps through DRAM: {err}"
            else:
                self.quantized.update(compiled.quantized)
                for index, layer in ((combine_index, pair.combine), (basis_index, pair.basis)):
                    self.placements[index] = Placement(layer.name, "conv2d", "device", mode="fused")
                return self._run(x, compiled)
        if pair.basis_first:
            maps = self._engine_step(x, combine_index, pair.combine, "basis-first", pair, unfused)
            return self._layer(maps, basis_index, pair.coefficient_layer(), unfused)
        maps = self._layer(x, combine_index, pair.coefficient_layer(), unfused)
        return self._engine_step(maps, basis_index, pair.basis, "basis", pair, unfused)

    def _engine_step(self, x, index: int, layer: ConvLayer, step: str, pair: EnginePair, hint: str):
        placement = Placement(layer.name, "conv2d", "device", hint=hint)
        self.placements[index] = placement
        if self.stage == "calibrate":
            return self._calibrate(x, layer, index, step, pair)
        compile_step = compile_basis if step == "basis" else compile_basis_first
        compiled = compile_step(pair, self._stats(layer, index), self.plan.device)
        self._place(placement, compiled)
        return self._run(x, compiled)

    # -- emission -------------------------------------------------------------------------------
    def _place(self, placement: Placement, compiled: DeviceLayer) -> None:
        self.quantized.update(compiled.quantized)
        placement.mode = compiled.mode
        placement.quantization_error = compiled.quantization_error
        placement.weight_table = compiled.weight_table

    def _run(self, x: relax.Expr, compiled: DeviceLayer) -> relax.Expr:
        out = relax.TensorType(compiled.output_shape, "float32")
        return self.builder_.emit(
            relax.call_dps_packed(RUN_LAYER, [x, relax.const(compiled.blob)], out)
        )

    def _calibrate(self, x, layer: Layer, index: int, step=None, pair=None) -> relax.Expr:
        weight, bias, info, shape = calibration_operands(layer, index, step, pair)
        args = [
            x,
            relax.const(weight),
            relax.const(bias),
            relax.const(np.frombuffer(json.dumps(info).encode(), np.uint8).copy()),
        ]
        out = relax.TensorType(shape, "float32")
        return self.builder_.emit(relax.call_dps_packed(CALIBRATE_LAYER, args, out))

    def _stats(self, layer: Layer, index: int) -> dict:
        stats = self.calibration.get(index)
        if stats is None:
            raise ValueError(f"no calibration statistics for layer {layer.name} (index {index})")
        return stats


def _composite(func: relax.Function) -> relax.Function:
    """The composite function a ``Codegen`` function calls (``annotate_codegen`` wraps one)."""
    for binding in func.body.blocks[0].bindings:
        if isinstance(binding.value, relax.Function) and binding.value.attrs.get("Composite"):
            return binding.value
    raise ValueError(f"{func.attrs.get('global_symbol')}: no composite function")
