"""The passes that normalise an imported model before the project's rewrites.

TVM's graph-level passes are applied only where they are correct:

* ``ConvertLayout`` runs only on modules with a convolution (the project's
  conv kernels want NHWC/OHWI), and the calls it gets wrong are taken out of
  its reach first (:class:`ConvertConvLayout`).
* ``FoldConstant`` legalizes every call it visits, and ops whose legalization
  emits bindings of its own (``dynamic_strided_slice``, ...) leave calls to
  PrimFuncs the pass never adds; TVM runs it after ``LegalizeOps`` only. Before
  legalization the project folds the bindings that depend on constants alone
  (:class:`FoldCompileTimeBindings`).
* ``FoldBatchnormToConv2D`` and ``DecomposeOpsForInference`` apply a batch
  norm's running statistics; one in training mode uses its batch's, so it is
  legalized before them (:class:`LegalizeTrainingBatchNorm`).

``FoldTransposes`` is the one TVM 0.27 lacks: ``ConvertLayout`` puts
``permute_dims`` at the edges of each NHWC region, so a model that is
channels-last already (an exporter that wraps an NCHW graph in ``Transpose``
ops) would carry two full-tensor transposes per edge that cancel.
"""

from __future__ import annotations

from collections.abc import Callable

import tvm
from tvm import relax, tirx
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from .canonicalize import canonicalize_passes
from .errors import tvm_rejection

#: The layouts convolutions are moved to: channels contiguous for the kernels (conv1d, conv3d and the
#: transposed ones then become conv2d or GEMMs: :mod:`~tvm_sparse.canonicalize`).
CONV_LAYOUT = {
    "relax.nn.conv2d": ["NHWC", "OHWI"],
    "relax.nn.conv1d": ["NWC", "OWI"],
    "relax.nn.conv3d": ["NDHWC", "ODHWI"],
    "relax.nn.conv1d_transpose": ["NWC", "IOW"],
    "relax.nn.conv2d_transpose": ["NHWC", "IOHW"],
}

#: Ops whose layout inference in TVM 0.27 is wrong: ``stack`` inserts an axis ``S`` that no
#: conversion maps back (and divides by zero on 0-d inputs), ``dropout`` gives its (output, mask)
#: tuple a single layout, ``rms_norm`` keeps its axes while moving its data, ``scatter_nd`` moves its
#: data and updates apart.
_WRONG_LAYOUT_INFERENCE = (
    "relax.stack",
    "relax.nn.dropout",
    "relax.nn.rms_norm",
    "relax.scatter_nd",
)

#: Ops whose legalization takes channels-first layouts only: without a layout of their own in
#: :data:`CONV_LAYOUT` (which a later pass then takes care of), they would follow their input to NHWC.
_CHANNELS_FIRST_ONLY = (
    "relax.nn.conv1d_transpose",
    "relax.nn.conv2d_transpose",
    "relax.nn.conv3d_transpose",
)


def _layout_unsafe(call: relax.Call) -> bool:
    """Whether ``ConvertLayout`` would get ``call`` wrong. Besides the ops above, a ``layer_norm`` over
    several axes: their scale and offset keep their layout while the data's axes move."""
    name = call.op.name
    if name == "relax.nn.layer_norm":
        return len(call.attrs.axes) > 1
    return name in _WRONG_LAYOUT_INFERENCE or (
        name in _CHANNELS_FIRST_ONLY and name not in CONV_LAYOUT
    )


def _functions(mod: tvm.IRModule):
    return [
        (gvar, func) for gvar, func in mod.functions_items() if isinstance(func, relax.Function)
    ]


def _calls(mod: tvm.IRModule, op_name: str) -> list[relax.Call]:
    found = []

    def visit(expr):
        if (
            isinstance(expr, relax.Call)
            and isinstance(expr.op, tvm.ir.Op)
            and expr.op.name == op_name
        ):
            found.append(expr)

    for _, func in _functions(mod):
        relax.analysis.post_order_visit(func, visit)
    return found


@relax.expr_functor.mutator
class _LegalizeCalls(relax.PyExprMutator):
    """Legalize (TVM's ``FLegalize``) the operator calls ``select`` picks, leave the others."""

    def __init__(self, mod: tvm.IRModule, select: Callable[[relax.Call], bool]):
        super().__init__(mod)
        self.select = select

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if isinstance(call.op, tvm.ir.Op) and self.select(call):
            return self.builder_.normalize(call.op.get_attr("FLegalize")(self.builder_, call))
        return call


def _mutate_functions(mutator: relax.PyExprMutator) -> tvm.IRModule:
    """The module ``mutator`` was built on, with ``mutator`` applied to each of its Relax functions."""
    for gvar, func in _functions(mutator.builder_.get()):
        mutator.builder_.update_func(gvar, mutator.visit_expr(func))
    return mutator.builder_.get()


def _legalize_calls(mod: tvm.IRModule, select: Callable[[relax.Call], bool]) -> tvm.IRModule:
    return _mutate_functions(_LegalizeCalls(mod, select))


@relax.expr_functor.mutator
class _ClippedTakes(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if (
            isinstance(call.op, tvm.ir.Op)
            and call.op.name == "relax.take"
            and str(call.attrs.mode) == "fast"
            and not isinstance(call.args[1], tvm.ir.Constant)
        ):
            return relax.op.take(call.args[0], call.args[1], call.attrs.axis, mode="clip")
        return call


@tvm.transform.module_pass(opt_level=0, name="ClipGatherIndices")
class ClipGatherIndices:
    """Gathers whose indices come at run time (token ids into an embedding) clamp them into the table
    (``take`` mode ``clip``): TVM's importer emits mode ``fast``, which reads out of bounds, and may
    crash, on an id past the table. ONNX leaves such ids undefined; negative ones are normalised before."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return _mutate_functions(_ClippedTakes(mod))


_POWER = is_op("relax.power")(wildcard(), is_const())


def _power_as_products(expr: relax.Expr, matches: dict) -> relax.Expr:
    call = matches[_POWER]
    exponent = call.args[1].value.numpy()
    if (
        exponent.size != 1
        or float(exponent.flat[0]) not in (2.0, 3.0, 4.0)
        or exponent.ndim > len(call.ty.shape)
    ):
        return expr
    x, n = call.args[0], int(exponent.flat[0])
    square = relax.op.multiply(x, x)
    return {2: square, 3: relax.op.multiply(square, x), 4: relax.op.multiply(square, square)}[n]


@tvm.transform.module_pass(opt_level=0, name="PowerAsProducts")
class PowerAsProducts:
    """``x ** 2``, ``x ** 3`` and ``x ** 4`` by a constant exponent (the tanh GELU's cube) as products:
    libm's ``pow`` is a scalar call per element, and TVM warns about every integer exponent over 2."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        rewritten = mod.clone()
        for gvar, func in _functions(mod):
            rewritten[gvar] = rewrite_call(_POWER, _power_as_products, func)
        return rewritten


@tvm.transform.module_pass(opt_level=0, name="LegalizeTrainingBatchNorm")
class LegalizeTrainingBatchNorm:
    """Lower ``batch_norm`` calls in training mode now, with TVM's legalization (batch statistics),
    so that the inference-only BatchNorm passes cannot apply the running statistics to them."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if not any(bool(call.attrs.training) for call in _calls(mod, "relax.nn.batch_norm")):
            return mod
        return _legalize_calls(
            mod, lambda call: call.op.name == "relax.nn.batch_norm" and bool(call.attrs.training)
        )


@relax.expr_functor.mutator
class _LayoutSafeForm(relax.PyExprMutator):
    """Rewrite what ``ConvertLayout`` misreads into equivalent forms it reads right.

    Its squeeze layout inference indexes the axes unnormalised (a negative axis writes out of bounds),
    and a ``match_cast`` whose value is not a variable (``match_cast(t[0])``, as the importer writes
    after ``unique``) gets an unknown layout.
    """

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if (
            isinstance(call.op, tvm.ir.Op)
            and call.op.name == "relax.squeeze"
            and call.attrs.axis is not None
        ):
            rank = len(call.args[0].ty.shape)
            return relax.op.squeeze(call.args[0], [int(a) % rank for a in call.attrs.axis])
        return call

    def visit_match_cast_(self, binding: relax.MatchCast) -> None:
        value = self.visit_expr(binding.value)
        if not isinstance(value, relax.Var):
            value = self.builder_.emit(value)
        self.builder_.emit_normalized(relax.MatchCast(binding.var, value, binding.ty))


@tvm.transform.module_pass(opt_level=0, name="ConvertConvLayout")
class ConvertConvLayout:
    """TVM's ``ConvertLayout`` to :data:`CONV_LAYOUT`, on modules that have a convolution.

    The model keeps its own layout at its inputs and outputs. Calls whose layout
    it would get wrong (:func:`_layout_unsafe`) are legalized first: a
    ``call_tir`` is opaque to the conversion, which hands it its inputs in the
    model's layout.
    """

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if not any(_calls(mod, op) for op in CONV_LAYOUT):
            return mod
        mod = _legalize_calls(mod, _layout_unsafe)
        mod = _mutate_functions(_LayoutSafeForm(mod))
        return relax.transform.ConvertLayout(CONV_LAYOUT)(mod)


@relax.expr_functor.mutator
class _Substitute(relax.PyExprMutator):
    """Replace variables by their folded values, and shape variables by their shapes where an operator
    call takes them (as FoldConstant does: legalization wants the shape in place)."""

    def __init__(self, values: dict, shapes: dict):
        super().__init__()
        self.values = values
        self.shapes = shapes

    def visit_var_(self, var: relax.Var) -> relax.Expr:
        return self.values[var] if var in self.values else super().visit_var_(var)

    def visit_dataflow_var_(self, var: relax.Var) -> relax.Expr:
        return self.values[var] if var in self.values else super().visit_dataflow_var_(var)

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        shaped = [isinstance(arg, relax.Var) and arg in self.shapes for arg in call.args]
        if not isinstance(call.op, tvm.ir.Op) or not any(shaped):
            return call
        args = [self.shapes[arg] if is_shape else arg for arg, is_shape in zip(call.args, shaped)]
        return relax.Call(call.op, args, call.attrs, call.ty_args)


def _folded_values(func: relax.Function, mod: tvm.IRModule) -> dict:
    """The constants and shapes of the bindings computable at compile time that the rest of ``func``
    reads, by variable.

    They are evaluated together: one function returning them, compiled once with TVM's default
    pipeline for the host and run on the VM. ``FoldConstant`` gives the same values but compiles
    every operator call on its own (a ResNet's folded BatchNorms: 34 s against 4 s), so it only
    serves where the function does not compile (an operator without a legalization).
    """
    wanted = set(relax.analysis.computable_at_compile_time(func))
    bindings = [b for block in func.body.blocks for b in block.bindings if b.var in wanted]
    if not bindings:
        return {}
    read = set(relax.analysis.free_vars(func.body.body))
    for block in func.body.blocks:
        for binding in block.bindings:
            if binding.var not in wanted:
                read.update(relax.analysis.free_vars(binding.value))
    frontier = [b.var for b in bindings if b.var in read]
    if not frontier:
        return {}
    bb = relax.BlockBuilder()
    with bb.function("fold", []):
        with bb.dataflow():
            for binding in bindings:
                bb.emit_normalized(binding)
            out = bb.emit_output(relax.Tuple(frontier))
        bb.emit_func_output(out)
    scratch = tvm.IRModule(
        {gv: f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}
    )
    scratch[tvm.ir.GlobalVar("fold")] = bb.get()["fold"]
    try:
        exe = tvm.compile(scratch, target=tvm.target.Target("llvm"))
        results = relax.VirtualMachine(exe, tvm.cpu())["fold"]()
    except Exception:  # noqa: BLE001 - an operator TVM cannot compile here: FoldConstant folds what it can
        folded = relax.transform.FoldConstant()(scratch)["fold"].body.blocks[-1].bindings[-1].value
        return {
            var: v
            for var, v in zip(frontier, folded.fields)
            if isinstance(v, (tvm.ir.GenericConst, relax.ShapeExpr))
        }
    values = {}
    for var, value in zip(frontier, results):
        if isinstance(value, tvm.runtime.Tensor):
            values[var] = relax.const(value)
        elif isinstance(value, tvm.runtime.ShapeTuple):
            values[var] = relax.ShapeExpr([int(d) for d in value])
    return values


def _fold_compile_time(func: relax.Function, mod: tvm.IRModule) -> relax.Function:
    if not isinstance(func.body, relax.SeqExpr):
        return func
    values = _folded_values(func, mod)
    shapes = {
        binding.var: binding.value
        for block in func.body.blocks
        for binding in block.bindings
        if isinstance(binding, relax.VarBinding) and isinstance(binding.value, relax.ShapeExpr)
    }
    if not values and not shapes:
        return func
    return relax.analysis.remove_all_unused(_Substitute(values, shapes).visit_expr(func))


@tvm.transform.module_pass(opt_level=0, name="FoldCompileTimeBindings")
class FoldCompileTimeBindings:
    """TVM's ``FoldConstant`` on the bindings that depend on constants alone (weight arithmetic,
    weight transposes), evaluated in a function of their own, and shapes bound to variables moved into
    the operator calls that take them; nothing else is legalized or evaluated."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        folded = mod.clone()
        for gvar, func in _functions(mod):
            folded[gvar] = _fold_compile_time(func, mod)
        return folded


def _axes(call: relax.Call) -> list[int]:
    axes = call.attrs.axes
    rank = len(call.args[0].ty.shape)
    return list(range(rank))[::-1] if axes is None else [int(a) for a in axes]


def _fold(expr: relax.Expr, matches: dict) -> relax.Expr:
    outer = matches[_OUTER]
    inner = matches.get(_INNER)
    if inner is not None and isinstance(inner, relax.Call):
        source, first = inner.args[0], _axes(inner)
        axes = [
            first[a] for a in _axes(outer)
        ]  # transpose(transpose(x, a), b) == transpose(x, a[b])
    else:
        source, axes = outer.args[0], _axes(outer)
    if axes == list(range(len(axes))):
        return source
    return relax.op.permute_dims(source, axes) if inner is not None else expr


_INNER = is_op("relax.permute_dims")(wildcard())
_OUTER = is_op("relax.permute_dims")(_INNER) | is_op("relax.permute_dims")(wildcard())


@tvm.transform.module_pass(opt_level=0, name="FoldTransposes")
class FoldTransposes:
    """Fold ``permute_dims(permute_dims(x, a), b)`` into one (or none), and drop identity ones."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        folded = mod.clone()
        for gvar, func in _functions(mod):
            folded[gvar] = relax.analysis.remove_all_unused(rewrite_call(_OUTER, _fold, func))
        return folded


def prepare_passes() -> list[tvm.transform.Pass]:
    """Normalise an imported model: BatchNorm folded into convolutions, NHWC/OHWI convolutions, constants folded.

    Convolutions are moved to NHWC with OHWI weights (:class:`ConvertConvLayout`;
    the model's own layout is kept at its inputs and outputs) so that channels
    are contiguous for the kernels; transposes that then cancel are folded away.
    """
    return [
        ClipGatherIndices(),
        LegalizeTrainingBatchNorm(),
        relax.transform.FoldBatchnormToConv2D(),
        relax.transform.DecomposeOpsForInference(),
        FoldCompileTimeBindings(),  # ConvertLayout crashes on the unfolded weight arithmetic of FoldBatchnormToConv2D
        ConvertConvLayout(),
        FoldCompileTimeBindings(),
        PowerAsProducts(),
        *canonicalize_passes(),  # conv1d/conv3d/transposed convs/weight-first matmuls into the kernels' forms
        FoldTransposes(),  # a channels-last model's own transposes cancel ConvertLayout's
    ]


def prepare(mod: tvm.IRModule) -> tvm.IRModule:
    """Apply :func:`prepare_passes`; TVM rejecting the module (an inconsistent model that its importer
    let through) is a :class:`~tvm_sparse.errors.ModelError`."""
    try:
        return tvm.transform.Sequential(prepare_passes())(mod)
    except Exception as err:
        raise tvm_rejection(err, "process") from err
