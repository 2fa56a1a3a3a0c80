"""``DenseMatmulKernels``: give the matmuls left dense a vectorized, parallel kernel.

TVM 0.27 lowers ``relax.matmul`` on the CPU to a naive loop nest (hundreds of
times slower than BLAS). This pass replaces every float32 matmul (static or symbolic shapes) with:

* a constant weight: the block kernel on full-width 16-row panels, i.e. the
  weight pre-packed at compile time as ``[N/16, K, 16]``;
* two activations (attention scores and context): the batched kernel, which
  packs the right operand per call and folds a preceding transpose of its
  last two axes into the packing.

Run it after ``SparsifyWeights`` so that it sees only the layers left dense.
"""

from __future__ import annotations

import tvm
from tvm import relax

from ..formats import BSRMatrix
from ..graph import (
    ActivationMatmul,
    find_activation_matmuls,
    find_linear_layers,
    shape_of,
    weight_names,
)
from ..kernels.batch_matmul import LANES, batch_matmul_kernel
from .rewriter import MatmulRewriter, block_matmul_emitter, rewrite_layers


def _batched_emitter(a, b, a_shape, b_shape, transpose_b, out_shape) -> callable:
    batch = 1
    for d in a_shape[:-2]:
        batch = batch * d
    m, k = a_shape[-2:]
    n = b_shape[-2] if transpose_b else b_shape[-1]

    def emit(rw: MatmulRewriter) -> relax.Expr:
        bb = rw.builder_
        kernel = batch_matmul_kernel(batch, m, n, k, transpose_b)
        gvar = rw.add_kernel(kernel, "batch_matmul")
        a3 = bb.emit(relax.op.reshape(rw.visit_expr(a), (batch, m, k)))
        b3 = bb.emit(relax.op.reshape(rw.visit_expr(b), (batch, *b_shape[-2:])))
        y = bb.emit(relax.call_tir(gvar, [a3, b3], relax.TensorType((batch, m, n), "float32")))
        return bb.emit(relax.op.reshape(y, out_shape))

    return emit


def _activation_emitter(product: ActivationMatmul) -> callable:
    if product.transposed_b is not None and not (
        isinstance(product.out_shape[-1], int) and product.out_shape[-1] < LANES // 2
    ):
        return _batched_emitter(
            product.a,
            product.transposed_b,
            product.a_shape,
            shape_of(product.transposed_b),
            True,
            product.out_shape,
        )
    return _batched_emitter(
        product.a, product.b, product.a_shape, product.b_shape, False, product.out_shape
    )


@tvm.transform.module_pass(opt_level=0, name="DenseMatmulKernels")
class DenseMatmulKernels:
    """Lower every remaining float32 matmul to the project's dense CPU kernels."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        names = weight_names(mod)

        def plan(func):
            plans, absorbed = {}, set()
            for layer in find_linear_layers(func, names):
                if not layer.kernel_ready:
                    continue
                panels = BSRMatrix.from_dense(layer.weight, (LANES, layer.weight.shape[1]))
                plans[layer.output_var] = block_matmul_emitter(layer, panels, "dense_matmul")
                absorbed.update(layer.absorbed_vars)
            for product in find_activation_matmuls(func):
                plans[product.var] = _activation_emitter(product)
            return plans, absorbed

        return rewrite_layers(mod, plan, "dense matmul kernels")
