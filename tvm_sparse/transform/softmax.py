"""``SoftmaxKernels``: float32 softmax over the last axis on :mod:`tvm_sparse.kernels.softmax`.

The tensor is seen as ``[rows, n]`` (a reshape that copies nothing), so the
attention softmax ``[batch, heads, queries, keys]`` of a model with a symbolic
sequence length runs vectorized at any length.
"""

from __future__ import annotations

import tvm
from tvm import relax

from ..graph import shape_of
from ..kernels.softmax import softmax_kernel
from .call_rewriter import CallRewriter, rewrite_calls


def _softmax_call(rw: CallRewriter, call: relax.Call, var: relax.Var) -> relax.Expr | None:
    if call.op.name != "relax.nn.softmax":
        return None
    x = call.args[0]
    shape = shape_of(x)
    if (
        shape is None
        or not shape
        or str(x.ty.dtype) != "float32"
        or int(call.attrs.axis) % len(shape) != len(shape) - 1
    ):
        return None
    rows = 1
    for dim in shape[:-1]:
        rows = rows * dim
    matrix = (rows, shape[-1])
    gvar = rw.add_kernel(softmax_kernel(matrix), "softmax")
    flat = rw.builder_.emit(relax.op.reshape(rw.visit_expr(x), relax.ShapeExpr(list(matrix))))
    out = rw.builder_.emit(relax.call_tir(gvar, [flat], relax.TensorType(matrix, "float32")))
    return relax.op.reshape(out, relax.ShapeExpr(list(shape)))


@tvm.transform.module_pass(opt_level=0, name="SoftmaxKernels")
class SoftmaxKernels:
    """Lower float32 ``softmax`` over the last axis to the project's vectorized kernel."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_calls(mod, _softmax_call)
