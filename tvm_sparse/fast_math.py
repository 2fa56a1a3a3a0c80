"""Fast-math on the float32 operator calls: TVM's polynomial approximations where they apply.

TVM's ``FastMathTransform`` reads ``call.op.name`` on every call (a call to a
packed function, as a run-time shape computation makes, has none) and swaps
in the approximations whatever the dtype. This pass rewrites the same four
operators, on float32 tensors only, with the same TOPI functions.
"""

from __future__ import annotations

import tvm
from tvm import relax, topi

_FAST = {
    "relax.exp": topi.fast_exp,
    "relax.erf": topi.fast_erf,
    "relax.tanh": topi.fast_tanh,
}


@relax.expr_functor.mutator
class _FastMath(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if (
            not isinstance(call.op, tvm.ir.Op)
            or not isinstance(call.ty, relax.TensorType)
            or call.ty.dtype != "float32"
        ):
            return call
        if call.op.name == "relax.nn.softmax":
            return self.builder_.call_te(topi.nn.fast_softmax, call.args[0], call.attrs.axis)
        if call.op.name in _FAST:
            return self.builder_.call_te(_FAST[call.op.name], call.args[0])
        return call


@tvm.transform.module_pass(opt_level=0, name="FastMath")
class FastMath:
    """Replace float32 ``exp``/``erf``/``tanh``/``softmax`` by TVM's vectorizable approximations
    (relative error ~1e-6)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        mutator = _FastMath(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                mutator.builder_.update_func(gvar, mutator.visit_expr(func))
        return mutator.builder_.get()
