"""Compiling one device layer: quantize, encode the weight in the device's mode, tile, emit its program.

Each function takes a layer of :class:`~.plan.DevicePlan` (or an engine pair) and its calibration
statistics and returns a :class:`DeviceLayer`: the blob the runtime entry point
``tvm_sparse.accel.run_layer`` executes (layer header + program,
:func:`~tvm_sparse.codegen.layer.encode_layer`) and what the partition reports. The programs come from
the emitters of :mod:`tvm_sparse.codegen`; quantization is post-training, per output channel
(:class:`~tvm_sparse.codegen.quantize.QuantizedLayer`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..codegen.basis_program import BasisGeometry, emit_basis_layer, emit_expand_layer
from ..codegen.builder import ProgramBuilder
from ..codegen.fused_program import FusedOperands, emit_fused_layer, fused_channels
from ..codegen.gemm_program import GRANULE, emit_gemm_layer, padded_shape, sharing_table
from ..codegen.gemm_task import DeviceGemmTask
from ..codegen.layer import LayerHeader, encode_layer
from ..codegen.quantize import QuantizedLayer, quantize
from ..graph import Layer
from ..hw.device import Device
from ..schedule.choice import tuned
from .plan import EnginePair, choose_mode, layer_geometry, output_shape, pattern_hint


@dataclass
class DeviceLayer:
    """A layer compiled for the device."""

    blob: np.ndarray  # uint8: the layer header and program
    output_shape: tuple[int, ...]
    mode: str
    quantized: dict[str, QuantizedLayer]  # the graph layer's name -> its integer operands
    quantization_error: float | None = None
    hint: str = ""
    weight_table: int = 0


def compile_gemm(layer: Layer, stats: dict, device: Device) -> DeviceLayer:
    """A linear layer or convolution (groups 1) on the PE array, in the mode its int8 weight pays in.

    ``stats``: the layer's calibration statistics (``input_absmax``, ``output_absmax``, ``rows``)."""
    weight = layer.matrix()
    quant, w_kn, mode, table = _quantize_and_encode(weight, layer.bias, stats, device)
    error = (
        _quantization_error(quant, weight, layer, stats["rows"])
        if stats.get("rows") is not None
        else None
    )
    n, k = weight.shape
    k_pad, n_pad = w_kn.shape
    m = int(np.prod(output_shape(layer)[:-1]))
    bias = np.zeros(n_pad, np.int64)
    bias[:n] = quant.bias
    multiplier = np.zeros(n_pad, np.int64)
    multiplier[:n] = quant.multiplier
    task = DeviceGemmTask(m, w_kn, mode, device, bias, multiplier, quant.shift, layer.relu)
    tiling = tuned(task) or task.default()
    m_pad = padded_shape(m, k_pad, n_pad, tiling)[0]
    b = ProgramBuilder(device.name)
    b.layer(layer.name)
    x_addr = b.reserve(m_pad * k_pad)  # the runtime writes the first m rows; padding rows stay zero
    out_addr = b.reserve(m_pad * n_pad)
    emit_gemm_layer(
        b, device, x_addr, w_kn, bias, multiplier, quant.shift, out_addr, m_pad, mode, layer.relu,
        tiling, table,
    )  # fmt: skip
    header = LayerHeader(
        name=layer.name,
        mode=mode if table is None else f"{mode}+table",
        input_shape=tuple(layer.x_shape),
        output_shape=output_shape(layer),
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
        device=device.doc,
        conv=layer_geometry(layer),
    )
    return DeviceLayer(
        encode_layer(header, b.build()),
        header.output_shape,
        mode,
        {layer.name: quant},
        error,
        pattern_hint(weight, w_kn, mode, device),
        0 if table is None else len(np.unique(table)),
    )


def _quantize_and_encode(weight: np.ndarray, bias, stats: dict, device: Device):
    """``(quantized layer, int8 [K, N] weight padded to the granule, mode, shared-weight table or None)``.

    A weight with no more distinct values than the device's shared-weight table (plus zero), as a
    codebook-quantized model has, is quantized with one scale so its int8 values stay shared; if they
    then do not fit the table, the layer is quantized per channel and loads plain int8 weights."""
    sharing = device.modes.weight_sharing
    shareable = sharing is not None and np.unique(weight).size <= sharing.table_size + 1
    for per_tensor in (True, False) if shareable else (False,):
        quant = QuantizedLayer.from_float(
            weight, bias, stats["input_absmax"], stats["output_absmax"], per_tensor
        )
        n, k = weight.shape
        w_kn = np.zeros((-(-k // GRANULE) * GRANULE, -(-n // GRANULE) * GRANULE), np.int8)
        w_kn[:k, :n] = quant.weight.T
        mode = choose_mode(w_kn, device)
        table = sharing_table(w_kn, mode, device) if per_tensor else None
        if table is not None or not per_tensor:
            return quant, w_kn, mode, table


def compile_fused(pair: EnginePair, first: dict, second: dict, device: Device) -> DeviceLayer:
    """A decomposed layer as one layer of the fused engine (``DECOMP_CONV``), in the pair's order.

    The quantization is the two steps': the maps get the range the first step's calibration saw at its
    output (``first``: the first step's statistics, ``second``: the second's). Raises
    :class:`~tvm_sparse.hw.isa.ProgramError` when the layer does not fit the engine's buffers."""
    o, k, _, rank = pair.basis.weight.shape
    n, h, w, c = pair.combine.x_shape
    c_pad = fused_channels(c, device)
    coefficients = pair.coefficient_layer()
    if pair.basis_first:  # basis kernels on the input channels, then the coefficients on the maps
        basis_q = QuantizedLayer.from_float(
            pair.kernels.reshape(rank, k * k), None, first["input_absmax"], first["output_absmax"]
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
        ops = FusedOperands(
            weight,
            maps_params,
            basis_q.shift,
            basis_q.weight.reshape(rank, k, k),
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
            coefficients.matrix(), coefficients.bias, first["input_absmax"], first["output_absmax"]
        )
        basis_q = QuantizedLayer.from_float(
            pair.basis.matrix(), pair.basis.bias, first["output_absmax"], second["output_absmax"]
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
        ops, coef_mode="block" if choose_mode(weight, device) == "block" else "dense"
    )
    g = BasisGeometry(n, h, w, o, rank, k, pair.basis.strides[0], pair.basis.padding[0])
    b = ProgramBuilder(device.name)
    b.layer(pair.basis.name)
    x_addr = b.reserve(n * h * w * c_pad)
    out_addr = b.reserve(int(np.prod(pair.basis.out_shape)))
    emit_fused_layer(b, device, g, x_addr, ops, out_addr)
    header = _engine_header(
        pair.basis.name, "fused", pair.combine.x_shape, pair.basis.out_shape, g, (c, c_pad), o,
        ops.relu, scales, (x_addr, out_addr), device,
    )  # fmt: skip
    return DeviceLayer(encode_layer(header, b.build()), header.output_shape, "fused", quantized)


def compile_basis(pair: EnginePair, stats: dict, device: Device) -> DeviceLayer:
    """A decomposed layer's basis convolution (combine-first) on the device's engine."""
    layer = pair.basis
    quant = _engine_quantization(layer.matrix(), layer.bias, stats)
    o, k, _, rank = layer.weight.shape
    n, h, w, maps = layer.x_shape
    g = BasisGeometry(n, h, w, o, rank, k, layer.strides[0], layer.padding[0])
    b = ProgramBuilder(device.name)
    b.layer(layer.name)
    x_addr = b.reserve(n * h * w * maps)
    out_addr = b.reserve(int(np.prod(layer.out_shape)))
    kernels, multiplier = _shared_basis_operands(pair, quant)
    emit_basis_layer(
        b, device, g, x_addr, kernels, quant.bias, multiplier, quant.shift, out_addr, layer.relu
    )
    header = _engine_header(
        layer.name, "basis", layer.x_shape, layer.out_shape, g, (maps, maps), o, layer.relu,
        (quant.input_scale, quant.output_scale), (x_addr, out_addr), device,
    )  # fmt: skip
    return DeviceLayer(
        encode_layer(header, b.build()), header.output_shape, "basis", {layer.name: quant}
    )


def compile_basis_first(pair: EnginePair, stats: dict, device: Device) -> DeviceLayer:
    """A decomposed layer's basis-first step on the device's engine: the input channels convolved with
    each basis kernel, requantized per kernel."""
    layer = pair.combine
    rank, k, _ = pair.kernels.shape
    quant = _engine_quantization(pair.kernels.reshape(rank, k * k), None, stats)
    n, h, w, c = layer.x_shape
    g = BasisGeometry(n, h, w, c, rank, k, pair.basis.strides[0], pair.basis.padding[0])
    b = ProgramBuilder(device.name)
    b.layer(layer.name)
    x_addr = b.reserve(n * h * w * c)
    out_addr = b.reserve(int(np.prod(pair.maps_shape)))
    emit_expand_layer(
        b,
        device,
        g,
        x_addr,
        quant.weight.reshape(rank, k, k),
        quant.multiplier,
        quant.shift,
        out_addr,
    )
    header = _engine_header(
        layer.name, "basis-first", layer.x_shape, pair.maps_shape, g, (c, c), rank * c, False,
        (quant.input_scale, quant.output_scale), (x_addr, out_addr), device,
    )  # fmt: skip
    return DeviceLayer(
        encode_layer(header, b.build()), pair.maps_shape, "basis-first", {layer.name: quant}
    )


def _engine_header(
    name: str,
    mode: str,
    input_shape,
    out_shape: tuple,
    g: BasisGeometry,
    reduction: tuple[int, int],
    outputs: int,
    relu: bool,
    scales: tuple[float, float],
    addresses: tuple[int, int],
    device: Device,
) -> LayerHeader:
    """The header of a layer on the basis engine: ``reduction`` is (input channels, as stored),
    ``scales`` (input, output), ``addresses`` (input, output)."""
    n, h, w = g.batch, g.height, g.width
    return LayerHeader(
        name=name,
        mode=mode,
        input_shape=tuple(input_shape),
        output_shape=tuple(out_shape),
        rows=n * h * w,
        reduction=reduction[0],
        reduction_padded=reduction[1],
        outputs=outputs,
        outputs_padded=outputs,
        relu=relu,
        input_scale=scales[0],
        output_scale=scales[1],
        x_addr=addresses[0],
        out_addr=addresses[1],
        device=device.doc,
        output_rows=n * g.out_hw[0] * g.out_hw[1],
    )


def calibration_operands(
    layer: Layer, index: int, step: str | None = None, pair: EnginePair | None = None
) -> tuple[np.ndarray, np.ndarray, dict, tuple[int, ...]]:
    """``(weight, bias, info, output shape)`` of the float calibration layer
    (``tvm_sparse.accel.calibrate_layer``) standing for ``layer`` (or an engine pair's ``step``:
    ``basis`` / ``basis-first``); ``info`` is the JSON-able description the runtime reads."""
    shape = output_shape(layer)
    if step == "basis":  # the basis scaled per output channel [O, r, k, k], and the geometry
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
    return weight, bias.astype("float32"), info, shape


def _engine_quantization(
    weight: np.ndarray, bias: np.ndarray | None, stats: dict
) -> QuantizedLayer:
    """Per-channel quantization of a basis-engine step's ``weight`` (one row per output channel)."""
    return QuantizedLayer.from_float(weight, bias, stats["input_absmax"], stats["output_absmax"])


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


def _quantization_error(
    quant: QuantizedLayer, weight: np.ndarray, layer: Layer, rows: np.ndarray
) -> float:
    """Relative L2 error of the quantized layer against the float one, on calibration rows."""
    reference = rows @ weight.T + (layer.bias if layer.bias is not None else 0)
    if layer.relu:
        reference = np.maximum(reference, 0)
    device = quant.reference(quantize(rows, quant.input_scale), layer.relu) * quant.output_scale
    return float(np.linalg.norm(device - reference) / max(np.linalg.norm(reference), 1e-12))
