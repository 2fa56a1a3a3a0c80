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
import tvm_ffi
from tvm import relax

from ..formats import BSRMatrix
from ..graph import bindings, find_linear_layers, shape_of, weight_names
from ..kernels.batch_matmul import LANES, batch_matmul_kernel
from .rewriter import MatmulRewriter, block_matmul_emitter, rewrite_layers

_MATMUL = tvm.ir.Op.get("relax.matmul")
_PERMUTE = tvm.ir.Op.get("relax.permute_dims")


def _is_f32(expr) -> bool:
    return str(getattr(expr.ty, "dtype", "")) == "float32"


def _transposed_source(expr, bound):
    """If ``expr`` is ``permute_dims`` swapping only the last two axes, its input."""
    producer = bound.get(expr) if isinstance(expr, relax.Var) else None
    if not (isinstance(producer, tvm.ir.Call) and producer.op.same_as(_PERMUTE)):
        return None
    shape = shape_of(producer.args[0])
    axes = producer.attrs.axes
    if shape is None or axes is None or len(shape) < 2:
        return None
    expected = list(range(len(shape) - 2)) + [len(shape) - 1, len(shape) - 2]
    return producer.args[0] if [int(a) for a in axes] == expected else None


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


def _plan_activation_matmul(var, call, bound):
    a, b = call.args
    if not (_is_f32(a) and _is_f32(b)) or any(isinstance(x, tvm.ir.Constant) for x in (a, b)):
        return None
    a_shape, b_shape, out_shape = shape_of(a), shape_of(b), shape_of(var)
    if None in (a_shape, b_shape, out_shape) or len(a_shape) < 2 or len(b_shape) < 2:
        return None
    if not tvm_ffi.structural_equal(a_shape[:-2], b_shape[:-2]):  # broadcasting batch dims: leave to the default lowering
        return None
    source = _transposed_source(b, bound)
    if source is not None and not (isinstance(out_shape[-1], int) and out_shape[-1] < LANES // 2):
        return _batched_emitter(a, source, a_shape, shape_of(source), True, out_shape)
    return _batched_emitter(a, b, a_shape, b_shape, False, out_shape)


@tvm.transform.module_pass(opt_level=0, name="DenseMatmulKernels")
class DenseMatmulKernels:
    """Lower every remaining float32 matmul to the project's dense CPU kernels."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        names = weight_names(mod)

        def plan(func):
            plans, absorbed = {}, set()
            constant_weight = set()
            for layer in find_linear_layers(func, names):
                constant_weight.add(layer.op_var)
                if layer.rows is None or str(layer.weight.dtype) != "float32":
                    continue
                panels = BSRMatrix.from_dense(layer.weight, (LANES, layer.weight.shape[1]))
                plans[layer.output_var] = block_matmul_emitter(layer, panels, "dense_matmul")
                absorbed.update(layer.absorbed_vars)
            bound = {}
            for binding in bindings(func):
                bound[binding.var] = value = binding.value
                if binding.var in constant_weight or not isinstance(value, tvm.ir.Call):
                    continue
                if value.op.same_as(_MATMUL):
                    emitter = _plan_activation_matmul(binding.var, value, bound)
                    if emitter is not None:
                        plans[binding.var] = emitter
            return plans, absorbed

        return rewrite_layers(mod, plan)
