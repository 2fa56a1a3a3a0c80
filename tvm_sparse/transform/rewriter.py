"""Shared machinery of the layer rewrites: replace chosen bindings by kernel calls."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

from .. import progress
from ..formats import BSRMatrix, NMMatrix
from ..graph import ConvLayer, Layer, LinearLayer, representative, shape_of
from ..kernels import (
    VECTOR_LANES,
    BSRKernelArgs,
    BSRKernelParams,
    Im2Col,
    add_kernel,
    bsr_matmul_kernel,
)
from ..kernels.codebook_decode import codebook_decode_kernel
from ..kernels.depthwise_conv import depthwise_conv_kernel
from ..kernels.nm_matmul import NMKernelArgs, nm_matmul_kernel, padded_reduction
from ..kernels.tasks import BlockMatmulTask, NMMatmulTask
from ..schedule.choice import tuned
from ..schedule.records import KernelRecords

#: Emits the replacement of one binding and returns the expression holding its value.
Emitter = Callable[["MatmulRewriter"], relax.Expr]


@relax.expr_functor.mutator
class MatmulRewriter(relax.PyExprMutator):
    """Rebinds planned vars to emitted kernel calls; drops bindings listed as absorbed."""

    def __init__(self, mod: tvm.IRModule, description: str = "layers"):
        super().__init__(mod)
        self.description = description  # what the progress line counts
        self.plans: dict = {}
        self.absorbed: set = set()
        self._symbols: set = {
            gvar.name_hint for gvar in mod.get_global_vars()
        }  # earlier passes' kernels

    def rewrite(self, gvar, func, plans: dict, absorbed: set) -> None:
        self.plans, self.absorbed = plans, absorbed
        with progress.task(
            f"{self.description} ({gvar.name_hint})", total=len(plans)
        ) as self._advance:
            new_func = self.visit_expr(func)
        self.builder_.update_func(gvar, relax.analysis.remove_all_unused(new_func))

    def visit_var_binding_(self, binding):
        if binding.var in self.absorbed:  # e.g. a matmul whose bias add now carries the layer
            return
        emit = self.plans.get(binding.var)
        if emit is None:
            return super().visit_var_binding_(binding)
        out = emit(self)
        self._advance()
        if (
            isinstance(binding.var, relax.DataflowVar)
            and isinstance(out, relax.Var)
            and not _same_shape(out, binding.var)
        ):
            # A rewrite that changes the value's shape (channel shrinking): later uses read the new var.
            self.set_var_remap(binding.var, out)
            return
        # Rebind the original var: it may be a dataflow block's output (not a DataflowVar).
        self.builder_.emit_normalized(relax.VarBinding(binding.var, out))

    def add_kernel(self, func, base: str) -> tvm.ir.GlobalVar:
        """Add a PrimFunc under a unique, C-safe symbol."""
        return add_kernel(self.builder_, self._symbols, func, base)


def _kernel_params(
    params: BSRKernelParams | None, layer: Layer, weight: BSRMatrix, im2col: Im2Col | None = None
) -> BSRKernelParams:
    """Explicit parameters, else the build's tuning records, else the shipped record for this shape, else
    the default. A symbolic shape is looked up at its hint (:func:`~tvm_sparse.graph.dim_hints`)."""
    if params is not None:
        return params
    if im2col is not None:
        im2col = dataclasses.replace(
            im2col, input_shape=tuple(representative(d, layer.hints) for d in im2col.input_shape)
        )
    m = layer.rows_hint if im2col is None else im2col.rows
    task = BlockMatmulTask(m, weight, im2col, layer.relu)
    k_n = weight.shape[1], weight.shape[0]
    return (
        tuned(task)
        or KernelRecords.for_host().lookup(m, *k_n, weight.block_shape)
        or task.default()
    )


def _same_shape(a: relax.Expr, b: relax.Expr) -> bool:
    return tvm_ffi.structural_equal(shape_of(a), shape_of(b))


def _bias_const(layer: Layer, n_pad: int) -> relax.Constant:
    bias = np.zeros(n_pad, "float32")
    if layer.bias is not None:
        bias[: layer.out_channels] = layer.bias
    return relax.const(bias)


def _block_kernel_call(
    rw: MatmulRewriter,
    kernel,
    symbol: str,
    x: relax.Expr,
    layer: Layer,
    weight: BSRMatrix,
    rows: tuple,
    shared: bool,
) -> relax.Expr:
    """Call a block kernel on ``x``; returns ``Y[*rows, out_channels]`` (padding columns cropped). With
    ``shared``, a weight whose values fit a uint8 codebook is a constant of indices and the codebook, decoded
    by a kernel call ahead of it."""
    n_pad = weight.block_shape[0] * (len(weight.indptr) - 1)
    args = BSRKernelArgs.from_bsr(weight, shared)
    data = relax.const(args.data)
    if args.codebook is not None:
        decode = rw.add_kernel(
            codebook_decode_kernel(args.data.shape, args.codebook.size),
            f"codebook_decode_{layer.name}",
        )
        data = rw.builder_.emit(
            relax.call_tir(
                decode,
                [data, relax.const(args.codebook)],
                relax.TensorType(args.data.shape, "float32"),
            )
        )
    return _kernel_call(
        rw, kernel, symbol, x, [data, args.indices, args.indptr], layer, n_pad, rows
    )


def _kernel_call(
    rw: MatmulRewriter,
    kernel,
    symbol: str,
    x: relax.Expr,
    weight_args: list,
    layer: Layer,
    n_pad: int,
    rows: tuple,
) -> relax.Expr:
    """Call ``kernel(x, *weight_args, bias, Y[*rows, n_pad])`` (arrays become constants); returns ``Y[*rows, out_channels]``."""
    bb = rw.builder_
    consts = [a if isinstance(a, relax.Expr) else relax.const(a) for a in weight_args] + [
        _bias_const(layer, n_pad)
    ]
    gvar = rw.add_kernel(kernel, symbol)
    y = bb.emit(relax.call_tir(gvar, [x, *consts], relax.TensorType((*rows, n_pad), "float32")))
    if n_pad != layer.out_channels:
        y = bb.emit(
            relax.op.strided_slice(y, axes=[len(rows)], begin=[0], end=[layer.out_channels])
        )
    return y


def block_matmul_emitter(
    layer: LinearLayer,
    weight: BSRMatrix,
    kind: str,
    params: BSRKernelParams | None = None,
    shared: bool = False,
) -> Emitter:
    """Emit ``layer`` as the block kernel on ``weight`` (sparse blocks, or full-width dense panels); ``shared``
    stores a weight with at most 256 distinct values as indices into them."""

    def emit(rw: MatmulRewriter) -> relax.Expr:
        bb = rw.builder_
        n, k = layer.weight.shape
        c = weight.block_shape[1]
        k_pad = -(-k // c) * c
        m = layer.rows
        kernel = bsr_matmul_kernel(
            m, weight, _kernel_params(params, layer, weight), relu=layer.relu
        )
        x = rw.visit_expr(layer.x)
        x2 = bb.emit(relax.op.reshape(x, (m, k))) if len(layer.x_shape) != 2 else x
        if k_pad != k:
            x2 = bb.emit(relax.op.nn.pad(x2, [0, 0, 0, k_pad - k]))
        y = _block_kernel_call(rw, kernel, f"{kind}_{layer.name}", x2, layer, weight, (m,), shared)
        if len(layer.x_shape) != 2:
            y = bb.emit(relax.op.reshape(y, (*layer.x_shape[:-1], n)))
        return y

    return emit


def nm_matmul_emitter(layer: LinearLayer, weight: NMMatrix) -> Emitter:
    """Emit ``layer`` as the N:M kernel on ``weight``."""

    def emit(rw: MatmulRewriter) -> relax.Expr:
        bb = rw.builder_
        n, k = layer.weight.shape
        k_pad, n_pad, m = padded_reduction(k), -(-n // VECTOR_LANES) * VECTOR_LANES, layer.rows
        x = rw.visit_expr(layer.x)
        x2 = bb.emit(relax.op.reshape(x, (m, k))) if len(layer.x_shape) != 2 else x
        if k_pad != k:
            x2 = bb.emit(relax.op.nn.pad(x2, [0, 0, 0, k_pad - k]))
        args = NMKernelArgs.from_nm(weight)
        task = NMMatmulTask(layer.rows_hint, weight, layer.relu)
        kernel = nm_matmul_kernel(
            m, weight, relu=layer.relu, rows_per_tile=tuned(task) or task.default()
        )
        y = _kernel_call(
            rw,
            kernel,
            f"nm_matmul_{layer.name}",
            x2,
            [args.positions, args.values],
            layer,
            n_pad,
            (m,),
        )
        if len(layer.x_shape) != 2:
            y = bb.emit(relax.op.reshape(y, (*layer.x_shape[:-1], n)))
        return y

    return emit


def conv_im2col(layer: ConvLayer) -> Im2Col:
    """The im2col view of an NHWC convolution layer."""
    return Im2Col(
        input_shape=layer.x_shape,
        kernel=layer.weight.shape[1:3],
        strides=layer.strides,
        padding=layer.padding[:2],
        dilation=layer.dilation,
        groups=layer.groups,
        padding_end=layer.padding[2:],
    )


def conv_emitter(
    layer: ConvLayer,
    weight: BSRMatrix,
    kind: str,
    params: BSRKernelParams | None = None,
    shared: bool = False,
) -> Emitter:
    """Emit an NHWC convolution as the block kernel on its im2col rows (``weight`` is the im2col matrix)."""

    def emit(rw: MatmulRewriter) -> relax.Expr:
        im2col = conv_im2col(layer)
        params_ = _kernel_params(params, layer, weight, im2col)
        kernel = bsr_matmul_kernel(im2col.rows, weight, params_, im2col=im2col, relu=layer.relu)
        return _block_kernel_call(
            rw,
            kernel,
            f"{kind}_{layer.name}",
            rw.visit_expr(layer.x),
            layer,
            weight,
            tuple(layer.out_shape[:3]),
            shared,
        )

    return emit


def depthwise_conv_emitter(layer: ConvLayer, maps_major: bool = False) -> Emitter:
    """Emit an NHWC convolution with one output channel per group (depthwise, or a decomposed layer's
    basis convolution) as the depthwise kernel (``maps_major``: see :func:`depthwise_conv_kernel`)."""

    def emit(rw: MatmulRewriter) -> relax.Expr:
        kernel = depthwise_conv_kernel(conv_im2col(layer), relu=layer.relu, maps_major=maps_major)
        gvar = rw.add_kernel(kernel, f"depthwise_conv2d_{layer.name}")
        taps = relax.const(np.ascontiguousarray(layer.weight.transpose(1, 2, 3, 0)))  # OHWG -> HWGO
        args = [rw.visit_expr(layer.x), taps, _bias_const(layer, layer.out_channels)]
        return rw.builder_.emit(
            relax.call_tir(gvar, args, relax.TensorType(layer.out_shape, "float32"))
        )

    return emit


def rewrite_layers(mod: tvm.IRModule, plan_function, description: str = "layers") -> tvm.IRModule:
    """Run ``plan_function(func) -> (plans, absorbed)`` on each Relax function and apply it; ``description``
    names what the progress line counts."""
    rewriter = MatmulRewriter(mod, description)
    changed = False
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            plans, absorbed = plan_function(func)
            if plans:
                rewriter.rewrite(gvar, func, plans, absorbed)
                changed = True
    return rewriter.builder_.finalize() if changed else mod
