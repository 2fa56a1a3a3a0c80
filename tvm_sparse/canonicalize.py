"""Relax passes that put the heavy layers no kernel takes as they are into forms that one does.

The project's kernels serve ``matmul(x, W)`` with a constant weight and NHWC
``conv2d`` (:mod:`tvm_sparse.graph`); TVM 0.27 lowers every other heavy layer
to a naive loop nest. After :class:`~tvm_sparse.prepare.ConvertConvLayout`
has made convolutions channels-last, these passes rewrite:

* :class:`ConvTransposeAsGemm`: NHWC ``conv2d_transpose`` (and NWC
  ``conv1d_transpose``) with a constant float32 weight into the GEMM
  ``cols = x @ Wmat.T``, written as a 1x1 ``conv2d`` (the conv kernels, dense
  or block-sparse; exact MACs), and a col2im kernel that adds the bias,
  applies a following ReLU and writes NHWC or, at a model's NCHW output,
  NCHW (:mod:`tvm_sparse.kernels.col2im`);
* :class:`ConvAsConv2d`: NWC ``conv1d`` and NDHWC ``conv3d`` whose kernel
  (or input) has depth 1 into NHWC ``conv2d`` through reshapes that copy
  nothing, so a chain of them stays channels-last;
* :class:`WeightFirstMatmul`: ``matmul(W, x)`` with ``W`` a constant 2-D
  matrix into ``matmul(x^T, W^T)^T`` (swapping the last two axes), a linear
  layer with weight ``W``.

Each rewrite carries the layer's bias ``add`` and ``relu`` with it, where
the graph passes fuse them into the kernel. Layers a rewrite cannot take
stay as they are (and :mod:`~tvm_sparse.analysis.slow_path` reports them),
except channels-last transposed convolutions, which get back the NCHW
layout TVM's legalization needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tvm
import tvm_ffi
from tvm import relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard

from .graph import (
    CONV_ORDER_PREFIX,
    WEIGHT_NAMES_ATTR,
    ConvLayer,
    bindings,
    find_layers,
    shape_of,
    use_counts,
    weight_key,
    weight_names,
)
from .kernels import add_kernel
from .kernels.col2im import Col2Im, col2im_kernel

_ADD = tvm.ir.Op.get("relax.add")
_RELU = tvm.ir.Op.get("relax.nn.relu")
_MATMUL = tvm.ir.Op.get("relax.matmul")
_PERMUTE = tvm.ir.Op.get("relax.permute_dims")
_CONV1D = tvm.ir.Op.get("relax.nn.conv1d")
_CONV3D = tvm.ir.Op.get("relax.nn.conv3d")
_CONV1D_TRANSPOSE = tvm.ir.Op.get("relax.nn.conv1d_transpose")
_CONV2D_TRANSPOSE = tvm.ir.Op.get("relax.nn.conv2d_transpose")

#: Emits a layer's replacement, given the builder and the visitor of the original operands.
Emit = Callable[[relax.BlockBuilder, Callable], relax.Expr]


def _constant(expr) -> np.ndarray | None:
    if isinstance(expr, tvm.ir.Constant) and hasattr(expr, "value"):
        return expr.value.numpy()
    return None


@dataclass
class _Epilogue:
    """The bias ``add`` and ``relu`` that follow a layer, each consuming the one before it alone."""

    bias: np.ndarray | None = None  # (channels,)
    relu: bool = False
    vars: tuple = ()  # their bindings, in order

    def apply(self, bb: relax.BlockBuilder, y: relax.Expr) -> relax.Expr:
        """Emit the bias (as a ``(channels,)`` vector, the last axis of ``y``) and the ReLU on ``y``."""
        if self.bias is not None:
            y = bb.emit(relax.op.add(y, relax.const(self.bias)))
        return bb.emit(relax.op.nn.relu(y)) if self.relu else y


def _per_channel(value: np.ndarray, rank: int, axis: int, channels: int) -> np.ndarray | None:
    """``value`` as a ``(channels,)`` vector if adding it to a rank-``rank`` tensor adds one number per index
    along ``axis`` (a negative axis), else None."""
    if value.ndim > rank or value.ndim == 0:
        return None
    for position, size in zip(range(-value.ndim, 0), value.shape):
        if size != 1 and (position != axis or size != channels):
            return None
    return (
        np.ascontiguousarray(np.broadcast_to(value.reshape(-1), (channels,)))
        if value.size in (1, channels)
        else None
    )


def _epilogue(var, uses, consumers, dtype, rank: int, axis: int, channels: int) -> _Epilogue:
    """The bias ``add`` then ``relu`` (either optional) applied to ``var`` alone."""
    epilogue = _Epilogue()
    while uses.get(var, 0) == 1 and len(consumers.get(var, ())) == 1:
        ((user, call),) = consumers[var]
        if call.op.same_as(_ADD) and epilogue.bias is None and not epilogue.relu:
            other = call.args[1] if call.args[0].same_as(var) else call.args[0]
            value = _constant(other)
            bias = (
                None
                if value is None or str(value.dtype) != dtype
                else _per_channel(value, rank, axis, channels)
            )
            if bias is None:
                break
            epilogue.bias = bias
        elif call.op.same_as(_RELU) and not epilogue.relu:
            epilogue.relu = True
        else:
            break
        epilogue.vars += (user,)
        var = user
    return epilogue


def _consumers(func: relax.Function) -> dict:
    """var -> ``[(binding var, call), ...]``: the operator calls that take ``var`` as an operand."""
    found: dict = {}
    for binding in bindings(func):
        value = binding.value
        if (
            isinstance(binding, relax.VarBinding)
            and isinstance(value, tvm.ir.Call)
            and isinstance(value.op, tvm.ir.Op)
        ):
            for arg in value.args:
                if isinstance(arg, relax.Var):
                    found.setdefault(arg, []).append((binding.var, value))
    return found


def _to_channels_first(var, uses, consumers, rank: int):
    """The ``permute_dims`` that moves ``var`` (channels last, its only use) to channels first, unless a
    transpose reads that again (:class:`~tvm_sparse.prepare.FoldTransposes` then cancels the pair); else None."""
    if uses.get(var, 0) != 1 or len(consumers.get(var, ())) != 1:
        return None
    ((user, call),) = consumers[var]
    if (
        not call.op.same_as(_PERMUTE)
        or call.attrs.axes is None
        or [int(a) for a in call.attrs.axes] != [0, rank - 1, *range(1, rank - 1)]
    ):
        return None
    return None if any(c.op.same_as(_PERMUTE) for _, c in consumers.get(user, ())) else user


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    """Bind each planned var to what its emitter returns; drop the bindings the rewrites absorbed."""

    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.plans: dict = {}
        self.absorbed: set = set()
        self.symbols = {gvar.name_hint for gvar in mod.get_global_vars()}

    def visit_var_binding_(self, binding):
        if binding.var in self.absorbed:
            return
        emit = self.plans.get(binding.var)
        if emit is None:
            return super().visit_var_binding_(binding)
        value = self.builder_.normalize(emit(self.builder_, self.visit_expr))
        self.builder_.emit_normalized(relax.VarBinding(binding.var, value))

    def add_kernel(self, func, base: str) -> tvm.ir.GlobalVar:
        """Add a PrimFunc under a unique, C-safe symbol."""
        return add_kernel(self.builder_, self.symbols, func, base)


def _rewrite(mod: tvm.IRModule, plan: Callable) -> tvm.IRModule:
    """Run ``plan(func, rewriter) -> (plans, absorbed)`` on each Relax function and apply it."""
    rewriter = _Rewriter(mod)
    changed = False
    for gvar, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        plans, absorbed = plan(func, rewriter)
        if plans:
            rewriter.plans, rewriter.absorbed = plans, absorbed
            rewriter.builder_.update_func(
                gvar, relax.analysis.remove_all_unused(rewriter.visit_expr(func))
            )
            changed = True
    return rewriter.builder_.finalize() if changed else mod


def _call_bindings(func: relax.Function, *ops):
    for binding in bindings(func):
        value = binding.value
        if (
            isinstance(binding, relax.VarBinding)
            and isinstance(value, tvm.ir.Call)
            and any(value.op.same_as(op) for op in ops)
        ):
            yield binding.var, value


def _to_layout(weight: np.ndarray, layout: str, target: str) -> np.ndarray:
    """``weight`` in ``layout`` (e.g. ``OHWI``) transposed to ``target`` (same letters)."""
    return np.ascontiguousarray(weight.transpose([layout.index(axis) for axis in target]))


# --- transposed convolutions: GEMM + col2im ---------------------------------------------------------------


def _conv_transpose_weight(call) -> np.ndarray | None:
    """The constant weight of a transposed convolution as IOHW (a 1-D one with height 1), else None."""
    weight = _constant(call.args[1])
    if weight is None:
        return None
    if call.op.same_as(_CONV1D_TRANSPOSE):
        return _to_layout(weight, str(call.attrs.kernel_layout), "IOW")[:, :, None, :]
    return _to_layout(weight, str(call.attrs.kernel_layout), "IOHW")


def _col2im_geometry(call, x_shape, weight: np.ndarray) -> Col2Im:
    """The NHWC geometry of a channels-last transposed convolution (a 1-D one as height 1)."""
    attrs = call.attrs
    one_d = call.op.same_as(_CONV1D_TRANSPOSE)

    def pair(values, height: int) -> tuple:
        values = tuple(int(v) for v in values)
        return (height, *values) if one_d else values

    padding = [int(p) for p in attrs.padding]
    return Col2Im(
        (x_shape[0], 1, *x_shape[1:]) if one_d else x_shape,
        int(weight.shape[1]) * int(attrs.groups),
        tuple(int(k) for k in weight.shape[2:]),
        pair(attrs.strides, 1),
        (0, padding[0], 0, padding[1]) if one_d else tuple(padding),
        pair(attrs.output_padding, 0),
        pair(attrs.dilation, 1),
        int(attrs.groups),
    )


def _gemm_col2im_emitter(
    name: str,
    call,
    out_shape,
    geometry: Col2Im,
    wmat: np.ndarray,
    epilogue: _Epilogue,
    rewriter,
    channels_first: bool,
) -> Emit:
    """The GEMM and col2im; ``out_shape`` is the layer's channels-last output shape, ``channels_first`` gives
    the output channels first instead."""

    def emit(bb: relax.BlockBuilder, visit) -> relax.Expr:
        x = visit(call.args[0])
        if len(out_shape) == 3:  # NWC as NHWC of height 1
            x = bb.emit(relax.op.reshape(x, geometry.input_shape))
        pointwise = relax.const(wmat.reshape(*wmat.shape[:1], 1, 1, wmat.shape[1]))  # OHWI
        cols = bb.emit(
            relax.op.nn.conv2d(
                x, pointwise, data_layout="NHWC", kernel_layout="OHWI", out_layout="NHWC"
            )
        )
        bias = (
            epilogue.bias
            if epilogue.bias is not None
            else np.zeros(geometry.out_channels, "float32")
        )
        gvar = rewriter.add_kernel(
            col2im_kernel(geometry, relu=epilogue.relu, channels_first=channels_first),
            f"col2im_{name}",
        )
        n, oh, ow, o = out_shape if len(out_shape) == 4 else (out_shape[0], 1, *out_shape[1:])
        y = bb.emit(
            relax.call_tir(
                gvar,
                [cols, relax.const(bias)],
                relax.TensorType((n, o, oh, ow) if channels_first else (n, oh, ow, o), "float32"),
            )
        )
        if len(out_shape) == 3:
            return bb.emit(relax.op.reshape(y, (n, o, ow) if channels_first else out_shape))
        return y

    return emit


def _nchw_emitter(call) -> Emit:
    """The transposed convolution in NCHW/IOHW (NCW/IOW), the layouts TVM's legalization takes."""
    one_d = call.op.same_as(_CONV1D_TRANSPOSE)
    data, kernel = ("NCW", "IOW") if one_d else ("NCHW", "IOHW")
    attrs = call.attrs
    op = relax.op.nn.conv1d_transpose if one_d else relax.op.nn.conv2d_transpose

    def to(layout: str, target: str) -> list[int]:
        return [layout.index(axis) for axis in target]

    def emit(bb: relax.BlockBuilder, visit) -> relax.Expr:
        x = bb.emit(relax.op.permute_dims(visit(call.args[0]), to(str(attrs.data_layout), data)))
        w = bb.emit(
            relax.op.permute_dims(visit(call.args[1]), to(str(attrs.kernel_layout), kernel))
        )
        y = bb.emit(
            op(
                x,
                w,
                attrs.strides,
                attrs.padding,
                attrs.output_padding,
                attrs.dilation,
                attrs.groups,
                data,
                kernel,
                data,
                attrs.out_dtype or None,
            )
        )
        return relax.op.permute_dims(y, to(data, str(attrs.out_layout)))

    return emit


def _numbered_without(main: relax.Function, names: dict, gemm_keys: set) -> dict:
    """``names`` with the ``conv#i`` entries (the model's i-th Conv, the name of the i-th convolution
    :func:`~tvm_sparse.graph.find_layers` finds in ``main`` when its weight has no name) renumbered so
    that the GEMMs, convolutions of the graph but not of the model, take no number."""
    model_convs = []
    while f"{CONV_ORDER_PREFIX}{len(model_convs)}" in names:
        model_convs.append(names[f"{CONV_ORDER_PREFIX}{len(model_convs)}"])
    remaining = iter(model_convs)
    graph_convs = [
        None
        if weight_key(layer.weight.transpose(0, 3, 1, 2)) in gemm_keys
        else next(remaining, None)
        for layer in find_layers(main, names)
        if isinstance(layer, ConvLayer)
    ] + list(remaining)
    numbered = {key: name for key, name in names.items() if not key.startswith(CONV_ORDER_PREFIX)}
    numbered.update(
        {f"{CONV_ORDER_PREFIX}{i}": name for i, name in enumerate(graph_convs) if name is not None}
    )
    return numbered


@tvm.transform.module_pass(opt_level=0, name="ConvTransposeAsGemm")
class ConvTransposeAsGemm:
    """Rewrite channels-last transposed convolutions with a constant float32 weight as GEMM + col2im.

    ``y[N, OH, OW, O] = conv2d_transpose(x[N, H, W, C], w[C, O/groups, KH, KW])`` (NHWC, any kernel
    layout; NWC ``conv1d_transpose`` as height 1; any stride, padding, output padding, dilation and
    groups; symbolic ``N``, ``H``, ``W``) becomes

    * ``cols[N, H, W, R]``, the 1x1 NHWC convolution of ``x`` by ``Wmat``
      (:meth:`~tvm_sparse.kernels.col2im.Col2Im.weight_matrix`, ``R x C``): a GEMM that the graph
      passes run dense or block-sparse like any convolution (its ``(O, KH*KW*I)`` matrix is ``Wmat``;
      a grouped layer's zeros make it block-sparse where that pays);
    * ``y = col2im(cols, bias)`` with a following per-channel bias ``add`` and ``relu`` fused; when
      the result's only reader is the transpose back to NCHW (a model output), col2im writes NCHW
      itself, unless a later transpose would undo that one.

    The layer's name (``weight_names``) follows its weight to ``Wmat``. Channels-last transposed
    convolutions it cannot take (a weight computed at run time, float16) are given back NCHW/IOHW
    through transposes, the only layouts TVM's legalization lowers.
    """

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        names = weight_names(mod)
        renamed: dict = {}  # weight_key of Wmat as an OIHW weight -> the layer's name

        def plan(func, rewriter):
            plans, absorbed = {}, set()
            uses, consumers = use_counts(func), _consumers(func)
            for index, (var, call) in enumerate(
                _call_bindings(func, _CONV2D_TRANSPOSE, _CONV1D_TRANSPOSE)
            ):
                layout = str(call.attrs.data_layout)
                x_shape, out_shape, dtype = shape_of(call.args[0]), shape_of(var), str(var.ty.dtype)
                weight = _conv_transpose_weight(call)
                known = x_shape is not None and out_shape is not None and weight is not None
                if (
                    layout not in ("NHWC", "NWC")
                    or str(call.attrs.out_layout) != layout
                    or not known
                    or dtype != "float32"
                ):
                    if layout not in ("NCHW", "NCW") or str(call.attrs.kernel_layout) not in (
                        "IOHW",
                        "IOW",
                    ):
                        plans[var] = _nchw_emitter(call)
                    continue
                geometry = _col2im_geometry(call, x_shape, weight)
                wmat = geometry.weight_matrix(weight)
                name = names.get(
                    weight_key(weight if len(x_shape) == 4 else weight[:, :, 0]),
                    f"conv_transpose_{index}",
                )
                renamed[weight_key(wmat[:, :, None, None])] = name  # as a convolution's OIHW weight
                epilogue = _epilogue(
                    var, uses, consumers, dtype, len(out_shape), -1, geometry.out_channels
                )
                end = epilogue.vars[-1] if epilogue.vars else var
                transpose = _to_channels_first(end, uses, consumers, len(out_shape))
                final = end if transpose is None else transpose
                plans[final] = _gemm_col2im_emitter(
                    name, call, out_shape, geometry, wmat, epilogue, rewriter, transpose is not None
                )
                absorbed.update({var, *epilogue.vars, end} - {final})
            return plans, absorbed

        mod = _rewrite(mod, plan)
        if not (names and renamed) or "main" not in [
            gvar.name_hint for gvar in mod.get_global_vars()
        ]:
            return mod
        return mod.with_attr(
            WEIGHT_NAMES_ATTR, _numbered_without(mod["main"], {**names, **renamed}, set(renamed))
        )


# --- conv1d and depth-1 conv3d as conv2d ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Conv2dView:
    """A convolution seen as NHWC conv2d: the input reshaped to ``x_shape``, the weight as OHWI."""

    x_shape: tuple
    weight: relax.Expr
    strides: tuple
    padding: tuple  # top, left, bottom, right
    dilation: tuple
    depth_stride: int = 1  # conv3d: keep every ``depth_stride``-th input slice


def _conv1d_view(call, x_shape) -> _Conv2dView | None:
    attrs = call.attrs
    if (str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout)) != (
        "NWC",
        "OWI",
        "NWC",
    ):
        return None
    n, w, c = x_shape
    weight = call.args[1]
    constant = _constant(weight)
    if shape_of(weight) is None:
        return None
    o, k, i = shape_of(weight)
    weight4 = (
        relax.const(constant.reshape(o, 1, k, i))
        if constant is not None
        else relax.op.reshape(weight, (o, 1, k, i))
    )
    pad = [int(p) for p in attrs.padding]
    return _Conv2dView(
        (n, 1, w, c),
        weight4,
        (1, int(attrs.strides[0])),
        (0, pad[0], 0, pad[1]),
        (1, int(attrs.dilation[0])),
    )


def _conv3d_view(call, x_shape, out_shape) -> _Conv2dView | None:
    """A channels-last conv3d whose output slices each read one input slice through one depth tap:
    a depth-1 kernel without depth padding, or a depth-1 input and output."""
    attrs = call.attrs
    if (str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout)) != (
        "NDHWC",
        "ODHWI",
        "NDHWC",
    ):
        return None
    n, d, h, w, c = x_shape
    constant = _constant(call.args[1])
    if constant is None or not isinstance(d, int) or not isinstance(out_shape[1], int):
        return None
    pad = [int(p) for p in attrs.padding]  # front, top, left, back, bottom, right
    stride, dilation = int(attrs.strides[0]), int(attrs.dilation[0])
    if constant.shape[1] == 1 and pad[0] == pad[3] == 0:
        tap, depth = 0, out_shape[1]
    elif (
        d == 1
        and out_shape[1] == 1
        and pad[0] % dilation == 0
        and pad[0] // dilation < constant.shape[1]
    ):
        tap, depth, stride = pad[0] // dilation, 1, 1
    else:
        return None
    weight = relax.const(np.ascontiguousarray(constant[:, tap]))
    spatial = (
        tuple(int(s) for s in attrs.strides[1:]),
        (pad[1], pad[2], pad[4], pad[5]),
        tuple(int(v) for v in attrs.dilation[1:]),
    )
    return _Conv2dView((n * depth, h, w, c), weight, *spatial, depth_stride=stride)


def _conv2d_emitter(call, view: _Conv2dView, out_shape, epilogue: _Epilogue) -> Emit:
    def emit(bb: relax.BlockBuilder, visit) -> relax.Expr:
        x = visit(call.args[0])
        if view.depth_stride > 1:
            x = bb.emit(
                relax.op.strided_slice(
                    x,
                    axes=[1],
                    begin=[0],
                    end=[shape_of(call.args[0])[1]],
                    strides=[view.depth_stride],
                )
            )
        x4 = bb.emit(relax.op.reshape(x, view.x_shape))
        attrs = call.attrs
        y = bb.emit(
            relax.op.nn.conv2d(
                x4,
                visit(view.weight),
                view.strides,
                view.padding,
                view.dilation,
                int(attrs.groups),
                "NHWC",
                "OHWI",
                "NHWC",
                attrs.out_dtype or None,
            )
        )
        return relax.op.reshape(epilogue.apply(bb, y), out_shape)

    return emit


@tvm.transform.module_pass(opt_level=0, name="ConvAsConv2d")
class ConvAsConv2d:
    """Rewrite NWC ``conv1d`` and some NDHWC ``conv3d`` as NHWC ``conv2d``.

    * ``conv1d(x[N, W, C], w[O, KW, I])`` (``OWI``; any stride, padding, dilation, groups, weight, dtype)
      is ``conv2d(x[N, 1, W, C], w[O, 1, KW, I])`` with height 1;
    * ``conv3d(x[N, D, H, W, C], w[O, KD, KH, KW, I])`` with a constant weight is a conv2d over the
      ``N * D'`` slices ``x[N * D', H, W, C]`` when each output slice reads one input slice through
      one depth tap: ``KD = 1`` without depth padding (a depth stride first keeps every
      ``stride``-th slice), or ``D = 1`` and one output slice (the tap the padding centres on it).
      ``D`` must be static. Other conv3d stay on TVM's lowering.

    The reshapes move no data. The conv2d's bias ``add`` and ``relu`` are moved ahead of the reshape
    back so the conv2d kernels fuse them.
    """

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        def plan(func, _rewriter):
            plans, absorbed = {}, set()
            uses, consumers = use_counts(func), _consumers(func)
            for var, call in _call_bindings(func, _CONV1D, _CONV3D):
                x_shape, out_shape = shape_of(call.args[0]), shape_of(var)
                if x_shape is None or out_shape is None:
                    continue
                view = (
                    _conv1d_view(call, x_shape)
                    if call.op.same_as(_CONV1D)
                    else _conv3d_view(call, x_shape, out_shape)
                )
                if view is None:
                    continue
                channels = out_shape[-1]
                epilogue = (
                    _epilogue(var, uses, consumers, str(var.ty.dtype), len(out_shape), -1, channels)
                    if isinstance(channels, int)
                    else _Epilogue()
                )
                plans[epilogue.vars[-1] if epilogue.vars else var] = _conv2d_emitter(
                    call, view, out_shape, epilogue
                )
                absorbed.update((var, *epilogue.vars[:-1]) if epilogue.vars else ())
            return plans, absorbed

        return _rewrite(mod, plan)


# --- constant weight on the left -----------------------------------------------------------------------------


def _swap_last(rank: int) -> list[int]:
    return [*range(rank - 2), rank - 1, rank - 2]


def _weight_first_emitter(call, weight: np.ndarray, x_shape, epilogue: _Epilogue) -> Emit:
    """``W @ x`` as ``(x^T @ W^T)^T``; a 1-D ``x`` needs no transpose."""
    rank = len(x_shape)

    def emit(bb: relax.BlockBuilder, visit) -> relax.Expr:
        x = visit(call.args[1])
        xt = bb.emit(relax.op.permute_dims(x, _swap_last(rank))) if rank > 1 else x
        yt = epilogue.apply(
            bb, bb.emit(relax.op.matmul(xt, relax.const(np.ascontiguousarray(weight.T))))
        )
        return relax.op.permute_dims(yt, _swap_last(rank)) if rank > 1 else yt

    return emit


@tvm.transform.module_pass(opt_level=0, name="WeightFirstMatmul")
class WeightFirstMatmul:
    """Rewrite ``matmul(W[N, K], x[..., K, M])``, ``W`` constant, as ``matmul(x^T, W^T)^T``.

    ``x^T[..., M, K]`` swaps ``x``'s last two axes (a 1-D ``x[K]`` is used as it is); the matmul by the
    constant ``W^T[K, N]`` is then a linear layer with weight ``W`` that the analysis, the sparse rewrite
    and the dense kernels take. A bias added per output row (``b[N, 1]``) and a ``relu`` move before the
    transpose back, where the kernels fuse them.
    """

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        def plan(func, _rewriter):
            plans, absorbed = {}, set()
            uses, consumers = use_counts(func), _consumers(func)
            for var, call in _call_bindings(func, _MATMUL):
                weight, x_shape, out_shape = (
                    _constant(call.args[0]),
                    shape_of(call.args[1]),
                    shape_of(var),
                )
                if (
                    weight is None
                    or weight.ndim != 2
                    or _constant(call.args[1]) is not None
                    or x_shape is None
                    or out_shape is None
                ):
                    continue
                n = weight.shape[0]
                axis = -2 if len(x_shape) > 1 else -1
                epilogue = _epilogue(
                    var, uses, consumers, str(var.ty.dtype), len(out_shape), axis, n
                )
                plans[epilogue.vars[-1] if epilogue.vars else var] = _weight_first_emitter(
                    call, weight, x_shape, epilogue
                )
                absorbed.update((var, *epilogue.vars[:-1]) if epilogue.vars else ())
            return plans, absorbed

        return _rewrite(mod, plan)


# --- reshape pairs --------------------------------------------------------------------------------------------


_INNER_RESHAPE = is_op("relax.reshape")(wildcard(), wildcard())
_RESHAPE_PAIR = is_op("relax.reshape")(_INNER_RESHAPE, wildcard())


def _fold_reshapes(expr: relax.Expr, matches: dict) -> relax.Expr:
    source = matches[_INNER_RESHAPE].args[0]
    shape = shape_of(expr)
    if shape is None:
        return expr
    return (
        source
        if tvm_ffi.structural_equal(shape_of(source), shape)
        else relax.op.reshape(source, shape)
    )


@tvm.transform.module_pass(opt_level=0, name="FoldReshapes")
class FoldReshapes:
    """Fold ``reshape(reshape(x, a), b)`` into ``reshape(x, b)``, or into ``x`` when ``b`` is ``x``'s shape: the
    rewrites above reshape at both ends of each layer, so between two rewritten layers the pair cancels and
    the second reads the first's NHWC output (where :class:`~tvm_sparse.transform.ShrinkChannels` sees
    the chain)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        folded = mod.clone()
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                folded[gvar] = relax.analysis.remove_all_unused(
                    rewrite_call(_RESHAPE_PAIR, _fold_reshapes, func)
                )
        return folded


def canonicalize_passes() -> list[tvm.transform.Pass]:
    """The passes of this module, in the order the host pipeline runs them (after the layout conversion)."""
    return [ConvAsConv2d(), ConvTransposeAsGemm(), WeightFirstMatmul(), FoldReshapes()]
