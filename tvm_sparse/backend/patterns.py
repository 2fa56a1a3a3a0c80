"""The ``sparse-accel`` pattern table and partitioning (TVM's BYOC flow, as ``relax.backend.*`` does it).

Every pattern is a weight-carrying op on a constant weight with the epilogue the
device fuses, ``op(x, W) [+ bias] [relu]``, for ``relax.matmul`` and NHWC
``relax.nn.conv2d``; on a device with a decomposed-convolution engine, the two
convolutions of a decomposed layer, ``conv2d(conv2d(x, C) [+ b], B) [+ b]
[relu]``, come first. Longer patterns have priority. Each pattern's check
function accepts a match only where :class:`~.plan.DevicePlan` puts the layer
on the device and the match covers exactly the layer's fused epilogue (a bias
or ReLU whose input has another user stays outside).

:func:`partition_for_sparse_accel` runs ``FuseOpsByPattern`` with
``annotate_codegen``: each match becomes a function with ``Codegen:
"sparse_accel"`` calling a composite function named after its pattern, which
carries the indices of its layers in the plan (``tvm_sparse.layers``).
"""

from __future__ import annotations

import itertools

import tvm
from tvm import relax
from tvm.relax.dpl import DFPattern, is_const, is_op, wildcard
from tvm.relax.transform import FusionPattern, PatternCheckContext

from ..hw.device import Device
from .plan import DevicePlan

#: The value of the ``Codegen`` attribute of the partitioned functions.
CODEGEN = "sparse_accel"
#: The composite function's attribute listing its layers' indices in the plan (comma-separated).
LAYERS_ATTR = "tvm_sparse.layers"

_OPS = {"matmul": "relax.matmul", "conv2d": "relax.nn.conv2d"}


def _layer_pattern(op: str, x: DFPattern, bias: bool, relu: bool) -> tuple[DFPattern, DFPattern]:
    """``(output, root)`` of ``op(x, const) [+ const] [relu]``."""
    root = is_op(_OPS[op])(x, is_const())
    out = is_op("relax.add")(root, is_const()) if bias else root
    return (is_op("relax.nn.relu")(out) if relu else out), root


def _extent_matches(layer, bias: bool, relu: bool) -> bool:
    return (layer.bias is not None) == bias and layer.relu == relu


def pattern_table(plan: DevicePlan) -> list[FusionPattern]:
    """The patterns of ``plan``'s device, highest priority first, with check functions reading ``plan``.

    A check function finds a match's layers by the vars their ops are bound to (``FuseOpsByPattern``
    rebuilds the calls it has not fused yet, but keeps their vars) and hands them to the attribute
    getter of the same match (which sees only the calls)."""
    matched: dict = {}  # a matched matmul/conv2d call -> its layer's index
    patterns = []
    if plan.device.modes.decomposed_conv is not None:
        for combine_bias, bias, relu in itertools.product((True, False), repeat=3):
            inner, combine_root = _layer_pattern("conv2d", wildcard(), combine_bias, False)
            out, basis_root = _layer_pattern("conv2d", inner, bias, relu)
            name = "decomposed_conv2d" + "_bias" * combine_bias + _suffix(bias, relu)
            patterns.append(
                FusionPattern(
                    f"{CODEGEN}.{name}",
                    out,
                    {"combine": combine_root, "basis": basis_root},
                    _pair_check(plan, matched, combine_bias, bias, relu),
                    _attrs(matched, ("combine", "basis")),
                )
            )
    for op in _OPS:
        for bias, relu in ((True, True), (True, False), (False, True), (False, False)):
            out, root = _layer_pattern(op, wildcard(), bias, relu)
            patterns.append(
                FusionPattern(
                    f"{CODEGEN}.{op}{_suffix(bias, relu)}",
                    out,
                    {"root": root},
                    _layer_check(plan, matched, bias, relu),
                    _attrs(matched, ("root",)),
                )
            )
    return patterns


def _suffix(bias: bool, relu: bool) -> str:
    return "_bias" * bias + "_relu" * relu


def _indices(plan: DevicePlan, ctx: PatternCheckContext, roles: tuple[str, ...]) -> list | None:
    """The plan indices of the layers whose ops the match annotates as ``roles``, None if one is none."""
    calls = [ctx.annotated_expr[role] for role in roles]
    indices = [plan.layer_of(ctx.value_to_bound_var.get(call)) for call in calls]
    return None if None in indices else indices


def _layer_check(plan: DevicePlan, matched: dict, bias: bool, relu: bool):
    def check(ctx: PatternCheckContext) -> bool:
        indices = _indices(plan, ctx, ("root",))
        if indices is None:
            return False
        layer = plan.layers[indices[0]]
        ok = (
            _extent_matches(layer, bias, relu)
            and id(layer) not in plan.pairs
            and not plan.host_reason(layer)
        )
        if ok:
            matched[ctx.annotated_expr["root"]] = indices[0]
        return ok

    return check


def _pair_check(plan: DevicePlan, matched: dict, combine_bias: bool, bias: bool, relu: bool):
    def check(ctx: PatternCheckContext) -> bool:
        indices = _indices(plan, ctx, ("combine", "basis"))
        if indices is None:
            return False
        combine, basis = (plan.layers[i] for i in indices)
        pair = plan.pairs.get(id(basis))
        ok = (
            pair is not None
            and pair.combine is combine
            and _extent_matches(combine, combine_bias, False)
            and _extent_matches(basis, bias, relu)
        )
        if ok:
            matched.update(zip((ctx.annotated_expr[r] for r in ("combine", "basis")), indices))
        return ok

    return check


def _attrs(matched: dict, roles: tuple[str, ...]):
    def attrs(annotated: dict) -> dict:
        return {LAYERS_ATTR: ",".join(str(matched[annotated[role]]) for role in roles)}

    return attrs


def partition_for_sparse_accel(
    mod: tvm.IRModule, device: Device
) -> tuple[tvm.IRModule, DevicePlan]:
    """Partition ``mod["main"]`` for ``device``: ``(partitioned module, the plan)``.

    The partitioned module calls one ``Codegen: "sparse_accel"`` function per device layer (or pair of
    layers on the decomposed-convolution engine); :func:`~.codegen.run_codegen` compiles them. The plan
    lists every weight-carrying layer, in program order."""
    plan = DevicePlan.of(mod, device)
    partition = relax.transform.FuseOpsByPattern(
        pattern_table(plan), bind_constants=True, annotate_codegen=True, entry_functions=["main"]
    )
    return partition(mod), plan
