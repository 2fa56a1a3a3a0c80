"""``SparsifyWeights``: rewrite matmuls with sparse constant weights into sparse kernels."""

from __future__ import annotations

import tvm

from ..analysis.cost_model import DENSE, CPUCostModel, FormatChoice
from ..analysis.report import layer_decision
from ..formats import BSRMatrix, parse_block_shape
from ..graph import LinearLayer, find_linear_layers, weight_names
from .rewriter import block_matmul_emitter, rewrite_layers

_FORMATS = ("auto", "bsr", "dense")


@tvm.transform.module_pass(opt_level=0, name="SparsifyWeights")
class SparsifyWeights:
    """Rewrite every ``matmul`` with a constant weight into a block-sparse kernel where it pays.

    Parameters
    ----------
    format : "auto" | "bsr" | "dense"
        ``auto`` follows the cost model; ``bsr`` forces the rewrite of every
        eligible layer (with ``block_shape`` or the best predicted one);
        ``dense`` forbids rewriting.
    block_shape : "RxC" or (r, c), optional
        Restrict the block shape (``r`` output features x ``c`` input features).
    min_speedup : float
        In ``auto`` mode, the predicted speedup a layer needs to be rewritten.
    kernel_params : BSRKernelParams, optional
        Override the kernel generator's knobs (the tuner uses this).
    """

    def __init__(self, format="auto", block_shape=None, min_speedup=1.1, kernel_params=None):
        if format not in _FORMATS:
            raise ValueError(f"format must be one of {_FORMATS}, got {format!r}")
        self.format = format
        self.block_shape = parse_block_shape(block_shape) if block_shape is not None else None
        self.cost_model = CPUCostModel(min_speedup=min_speedup)
        self.kernel_params = kernel_params

    def decide(self, layer: LinearLayer) -> FormatChoice:
        """The format this pass gives ``layer``."""
        profile, choice, note = layer_decision(layer, self.cost_model)
        if self.format == "dense" or note:
            return DENSE
        if self.block_shape is not None:
            profile.measure_block(layer.weight, self.block_shape)
            forced = FormatChoice("bsr", self.block_shape, self.cost_model.predict(profile, self.block_shape))
            if self.format == "bsr" or forced.predicted_speedup >= self.cost_model.min_speedup:
                return forced
            return DENSE
        if self.format == "bsr":
            return self.cost_model.candidates(profile)[0]
        return choice

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        names = weight_names(mod)

        def plan(func):
            plans, absorbed = {}, set()
            for layer in find_linear_layers(func, names):
                choice = self.decide(layer)
                if choice.format != "bsr":
                    continue
                weight = BSRMatrix.from_dense(layer.weight, choice.block_shape)
                plans[layer.output_var] = block_matmul_emitter(layer, weight, "bsr_matmul", self.kernel_params)
                absorbed.update(layer.absorbed_vars)
            return plans, absorbed

        return rewrite_layers(mod, plan)
