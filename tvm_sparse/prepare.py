"""The passes that normalise an imported model before the project's rewrites.

``FoldTransposes`` is the one TVM 0.27 lacks: ``ConvertLayout`` moves
convolutions to NHWC and puts ``permute_dims`` at the edges of each NHWC
region, so a model that is channels-last already (an exporter that wraps an
NCHW graph in ``Transpose`` ops) would carry two full-tensor transposes per
edge that cancel.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard

from .errors import tvm_rejection


def _axes(call: relax.Call) -> list[int]:
    axes = call.attrs.axes
    rank = len(call.args[0].ty.shape)
    return list(range(rank))[::-1] if axes is None else [int(a) for a in axes]


def _fold(expr: relax.Expr, matches: dict) -> relax.Expr:
    outer = matches[_OUTER]
    inner = matches.get(_INNER)
    if inner is not None and isinstance(inner, relax.Call):
        source, first = inner.args[0], _axes(inner)
        axes = [first[a] for a in _axes(outer)]  # transpose(transpose(x, a), b) == transpose(x, a[b])
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
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                mod[gvar] = relax.analysis.remove_all_unused(rewrite_call(_OUTER, _fold, func))
        return mod


def prepare_passes() -> list[tvm.transform.Pass]:
    """Normalise an imported model: BatchNorm folded into convolutions, NHWC/OHWI convolutions, constants folded.

    Convolutions are moved to NHWC with OHWI weights (TVM's ``ConvertLayout``;
    the model's own layout is kept at its inputs and outputs) so that channels
    are contiguous for the kernels; transposes that then cancel are folded away.
    """
    return [
        relax.transform.FoldBatchnormToConv2D(),
        relax.transform.DecomposeOpsForInference(),
        relax.transform.FoldConstant(),  # ConvertLayout crashes on the unfolded weight arithmetic of FoldBatchnormToConv2D
        relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]}),
        relax.transform.FoldConstant(),
        FoldTransposes(),  # a channels-last model's own transposes cancel ConvertLayout's
    ]


def prepare(mod: tvm.IRModule) -> tvm.IRModule:
    """Apply :func:`prepare_passes`; TVM rejecting the module (an inconsistent model that its importer
    let through) is a :class:`~tvm_sparse.errors.ModelError`."""
    try:
        return tvm.transform.Sequential(prepare_passes())(mod)
    except Exception as err:
        raise tvm_rejection(err, "process") from err
