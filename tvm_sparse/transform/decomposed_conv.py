"""``DecomposedConvKernels``: run decomposed convolutions (ESCALATE's order) with contiguous maps.

A decomposed layer (see :mod:`tvm_sparse.prune.decompose`) is a 1x1
convolution producing ``O * r`` maps, channel ``o * r + j``, followed by a
convolution with ``O`` groups of ``r`` maps and one output each. Read in that
order, the basis convolution's loads across 16 output channels are strided by
``r``. This pass finds such pairs and permutes the 1x1 convolution's output
channels to ``j * O + o`` at compile time (weights and bias), so that the
basis convolution (the depthwise kernel, ``maps_major``) loads contiguous
vectors. The 1x1 convolution runs the block-sparse kernel when the cost model
says its (pruned) coefficients pay, else the dense one.

Run it before ``SparsifyWeights`` and ``ConvKernels``; layers it does not
pair are left to them.

The same pair can also run in PENNI's order, the basis kernels first: every
input channel convolved with each basis kernel (``C * r`` maps at the output
resolution), then one 1x1 convolution with the coefficients. A strided layer
issues fewer MACs so, since its coefficients then run on the strided maps;
:func:`basis_first_pays` compares the two orders and :func:`basis_first`
gives the operands.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tvm

from ..analysis.cost_model import CPUCostModel
from ..analysis.report import layer_decision
from ..formats import BSRMatrix
from ..graph import ConvLayer, find_layers, use_counts, weight_names
from .conv import conv_weight_blocks, is_depthwise
from .rewriter import conv_emitter, depthwise_conv_emitter, rewrite_layers


def decomposed_pairs(layers, uses: dict) -> list[tuple[ConvLayer, ConvLayer]]:
    """(1x1 convolution, basis convolution) pairs where the first feeds only the second."""
    convs = [layer for layer in layers if isinstance(layer, ConvLayer)]
    pairs = []
    for basis in convs:
        if (
            not (basis.x_shape and basis.out_shape and is_depthwise(basis))
            or basis.x_shape[3] == basis.groups
        ):
            continue
        combine = next((c for c in convs if c.output_var.same_as(basis.x)), None)
        if (
            combine is None
            or uses.get(combine.output_var, 0) != 1
            or combine.relu
            or combine.groups != 1
            or combine.weight.shape[1:3] != (1, 1)
            or combine.strides != (1, 1)
            or combine.padding != (0, 0, 0, 0)
            or str(combine.weight.dtype) != "float32"
            or combine.out_shape is None
        ):
            continue
        pairs.append((combine, basis))
    return pairs


def maps_major(combine: ConvLayer, rank: int) -> ConvLayer:
    """``combine`` with its output channels permuted from ``o * r + j`` to ``j * O + o``."""
    channels = combine.out_channels // rank
    order = (
        np.arange(combine.out_channels).reshape(channels, rank).T.ravel()
    )  # new channel -> old channel
    bias = None if combine.bias is None else combine.bias[order]
    return dataclasses.replace(
        combine, weight=np.ascontiguousarray(combine.weight[order]), bias=bias
    )


def shared_basis(basis: ConvLayer, tolerance: float = 1e-5) -> tuple[np.ndarray, np.ndarray] | None:
    """``(kernels [r, k, k], scales [O])`` with ``basis.weight[o] == scales[o] * kernels`` (a folded BatchNorm
    scales each output channel), or None when the groups do not share one basis."""
    o, k, _, r = basis.weight.shape
    rows = basis.weight.reshape(o, -1).astype(np.float64)
    ref = rows[0]
    norm = float(ref @ ref)
    if norm == 0:
        return None
    scales = rows @ ref / norm
    if np.linalg.norm(rows - np.outer(scales, ref)) > tolerance * np.linalg.norm(rows):
        return None
    return np.ascontiguousarray(basis.weight[0].transpose(2, 0, 1)), scales


def basis_first_pays(combine: ConvLayer, basis: ConvLayer) -> bool:
    """Whether the basis-first order issues fewer MACs than the combine-first one, counting only the
    nonzero coefficients."""
    _, h, w, c = combine.x_shape
    _, oh, ow, o = basis.out_shape
    _, k, _, r = basis.weight.shape
    nonzeros = np.count_nonzero(combine.weight)
    combine_first = h * w * nonzeros + oh * ow * o * r * k * k
    basis_first = oh * ow * (c * r * k * k + nonzeros)
    return basis_first < combine_first


def basis_first(combine: ConvLayer, basis: ConvLayer, scales: np.ndarray) -> np.ndarray:
    """The coefficients of the basis-first order, ``[O, r * C]``: column ``j * C + c`` multiplies input
    channel ``c`` convolved with basis kernel ``j``; each output channel's basis scale (``scales``, from
    :func:`shared_basis`) is folded in."""
    o, _, _, r = basis.weight.shape
    c = combine.x_shape[3]
    maps = maps_major(combine, r).matrix()  # [r * O, C], row j * O + o
    return np.ascontiguousarray(
        (maps.reshape(r, o, c).transpose(1, 0, 2).reshape(o, r * c) * scales[:, None]).astype(
            combine.weight.dtype
        )
    )


@tvm.transform.module_pass(opt_level=0, name="DecomposedConvKernels")
class DecomposedConvKernels:
    """Pair each decomposed layer's 1x1 and basis convolutions and emit them with maps-major channels."""

    def __init__(self, min_speedup: float = 1.1):
        self.cost_model = CPUCostModel(min_speedup=min_speedup)

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        names = weight_names(mod)

        def plan(func):
            plans, absorbed = {}, set()
            for combine, basis in decomposed_pairs(find_layers(func, names), use_counts(func)):
                permuted = maps_major(combine, basis.x_shape[3] // basis.groups)
                _, choice, note = layer_decision(permuted, self.cost_model)
                if choice.format == "bsr" and not note:
                    weight, kind = (
                        BSRMatrix.from_dense(permuted.matrix(), choice.block_shape),
                        "bsr_conv2d",
                    )
                else:
                    weight, kind = conv_weight_blocks(permuted), "conv2d"
                plans[combine.output_var] = conv_emitter(permuted, weight, kind)
                plans[basis.output_var] = depthwise_conv_emitter(basis, maps_major=True)
                absorbed.update(combine.absorbed_vars)
                absorbed.update(basis.absorbed_vars)
            return plans, absorbed

        return rewrite_layers(mod, plan, "decomposed convolutions")
