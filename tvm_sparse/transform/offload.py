"""``OffloadToAccel``: run the layers the ``sparse-accel`` device can run on it.

Linear layers and NHWC convolutions (groups 1) with constant float32 weights,
with their fused bias and ReLU, become ``call_dps_packed`` calls of the
device runtime (:mod:`tvm_sparse.accel.runtime`); everything else stays on
the host CPU. Two stages:

* ``calibrate``: each device layer runs in float (numpy) and records the
  magnitudes of its input and output;
* ``deploy``: each device layer is quantized with those statistics, its weight
  encoded in the best mode the device has (N:M when the weight follows the
  pattern, block-sparse when zero blocks pay, else dense), tiled to the
  buffers, and compiled to a program carried by the module as a constant.

A decomposed convolution (a 1x1 coefficient convolution feeding a basis
convolution, see :mod:`.decomposed_conv`) runs on a device with the basis
engine in the order that issues fewer MACs: combine-first (ESCALATE: the
coefficient GEMM, then ``BASIS_CONV``; placements ``combine`` then ``basis``)
or, typically for strided layers, basis-first (PENNI: ``BASIS_CONV`` of each
basis kernel on the input channels, placement mode ``basis-first`` under the
1x1 layer's name, then the coefficient GEMM on the strided maps, under the
basis layer's name).

:attr:`OffloadToAccel.placements` lists every weight-carrying layer with where
it runs and why.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from ..codegen.basis_program import BasisGeometry, emit_basis_layer, emit_expand_layer
from ..codegen.builder import ProgramBuilder
from ..codegen.fused_program import FusedOperands, emit_fused_layer, fused_channels
from ..codegen.gemm_program import GRANULE, emit_gemm_layer, padded_shape, sharing_table
from ..codegen.layer import LayerHeader, encode_layer
from ..codegen.quantize import QuantizedLayer, quantize
from ..graph import ConvLayer, Layer, find_layers, use_counts, weight_names
from ..hw.device import Device
from ..hw.encoding import block_grid, nonzero_blocks
from ..hw.isa import ProgramError
from ..schedule.choice import tuned
from ..schedule.tasks import DeviceGemmTask
from .decomposed_conv import (
    basis_first,
    basis_first_pays,
    decomposed_pairs,
    maps_major,
    shared_basis,
)
from .rewriter import MatmulRewriter, rewrite_layers


@dataclass
class Placement:
    """Where one weight-carrying layer runs."""

    name: str
    op: str  # matmul / conv2d
    target: str  # device / host
    mode: str = ""  # dense / nm / block / basis / basis-first on the device
    weight_table: int = (
        0  # distinct values in the layer's shared-weight table (0: plain int8 weight loads)
    )
    reason: str = ""  # why a layer stays on the host
    hint: str = (
        ""  # a pruned weight whose zeros the device's mode cannot skip: the prune pattern that fits
    )
    quantization_error: float | None = (
        None  # relative L2 error of the layer's output on the first calibration sample
    )


def _host_reason(layer: Layer) -> str:
    if str(layer.weight.dtype) != "float32":
        return f"{layer.weight.dtype} weight"
    if not layer.static:
        return "symbolic input shape (specialise it: input_shapes=)"
    if isinstance(layer, ConvLayer):
        if layer.groups != 1:
            return "grouped/depthwise convolution (the device runs only the basis convolutions of decomposed layers its engine supports)"
    return ""


def layer_geometry(layer: Layer) -> dict | None:
    if not isinstance(layer, ConvLayer):
        return None
    return {
        "kernel": list(layer.weight.shape[1:3]),
        "strides": list(layer.strides),
        "padding": list(layer.padding),
        "dilation": list(layer.dilation),
        "out_hw": list(layer.out_shape[1:3]),
    }


def _output_shape(layer: Layer) -> tuple[int, ...]:
    return (
        tuple(layer.out_shape)
        if isinstance(layer, ConvLayer)
        else (*layer.x_shape[:-1], layer.out_channels)
    )


def _rows(layer: Layer) -> int:
    shape = _output_shape(layer)
    return int(np.prod(shape[:-1]))


def choose_mode(weight_kn: np.ndarray, device: Device) -> str:
    """The device mode for an int8 ``[K, N]`` weight (K, N padded to ``GRANULE``)."""
    k, n = weight_kn.shape
    nm = device.modes.nm
    if (
        nm is not None
        and k % nm.m == 0
        and (np.count_nonzero(weight_kn.reshape(k // nm.m, nm.m, n), axis=1) <= nm.n).all()
    ):
        return "nm"
    block = device.modes.block
    if block is not None and k % block.block_rows == 0 and n % block.block_cols == 0:
        stored = nonzero_blocks(block_grid(weight_kn, block.block_rows, block.block_cols))
        if np.count_nonzero(stored) < 0.9 * stored.size:
            return "block"
    return "dense"


def pattern_hint(weight: np.ndarray, weight_kn: np.ndarray, mode: str, device: Device) -> str:
    """For a pruned ``weight`` (density at most 1/2) whose device ``mode`` still issues at least twice its
    density of the dense MACs (its zeros do not fill the device's blocks), a note naming the device's block
    shape and the ``tvm-sparse prune --pattern`` that would issue fewer; else ``""``. ``weight_kn``: the
    int8 ``[K, N]`` weight as encoded."""
    block, nm = device.modes.block, device.modes.nm
    density = np.count_nonzero(weight) / weight.size
    issued = 1.0
    if mode == "nm":
        issued = nm.n / nm.m
    elif mode == "block":
        stored = nonzero_blocks(block_grid(weight_kn, block.block_rows, block.block_cols))
        issued = np.count_nonzero(stored) / stored.size
    # prune patterns are (out x in), device blocks (reduction x output)
    fits = ([f"block:{block.block_cols}x{block.block_rows}"] if block else []) + (
        [f"nm:{nm.n}:{nm.m}"] if nm and issued > nm.n / nm.m else []
    )
    if density > 0.5 or issued < 2 * density or not fits:
        return ""
    shape = (
        f"device blocks are {block.block_cols}x{block.block_rows}"
        if block
        else f"the device skips zeros only as {nm.n}:{nm.m}"
    )
    return f"density {density:.2f} but {issued:.0%} of the dense MACs issued: {shape}: prune with --pattern {' or '.join(fits)}"


@tvm.transform.module_pass(opt_level=0, name="OffloadToAccel")
class OffloadToAccel:
    """Move the device-capable layers to ``device`` (see the module docstring)."""

    def __init__(self, device: Device, stage: str = "deploy", calibration: dict | None = None):
        if stage not in ("calibrate", "deploy"):
            raise ValueError(f"stage must be 'calibrate' or 'deploy', got {stage!r}")
        if stage == "deploy" and calibration is None:
            raise ValueError("the deploy stage needs calibration statistics")
        self.device, self.stage, self.calibration = device, stage, calibration
        self.placements: list[Placement] = []
        self.quantized: dict[
            str, QuantizedLayer
        ] = {}  # deploy stage: each device layer's integer operands

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        names = weight_names(mod)
        self.placements, self.quantized = [], {}

        def plan(func):
            plans, absorbed = {}, set()
            layers = find_layers(func, names)
            pairs, off_engine = self._engine_pairs(layers, use_counts(func))
            fused = {}  # id(pair) -> the emitter of a pair the fused engine runs (at its basis convolution)
            unfused = {}  # id(pair) -> why the fused engine cannot run it
            for index, layer in enumerate(layers):
                op = "conv2d" if isinstance(layer, ConvLayer) else "matmul"
                pair = pairs.get(id(layer))
                step = pair.step(layer) if pair else None
                if (
                    pair
                    and layer is pair.combine
                    and self.stage == "deploy"
                    and self.device.modes.decomposed_conv.fused
                ):
                    basis_index = next(i for i, other in enumerate(layers) if other is pair.basis)
                    try:
                        fused[id(pair)] = self._fused_emitter(pair, index, basis_index)
                    except (
                        ProgramError
                    ) as err:  # does not fit the engine's buffers: two steps through DRAM
                        unfused[id(pair)] = f"two steps through DRAM: {err}"
                if pair and id(pair) in fused:
                    self.placements.append(Placement(layer.name, op, "device", mode="fused"))
                    if (
                        layer is pair.combine
                    ):  # runs inside the fused layer, emitted at the basis convolution
                        absorbed.update([layer.output_var, *layer.absorbed_vars])
                    else:
                        plans[layer.output_var] = fused[id(pair)]
                        absorbed.update(layer.absorbed_vars)
                    continue
                if pair and step is None:  # the pair's coefficient GEMM
                    layer = pair.coefficient_layer()
                reason = "" if step else _host_reason(layer)
                if reason:
                    self.placements.append(Placement(layer.name, op, "host", reason=reason))
                    continue
                placement = Placement(layer.name, op, "device")
                if self.stage == "calibrate":
                    emit = self._calibration_emitter(layer, index, step, pair)
                elif step == "basis":
                    emit = self._basis_emitter(pair, index, placement)
                elif step == "basis-first":
                    emit = self._basis_first_emitter(pair, index, placement)
                else:
                    emit = self._device_emitter(layer, index, placement)
                if id(layer) in off_engine or (pair and id(pair) in unfused):
                    placement.hint = off_engine.get(id(layer)) or unfused[id(pair)]
                self.placements.append(placement)
                plans[layer.output_var] = emit
                absorbed.update(layer.absorbed_vars)
            return plans, absorbed

        return rewrite_layers(mod, plan, f"device layers ({self.stage})")

    def _engine_pairs(self, layers, uses) -> tuple[dict, dict]:
        """Decomposed layers the device's basis engine runs, ``{id(layer): EnginePair}`` for both layers,
        and why it runs none of the others, ``{id(coefficient layer): note}``."""
        mode = self.device.modes.decomposed_conv
        pairs, off_engine = {}, {}
        for combine, basis in decomposed_pairs(layers, uses):
            o, kh, kw, rank = basis.weight.shape
            why = _off_engine(mode, basis)
            shared = None if why else shared_basis(basis)
            if why or shared is None:
                why = why or "its basis convolution's groups do not share one basis"
                off_engine[id(combine)] = (
                    f"a decomposed layer's coefficients, off the engine ({why}): their blocks follow the "
                    "engine's basis-major order, not this layer's"
                )
                continue
            # basis-first moves the 1x1 convolution's bias behind the zero padding: only without one
            first = basis_first_pays(combine, basis) and (
                combine.bias is None or not combine.bias.any()
            )
            pairs[id(combine)] = pairs[id(basis)] = EnginePair(combine, basis, *shared, first)
        return pairs, off_engine

    def _calibration_emitter(
        self, layer: Layer, index: int, step: str | None = None, pair: EnginePair | None = None
    ):
        shape = _output_shape(layer)
        if (
            step == "basis"
        ):  # the float reference: the basis scaled per output channel [O, r, k, k], the geometry
            weight = np.ascontiguousarray(layer.weight.transpose(0, 3, 1, 2))
            info = {
                "index": index,
                "relu": layer.relu,
                "reduction": layer.x_shape[3],
                "conv": None,
                "basis": {"stride": layer.strides[0], "padding": layer.padding[0]},
            }
        elif step == "basis-first":
            weight, shape = pair.kernels, pair.maps_shape
            info = {
                "index": index,
                "relu": False,
                "reduction": layer.x_shape[3],
                "conv": None,
                "expand": {"stride": pair.basis.strides[0], "padding": pair.basis.padding[0]},
            }
        else:
            weight = layer.matrix()
            info = {
                "index": index,
                "relu": layer.relu,
                "reduction": weight.shape[1],
                "conv": layer_geometry(layer),
            }
        bias = (
            layer.bias
            if layer.bias is not None and step != "basis-first"
            else np.zeros(shape[-1], "float32")
        )

        def emit(rw: MatmulRewriter) -> relax.Expr:
            args = [
                rw.visit_expr(layer.x),
                relax.const(weight),
                relax.const(bias.astype("float32")),
                relax.const(np.frombuffer(json.dumps(info).encode(), np.uint8).copy()),
            ]
            out = relax.TensorType(shape, "float32")
            return rw.builder_.emit(
                relax.call_dps_packed("tvm_sparse.accel.calibrate_layer", args, out)
            )

        return emit

    def _device_emitter(self, layer: Layer, index: int, placement: Placement):
        stats = self._stats(layer, index)
        weight = layer.matrix()
        quant, w_kn, mode, table = self._quantize_and_encode(weight, layer.bias, stats)
        self.quantized[layer.name] = quant
        if stats.get("rows") is not None:
            placement.quantization_error = _quantization_error(quant, weight, layer, stats["rows"])
        n, k = weight.shape
        k_pad, n_pad, m = w_kn.shape[0], w_kn.shape[1], _rows(layer)
        placement.mode = mode
        placement.hint = pattern_hint(weight, w_kn, mode, self.device)
        placement.weight_table = 0 if table is None else len(np.unique(table))
        bias = np.zeros(n_pad, np.int64)
        bias[:n] = quant.bias
        multiplier = np.zeros(n_pad, np.int64)
        multiplier[:n] = quant.multiplier
        task = DeviceGemmTask(m, w_kn, mode, self.device, bias, multiplier, quant.shift, layer.relu)
        tiling = tuned(task) or task.default()
        m_pad = padded_shape(m, k_pad, n_pad, tiling)[0]
        b = ProgramBuilder(self.device.name)
        b.layer(layer.name)
        x_addr = b.reserve(
            m_pad * k_pad
        )  # the runtime writes the first m rows; padding rows stay zero
        out_addr = b.reserve(m_pad * n_pad)
        emit_gemm_layer(
            b,
            self.device,
            x_addr,
            w_kn,
            bias,
            multiplier,
            quant.shift,
            out_addr,
            m_pad,
            mode,
            layer.relu,
            tiling,
            table,
        )
        header = LayerHeader(
            name=layer.name,
            mode=mode if table is None else f"{mode}+table",
            input_shape=tuple(layer.x_shape),
            output_shape=_output_shape(layer),
            rows=m,
            reduction=k,
            reduction_padded=k_pad,
            outputs=n,
            outputs_padded=n_pad,
            relu=layer.relu,
            input_scale=quant.input_scale,
            output_scale=quant.output_scale,
            x_addr=x_addr,
            out_addr=out_addr,
            device=self.device.doc,
            conv=layer_geometry(layer),
        )
        return _run_on_device(layer, encode_layer(header, b.build()))

    def _quantize_and_encode(self, weight: np.ndarray, bias, stats: dict):
        """``(quantized layer, int8 [K, N] weight padded to the granule, mode, shared-weight table or None)``.

        A weight with no more distinct values than the device's shared-weight table (plus zero), as a
        codebook-quantized model has, is quantized with one scale so its int8 values stay shared; if they
        then do not fit the table, the layer is quantized per channel and loads plain int8 weights."""
        sharing = self.device.modes.weight_sharing
        shareable = sharing is not None and np.unique(weight).size <= sharing.table_size + 1
        for per_tensor in (True, False) if shareable else (False,):
            quant = QuantizedLayer.from_float(
                weight, bias, stats["input_absmax"], stats["output_absmax"], per_tensor
            )
            n, k = weight.shape
            w_kn = np.zeros((-(-k // GRANULE) * GRANULE, -(-n // GRANULE) * GRANULE), np.int8)
            w_kn[:k, :n] = quant.weight.T
            mode = choose_mode(w_kn, self.device)
            table = sharing_table(w_kn, mode, self.device) if per_tensor else None
            if table is not None or not per_tensor:
                return quant, w_kn, mode, table

    def _fused_emitter(self, pair: EnginePair, combine_index: int, basis_index: int):
        """A decomposed layer as one layer of the fused engine (``DECOMP_CONV``), in the pair's order. The
        quantization is the two steps': the maps get the range the first step's calibration saw at its
        output (the second step's input)."""
        first, second = (
            self._stats(pair.combine, combine_index),
            self._stats(pair.basis, basis_index),
        )
        o, k, _, rank = pair.basis.weight.shape
        n, h, w, c = pair.combine.x_shape
        c_pad = fused_channels(c, self.device)
        coefficients = pair.coefficient_layer()
        if (
            pair.basis_first
        ):  # basis kernels on the input channels, then the coefficients on the strided maps
            basis_q = QuantizedLayer.from_float(
                pair.kernels.reshape(rank, k * k),
                None,
                first["input_absmax"],
                first["output_absmax"],
            )
            coef_q = QuantizedLayer.from_float(
                coefficients.matrix(),
                coefficients.bias,
                first["output_absmax"],
                second["output_absmax"],
            )
            weight = np.zeros((rank, c_pad, o), np.int8)
            weight[:, :c] = coef_q.weight.reshape(o, rank, c).transpose(1, 2, 0)
            weight = weight.reshape(rank * c_pad, o)
            maps_params = np.stack([np.zeros(rank * c_pad), np.repeat(basis_q.multiplier, c_pad)])
            kernels = basis_q.weight.reshape(rank, k, k)
            ops = FusedOperands(
                weight,
                maps_params,
                basis_q.shift,
                kernels,
                np.stack([coef_q.bias, coef_q.multiplier]),
                coef_q.shift,
                "",
                True,
                coefficients.relu,
            )
            quantized = {pair.combine.name: basis_q, pair.basis.name: coef_q}
            scales = (basis_q.input_scale, coef_q.output_scale)
        else:  # the coefficient GEMM's maps, then the basis convolution
            coef_q = QuantizedLayer.from_float(
                coefficients.matrix(),
                coefficients.bias,
                first["input_absmax"],
                first["output_absmax"],
            )
            basis_q = QuantizedLayer.from_float(
                pair.basis.matrix(),
                pair.basis.bias,
                first["output_absmax"],
                second["output_absmax"],
            )
            kernels, multiplier = _shared_basis_operands(pair, basis_q)
            weight = np.zeros((c_pad, rank * o), np.int8)
            weight[:c] = coef_q.weight.T
            ops = FusedOperands(
                weight,
                np.stack([coef_q.bias, coef_q.multiplier]),
                coef_q.shift,
                kernels,
                np.stack([basis_q.bias, multiplier]),
                basis_q.shift,
                "",
                False,
                pair.basis.relu,
            )
            quantized = {pair.combine.name: coef_q, pair.basis.name: basis_q}
            scales = (coef_q.input_scale, basis_q.output_scale)
        ops = dataclasses.replace(
            ops, coef_mode="block" if choose_mode(weight, self.device) == "block" else "dense"
        )
        g = BasisGeometry(n, h, w, o, rank, k, pair.basis.strides[0], pair.basis.padding[0])
        b = ProgramBuilder(self.device.name)
        b.layer(pair.basis.name)
        x_addr = b.reserve(n * h * w * c_pad)
        out_addr = b.reserve(int(np.prod(pair.basis.out_shape)))
        emit_fused_layer(b, self.device, g, x_addr, ops, out_addr)
        self.quantized.update(quantized)
        header = LayerHeader(
            name=pair.basis.name,
            mode="fused",
            input_shape=tuple(pair.combine.x_shape),
            output_shape=tuple(pair.basis.out_shape),
            rows=n * h * w,
            reduction=c,
            reduction_padded=c_pad,
            outputs=o,
            outputs_padded=o,
            relu=ops.relu,
            input_scale=scales[0],
            output_scale=scales[1],
            x_addr=x_addr,
            out_addr=out_addr,
            device=self.device.doc,
            output_rows=n * g.out_hw[0] * g.out_hw[1],
        )
        return _run_on_device(pair.basis, encode_layer(header, b.build()), x=pair.combine.x)

    def _basis_emitter(self, pair: EnginePair, index: int, placement: Placement):
        """A decomposed layer's basis convolution (combine-first) on the device's engine."""
        layer = pair.basis
        quant = self._engine_quantization(layer, index, layer.matrix(), layer.bias)
        placement.mode = "basis"
        o, k, _, rank = layer.weight.shape
        n, h, w, maps = layer.x_shape
        g = BasisGeometry(n, h, w, o, rank, k, layer.strides[0], layer.padding[0])
        b = ProgramBuilder(self.device.name)
        b.layer(layer.name)
        x_addr = b.reserve(n * h * w * maps)
        out_addr = b.reserve(int(np.prod(layer.out_shape)))
        basis_q, multiplier = _shared_basis_operands(pair, quant)
        emit_basis_layer(
            b,
            self.device,
            g,
            x_addr,
            basis_q,
            quant.bias,
            multiplier,
            quant.shift,
            out_addr,
            layer.relu,
        )
        header = LayerHeader(
            name=layer.name,
            mode="basis",
            input_shape=tuple(layer.x_shape),
            output_shape=tuple(layer.out_shape),
            rows=n * h * w,
            reduction=maps,
            reduction_padded=maps,
            outputs=o,
            outputs_padded=o,
            relu=layer.relu,
            input_scale=quant.input_scale,
            output_scale=quant.output_scale,
            x_addr=x_addr,
            out_addr=out_addr,
            device=self.device.doc,
            output_rows=n * g.out_hw[0] * g.out_hw[1],
        )
        return _run_on_device(layer, encode_layer(header, b.build()))

    def _basis_first_emitter(self, pair: EnginePair, index: int, placement: Placement):
        """A decomposed layer's basis-first step on the device's engine: the input channels convolved with
        each basis kernel, requantized per kernel."""
        layer = pair.combine
        rank, k, _ = pair.kernels.shape
        quant = self._engine_quantization(layer, index, pair.kernels.reshape(rank, k * k), None)
        placement.mode = "basis-first"
        n, h, w, c = layer.x_shape
        g = BasisGeometry(n, h, w, c, rank, k, pair.basis.strides[0], pair.basis.padding[0])
        b = ProgramBuilder(self.device.name)
        b.layer(layer.name)
        x_addr = b.reserve(n * h * w * c)
        out_addr = b.reserve(int(np.prod(pair.maps_shape)))
        emit_expand_layer(
            b,
            self.device,
            g,
            x_addr,
            quant.weight.reshape(rank, k, k),
            quant.multiplier,
            quant.shift,
            out_addr,
        )
        header = LayerHeader(
            name=layer.name,
            mode="basis-first",
            input_shape=tuple(layer.x_shape),
            output_shape=pair.maps_shape,
            rows=n * h * w,
            reduction=c,
            reduction_padded=c,
            outputs=rank * c,
            outputs_padded=rank * c,
            relu=False,
            input_scale=quant.input_scale,
            output_scale=quant.output_scale,
            x_addr=x_addr,
            out_addr=out_addr,
            device=self.device.doc,
            output_rows=n * g.out_hw[0] * g.out_hw[1],
        )
        return _run_on_device(layer, encode_layer(header, b.build()), pair.maps_shape)

    def _engine_quantization(
        self, layer: Layer, index: int, weight: np.ndarray, bias: np.ndarray | None
    ) -> QuantizedLayer:
        """Per-channel quantization of a basis-engine step's ``weight`` (one row per output channel)."""
        stats = self._stats(layer, index)
        quant = QuantizedLayer.from_float(
            weight, bias, stats["input_absmax"], stats["output_absmax"]
        )
        self.quantized[layer.name] = quant
        return quant

    def _stats(self, layer: Layer, index: int) -> dict:
        stats = self.calibration.get(index)
        if stats is None:
            raise ValueError(f"no calibration statistics for layer {layer.name} (index {index})")
        return stats


@dataclass(frozen=True)
class EnginePair:
    """A decomposed convolution on the basis engine: its two layers, the shared basis and the order."""

    combine: ConvLayer  # the 1x1 coefficient convolution, as in the graph
    basis: ConvLayer  # the basis convolution, as in the graph
    kernels: np.ndarray  # the shared basis [r, k, k]
    scales: np.ndarray  # [O]: basis.weight[o] == scales[o] * kernels
    basis_first: bool

    @property
    def maps_shape(self) -> tuple[int, ...]:
        """The basis-first maps ``[N, OH, OW, r * C]``."""
        return (*self.basis.out_shape[:3], self.kernels.shape[0] * self.combine.x_shape[3])

    def step(self, layer: ConvLayer) -> str | None:
        """What the device runs for ``layer`` on the engine (``basis`` / ``basis-first``), None for the
        pair's coefficient GEMM."""
        if layer is self.combine:
            return "basis-first" if self.basis_first else None
        return None if self.basis_first else "basis"

    def coefficient_layer(self) -> ConvLayer:
        """The coefficient GEMM as a 1x1 convolution: on the maps-major combine-first input, or on the
        basis-first maps with the basis scales folded in (bias, ReLU and output of the basis layer)."""
        if not self.basis_first:
            return maps_major(self.combine, self.kernels.shape[0])
        coefficients = basis_first(self.combine, self.basis, self.scales)
        o, maps = coefficients.shape
        return dataclasses.replace(
            self.basis,
            weight=coefficients.reshape(o, 1, 1, maps),
            x_shape=self.maps_shape,
            strides=(1, 1),
            padding=(0, 0, 0, 0),
            dilation=(1, 1),
            groups=1,
        )


def _off_engine(mode, basis: ConvLayer) -> str:
    """Why the device's decomposed-convolution engine (``mode``) cannot run ``basis``; "" when it can."""
    if mode is None:
        return "the device has no decomposed-convolution engine"
    _, kh, kw, rank = basis.weight.shape
    if kh != kw or kh not in mode.kernel_sizes:
        return f"{kh}x{kw} basis kernels; the engine takes {', '.join(f'{k}x{k}' for k in mode.kernel_sizes)}"
    if rank > mode.max_basis:
        return f"rank {rank}; the engine takes up to {mode.max_basis} basis kernels"
    if (
        basis.strides[0] != basis.strides[1]
        or basis.dilation != (1, 1)
        or len(set(basis.padding)) != 1
    ):
        return "unequal strides or padding, or dilation"
    if str(basis.weight.dtype) != "float32":
        return f"{basis.weight.dtype} weight"
    return ""


def _shared_basis_operands(
    pair: EnginePair, quant: QuantizedLayer
) -> tuple[np.ndarray, np.ndarray]:
    """``(kernels int8 [r, k, k], multiplier [O])`` of a basis convolution quantized per output channel:
    the per-channel scaling (e.g. a folded BatchNorm) lives in the weight scales, a sign in the multiplier."""
    o, k, _, rank = pair.basis.weight.shape
    signs = np.where(pair.scales < 0, -1, 1)
    if not np.array_equal(quant.weight, signs[:, None] * quant.weight[:1]):
        raise ValueError(f"layer {pair.basis.name}: the quantized basis differs between channels")
    return quant.weight[0].reshape(k, k, rank).transpose(2, 0, 1), quant.multiplier * signs


def _run_on_device(
    layer: Layer,
    blob: np.ndarray,
    shape: tuple[int, ...] | None = None,
    x: relax.Expr | None = None,
):
    """The emitter of a device layer: the runtime entry point on the layer's input (or ``x``) and its
    program blob (``shape``: the output's, when not the layer's)."""

    def emit(rw: MatmulRewriter) -> relax.Expr:
        out = relax.TensorType(shape or _output_shape(layer), "float32")
        return rw.builder_.emit(
            relax.call_dps_packed(
                "tvm_sparse.accel.run_layer",
                [rw.visit_expr(layer.x if x is None else x), relax.const(blob)],
                out,
            )
        )

    return emit


def _quantization_error(
    quant: QuantizedLayer, weight: np.ndarray, layer: Layer, rows: np.ndarray
) -> float:
    """Relative L2 error of the quantized layer against the float one, on calibration rows."""
    reference = rows @ weight.T + (layer.bias if layer.bias is not None else 0)
    if layer.relu:
        reference = np.maximum(reference, 0)
    device = quant.reference(quantize(rows, quant.input_scale), layer.relu) * quant.output_scale
    return float(np.linalg.norm(device - reference) / max(np.linalg.norm(reference), 1e-12))
