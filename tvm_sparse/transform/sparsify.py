"""``SparsifyWeights``: rewrite matmuls and convolutions with sparse constant weights into sparse kernels.

Convolutions (NHWC, groups 1) are judged on their ``(O, KH*KW*I)`` im2col
matrix and run the block-sparse kernel on im2col rows; N:M is for matmuls.
"""

from __future__ import annotations

import warnings
from typing import Literal, get_args

import tvm

from ..analysis.cost_model import DENSE, CPUCostModel, FormatChoice, KernelFormat
from ..analysis.profile import CANDIDATE_NM
from ..analysis.report import layer_decision
from ..formats import BSRMatrix, NMMatrix, nm_violations, parse_block_shape
from ..graph import ConvLayer, Layer, find_layers, weight_names
from ..kernels.nm_matmul import nm_kernel_available
from .rewriter import (
    block_matmul_emitter,
    conv_emitter,
    nm_matmul_emitter,
    rewrite_layers,
)

#: ``SparsifyWeights``'s ``format``: the cost model's choice (``auto``) or one kernel format for all.
SparsifyFormat = Literal["auto", KernelFormat]
_FORMATS: tuple[SparsifyFormat, ...] = get_args(SparsifyFormat)


@tvm.transform.module_pass(opt_level=0, name="SparsifyWeights")
class SparsifyWeights:
    """Rewrite every ``matmul`` with a constant weight into a block-sparse kernel where it pays.

    Parameters
    ----------
    format : "auto" | "bsr" | "nm" | "dense"
        ``auto`` follows the cost model; ``bsr`` forces the block-sparse
        rewrite of every eligible layer (with ``block_shape`` or the best
        predicted one); ``nm`` forces the N:M kernel on every layer whose
        weight follows an N:M pattern (others stay dense, with a warning that
        counts the violating groups); ``dense`` forbids rewriting.
    block_shape : "RxC" or (r, c), optional
        Restrict the block shape (``r`` output features x ``c`` input features).
    min_speedup : float
        In ``auto`` mode, the predicted speedup a layer needs to be rewritten.
    kernel_params : BSRKernelParams, optional
        Override the kernel generator's knobs (the tuner uses this).
    shared_weights : bool
        Store the block-sparse weights whose values are shared (at most 256
        distinct values, as ``prune --quant codebook:B`` writes them) as
        uint8 indices plus the codebook, decoded at each call by a parallel
        decode kernel ahead of the block kernel: 4x smaller weight values for
        0.9-1.2x the layer's time (``benchmarks/compression.py``).
    """

    def __init__(
        self,
        format: SparsifyFormat = "auto",
        block_shape=None,
        min_speedup=1.1,
        kernel_params=None,
        shared_weights=False,
    ):
        if format not in _FORMATS:
            raise ValueError(f"format must be one of {_FORMATS}, got {format!r}")
        self.format = format
        self.block_shape = parse_block_shape(block_shape) if block_shape is not None else None
        self.cost_model = CPUCostModel(min_speedup=min_speedup)
        self.kernel_params = kernel_params
        self.shared_weights = shared_weights

    def decide(self, layer: Layer) -> FormatChoice:
        """The format this pass gives ``layer``."""
        profile, choice, note = layer_decision(layer, self.cost_model)
        if self.format == "dense" or note:
            return DENSE
        if self.block_shape is not None:
            profile.measure_block(layer.matrix(), self.block_shape)
            forced = FormatChoice(
                "bsr", self.block_shape, self.cost_model.predict(profile, self.block_shape)
            )
            if self.format == "bsr" or forced.predicted_speedup >= self.cost_model.min_speedup:
                return forced
            return DENSE
        if self.format in ("bsr", "nm"):
            forced = [
                c
                for c in self.cost_model.candidates(profile, nm=not isinstance(layer, ConvLayer))
                if c.format == self.format
            ]
            if forced:
                return forced[0]
            if self.format == "nm":
                counts = ", ".join(
                    f"{n}:{m} {nm_violations(layer.matrix(), n, m)}" for n, m in CANDIDATE_NM
                )
                warnings.warn(
                    f"layer {layer.name} is not N:M (violating groups: {counts}): kept dense",
                    stacklevel=2,
                )
            return DENSE
        return choice

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        names = weight_names(mod)
        self.cost_model.nm_kernel = nm_kernel_available()

        def plan(func):
            plans, absorbed = {}, set()
            for layer in find_layers(func, names):
                choice = self.decide(layer)
                if choice.format == "bsr" and isinstance(layer, ConvLayer):
                    weight = BSRMatrix.from_dense(layer.matrix(), choice.block_shape)
                    plans[layer.output_var] = conv_emitter(
                        layer, weight, "bsr_conv2d", self.kernel_params, self.shared_weights
                    )
                elif choice.format == "bsr":
                    weight = BSRMatrix.from_dense(layer.weight, choice.block_shape)
                    plans[layer.output_var] = block_matmul_emitter(
                        layer, weight, "bsr_matmul", self.kernel_params, self.shared_weights
                    )
                elif choice.format == "nm":
                    plans[layer.output_var] = nm_matmul_emitter(
                        layer, NMMatrix.from_dense(layer.weight, *choice.nm)
                    )
                else:
                    continue
                absorbed.update(layer.absorbed_vars)
            return plans, absorbed

        return rewrite_layers(mod, plan, "sparse kernels")
