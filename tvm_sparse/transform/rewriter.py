"""Shared machinery of the matmul rewrites: replace chosen bindings by kernel calls."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax

from ..formats import BSRMatrix
from ..graph import LinearLayer
from ..kernels import BSRKernelArgs, BSRKernelParams, bsr_matmul_kernel

#: Emits the replacement of one binding and returns the expression holding its value.
Emitter = Callable[["MatmulRewriter"], relax.Expr]


@relax.expr_functor.mutator
class MatmulRewriter(relax.PyExprMutator):
    """Rebinds planned vars to emitted kernel calls; drops bindings listed as absorbed."""

    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.plans: dict = {}
        self.absorbed: set = set()
        self._symbols: set = set()

    def rewrite(self, gvar, func, plans: dict, absorbed: set) -> None:
        self.plans, self.absorbed = plans, absorbed
        new_func = self.visit_expr(func)
        self.builder_.update_func(gvar, relax.analysis.remove_all_unused(new_func))

    def visit_var_binding_(self, binding):
        if binding.var in self.absorbed:  # e.g. a matmul whose bias add now carries the layer
            return
        emit = self.plans.get(binding.var)
        if emit is None:
            return super().visit_var_binding_(binding)
        out = emit(self)
        # Rebind the original var: it may be a dataflow block's output (not a DataflowVar).
        self.builder_.emit_normalized(relax.VarBinding(binding.var, out))

    def add_kernel(self, func, base: str) -> tvm.ir.GlobalVar:
        """Add a PrimFunc under a unique, C-safe symbol."""
        symbol = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in base)
        unique, i = symbol, 1
        while unique in self._symbols:
            unique, i = f"{symbol}_{i}", i + 1
        self._symbols.add(unique)
        return self.builder_.add_func(func.with_attr("global_symbol", unique), unique)


def block_matmul_emitter(layer: LinearLayer, weight: BSRMatrix, kind: str, params: BSRKernelParams | None = None) -> Emitter:
    """Emit ``layer`` as the block kernel on ``weight`` (sparse blocks, or full-width dense panels)."""

    def emit(rw: MatmulRewriter) -> relax.Expr:
        bb = rw.builder_
        n, k = layer.weight.shape
        r, c = weight.block_shape
        n_pad, k_pad = r * (len(weight.indptr) - 1), -(-k // c) * c
        m = layer.rows
        kernel = bsr_matmul_kernel(m, weight, params or BSRKernelParams.default((r, c)))
        gvar = rw.add_kernel(kernel, f"{kind}_{layer.name}")
        x = rw.visit_expr(layer.x)
        x2 = bb.emit(relax.op.reshape(x, (m, k))) if len(layer.x_shape) != 2 else x
        if k_pad != k:
            x2 = bb.emit(relax.op.nn.pad(x2, [0, 0, 0, k_pad - k]))
        args = BSRKernelArgs.from_bsr(weight)
        bias = np.zeros(n_pad, "float32")
        if layer.bias is not None:
            bias[:n] = layer.bias
        consts = [relax.const(a) for a in (args.data, args.indices, args.indptr, bias)]
        y = bb.emit(relax.call_tir(gvar, [x2, *consts], relax.TensorType((m, n_pad), "float32")))
        if n_pad != n:
            y = bb.emit(relax.op.strided_slice(y, axes=[1], begin=[0], end=[n]))
        if len(layer.x_shape) != 2:
            y = bb.emit(relax.op.reshape(y, (*layer.x_shape[:-1], n)))
        return y

    return emit


def rewrite_layers(mod: tvm.IRModule, plan_function) -> tvm.IRModule:
    """Run ``plan_function(func) -> (plans, absorbed)`` on each Relax function and apply it."""
    rewriter = MatmulRewriter(mod)
    changed = False
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            plans, absorbed = plan_function(func)
            if plans:
                rewriter.rewrite(gvar, func, plans, absorbed)
                changed = True
    return rewriter.builder_.finalize() if changed else mod
