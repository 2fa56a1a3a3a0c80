"""``ConvKernels``: give every float32 NHWC convolution a vectorized, parallel kernel.

TVM 0.27 lowers ``relax.nn.conv2d`` on the CPU to a naive loop nest. The host
pipeline converts convolutions to NHWC with OHWI weights (TVM's
``ConvertLayout``) and folds BatchNorm into them; this pass then replaces
each one that has a constant weight, together with its fused bias and ReLU:

* one output channel per group (depthwise, or the basis convolution of a
  decomposed layer): the depthwise kernel, output channels as lanes;
* any other, grouped ones included: the block kernel on im2col rows, the
  weight packed at compile time as the ``[O, groups * KH * KW * I]`` matrix in
  16-row panels (one panel block per group, so groups cost no extra work
  when each group has a multiple of 16 filters).
"""

from __future__ import annotations

import tvm

from ..formats import BSRMatrix
from ..graph import ConvLayer, find_layers, weight_names
from ..kernels import VECTOR_LANES
from .rewriter import conv_emitter, conv_im2col, depthwise_conv_emitter, rewrite_layers


def conv_weight_blocks(layer: ConvLayer) -> BSRMatrix:
    """The layer's im2col weight matrix as 16-row panels, one block per (panel, group) it touches."""
    matrix = conv_im2col(layer).weight_matrix(layer.weight)
    return BSRMatrix.from_dense(matrix, (VECTOR_LANES, matrix.shape[1] // layer.groups))


def is_depthwise(layer: ConvLayer) -> bool:
    """One output channel per group: depthwise convolutions and decomposed layers' basis convolutions."""
    return layer.groups == layer.out_channels and layer.x_shape[3] % layer.groups == 0


@tvm.transform.module_pass(opt_level=0, name="ConvKernels")
class ConvKernels:
    """Lower every float32 NHWC/OHWI conv2d (static or symbolic shapes) with a constant weight to the project's kernels."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        names = weight_names(mod)

        def plan(func):
            plans, absorbed = {}, set()
            for layer in find_layers(func, names):
                if not (isinstance(layer, ConvLayer) and layer.kernel_ready):
                    continue
                if is_depthwise(layer):
                    plans[layer.output_var] = depthwise_conv_emitter(layer)
                else:
                    plans[layer.output_var] = conv_emitter(
                        layer, conv_weight_blocks(layer), "conv2d"
                    )
                absorbed.update(layer.absorbed_vars)
            return plans, absorbed

        return rewrite_layers(mod, plan, "convolution kernels")
