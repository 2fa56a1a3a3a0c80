"""Which weight-carrying layers the ``sparse-accel`` device runs, and why the others stay on the host.

:class:`DevicePlan` looks at a module's ``main`` once (the layers of
:func:`~tvm_sparse.graph.find_layers`, with the names and indices the whole
compile path uses) and decides, for each layer, whether the device can run it
and, on a device with a decomposed-convolution engine, which pairs of
convolutions run on that engine (:class:`EnginePair`). The pattern table's
check functions (:mod:`.patterns`) and the code generator (:mod:`.codegen`)
read it; nothing is decided twice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import tvm
from tvm import relax

from ..graph import ConvLayer, Layer, find_layers, use_counts, weight_names
from ..hw.device import Device
from ..hw.encoding import block_grid, nonzero_blocks
from ..hw.isa import GemmMode
from ..transform.decomposed_conv import (
    basis_first,
    basis_first_pays,
    decomposed_pairs,
    maps_major,
    shared_basis,
)

#: Where a device layer's weight runs: the PE array's GEMM modes, the basis engine's two steps, or the
#: fused engine (``+table`` is appended to a GEMM mode when the layer loads a shared-weight table).
DeviceMode = Literal[GemmMode, "basis", "basis-first", "fused"]


@dataclass
class Placement:
    """Where one weight-carrying layer runs."""

    name: str
    op: Literal["matmul", "conv2d"]
    target: Literal["device", "host"]
    mode: DeviceMode | Literal[""] = ""
    #: distinct values in the layer's shared-weight table (0: plain int8 weight loads)
    weight_table: int = 0
    #: why a layer stays on the host
    reason: str = ""
    #: a pruned weight whose zeros the device's mode cannot skip: the prune pattern that fits
    hint: str = ""
    #: relative L2 error of the layer's output on the first calibration sample
    quantization_error: float | None = None


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


@dataclass
class DevicePlan:
    """The layers of a module's ``main`` and what the device runs of them.

    ``layers`` are in program order; a layer's index in it keys its calibration statistics. ``pairs``
    maps ``id(layer)`` of both layers of a decomposed convolution the engine runs to its pair;
    ``off_engine`` maps ``id(coefficient layer)`` of the other decomposed convolutions to why the engine
    does not run them."""

    device: Device
    layers: list[Layer]
    pairs: dict[int, EnginePair] = field(default_factory=dict)
    off_engine: dict[int, str] = field(default_factory=dict)
    #: the var bound to each layer's matmul/conv2d -> the layer's index in layers
    by_var: dict[relax.Var, int] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, mod: tvm.IRModule, device: Device) -> DevicePlan:
        """The plan of ``mod["main"]`` (its layers named with the module's weight names)."""
        func = mod["main"]
        layers = find_layers(func, weight_names(mod))
        plan = cls(device, layers)
        plan.by_var = {layer.op_var: i for i, layer in enumerate(layers)}
        plan._pair_layers(use_counts(func))
        return plan

    def layer_of(self, var: relax.Var) -> int | None:
        """The index of the layer whose matmul/conv2d is bound to ``var``, None when none is."""
        return self.by_var.get(var)

    def host_reason(self, layer: Layer) -> str:
        """Why ``layer`` (not part of an engine pair) stays on the host; "" when the device runs it."""
        if str(layer.weight.dtype) != "float32":
            return f"{layer.weight.dtype} weight"
        if not layer.static:
            return "symbolic input shape (specialise it: input_shapes=)"
        if isinstance(layer, ConvLayer) and layer.groups != 1:
            return (
                "grouped/depthwise convolution (the device runs only the basis convolutions of "
                "decomposed layers its engine supports)"
            )
        return ""

    def _pair_layers(self, uses: dict) -> None:
        mode = self.device.modes.decomposed_conv
        for combine, basis in decomposed_pairs(self.layers, uses):
            why = _off_engine(mode, combine, basis)
            shared = None if why else shared_basis(basis)
            if why or shared is None:
                why = why or "its basis convolution's groups do not share one basis"
                self.off_engine[id(combine)] = (
                    f"a decomposed layer's coefficients, off the engine ({why}): their blocks follow "
                    "the engine's basis-major order, not this layer's"
                )
                continue
            # basis-first moves the 1x1 convolution's bias behind the zero padding: only without one
            first = basis_first_pays(combine, basis) and (
                combine.bias is None or not combine.bias.any()
            )
            self.pairs[id(combine)] = self.pairs[id(basis)] = EnginePair(
                combine, basis, *shared, first
            )


def _off_engine(mode, combine: ConvLayer, basis: ConvLayer) -> str:
    """Why the device's decomposed-convolution engine (``mode``) cannot run the pair; "" when it can."""
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
    if not (combine.static and basis.static):
        return "symbolic input shape (specialise it: input_shapes=)"
    return ""


def layer_geometry(layer: Layer) -> dict | None:
    """A convolution's geometry as the layer header and the calibration layer carry it; None for a matmul."""
    if not isinstance(layer, ConvLayer):
        return None
    return {
        "kernel": list(layer.weight.shape[1:3]),
        "strides": list(layer.strides),
        "padding": list(layer.padding),
        "dilation": list(layer.dilation),
        "out_hw": list(layer.out_shape[1:3]),
    }


def output_shape(layer: Layer) -> tuple[int, ...]:
    return (
        tuple(layer.out_shape)
        if isinstance(layer, ConvLayer)
        else (*layer.x_shape[:-1], layer.out_channels)
    )


def choose_mode(weight_kn: np.ndarray, device: Device) -> GemmMode:
    """The device mode for an int8 ``[K, N]`` weight (K, N padded to the granule): N:M when every group
    of M reduction rows follows the pattern, block-sparse when at most 90% of the blocks are stored,
    else dense."""
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
