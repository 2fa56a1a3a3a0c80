"""Replacing single operator calls by kernel calls (the pooling and softmax kernels)."""

from __future__ import annotations

from collections.abc import Callable

import tvm
from tvm import relax

from ..kernels import add_kernel


@relax.expr_functor.mutator
class CallRewriter(relax.PyExprMutator):
    """Rebinds each operator call for which ``replace(rewriter, call, var)`` returns an expression."""

    def __init__(self, mod: tvm.IRModule, replace: Callable):
        super().__init__(mod)
        self.replace = replace
        self.symbols = {gvar.name_hint for gvar in mod.get_global_vars()}

    def visit_var_binding_(self, binding):
        value = binding.value
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
            out = self.replace(self, value, binding.var)
            if out is not None:
                self.builder_.emit_normalized(
                    relax.VarBinding(binding.var, self.builder_.normalize(out))
                )
                return
        super().visit_var_binding_(binding)

    def add_kernel(self, func, base: str) -> tvm.ir.GlobalVar:
        """Add a PrimFunc under a unique, C-safe symbol."""
        return add_kernel(self.builder_, self.symbols, func, base)


def rewrite_calls(mod: tvm.IRModule, replace: Callable) -> tvm.IRModule:
    """Apply ``replace(rewriter, call, var) -> expression or None`` to every operator call of every Relax function."""
    rewriter = CallRewriter(mod, replace)
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
    return rewriter.builder_.get()
