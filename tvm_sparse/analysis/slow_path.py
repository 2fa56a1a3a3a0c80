"""Compute-heavy operators that no project kernel serves.

TVM 0.27 lowers a ``matmul``, a convolution or an ``einsum`` that reaches its
legalization to a naive loop nest (about 0.3 GFLOP/s on a CPU): a model with
one such operator left can be a hundred times slower than it should, with no
error. The host pipeline therefore counts the model's FLOPs before the
project's rewrites (:class:`CountModelFlops`) and, after them, reports every
heavy operator still there (:class:`ReportDefaultSchedules`): matmuls,
convolutions (transposed too), ``einsum``, attention, and reductions over more
than :data:`LARGE_REDUCTION` elements, each with its share of the model's
FLOPs. Symbolic dimensions count at their hints
(:func:`~tvm_sparse.graph.dim_hints`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import tvm
from tvm import relax

from ..graph import (
    bindings,
    dim_hints,
    find_activation_matmuls,
    find_layers,
    representative,
    shape_of,
)

#: Reductions over more elements than this count as compute-heavy.
LARGE_REDUCTION = 1 << 20
FLOPS_ATTR = "tvm_sparse.model_flops"

_CONV = ("relax.nn.conv1d", "relax.nn.conv2d", "relax.nn.conv3d")
_CONV_TRANSPOSE = ("relax.nn.conv1d_transpose", "relax.nn.conv2d_transpose")
_REDUCTIONS = (
    "relax.sum",
    "relax.mean",
    "relax.max",
    "relax.min",
    "relax.prod",
    "relax.variance",
    "relax.std",
    "relax.nn.softmax",
    "relax.nn.log_softmax",
    "relax.nn.layer_norm",
    "relax.nn.group_norm",
    "relax.argmax",
    "relax.argmin",
)


class DefaultScheduleWarning(UserWarning):
    """A compute-heavy operator is left on TVM's default lowering."""


@dataclass(frozen=True)
class HeavyOp:
    """A compute-heavy operator of a Relax function: its op name, shapes and FLOPs (hinted sizes)."""

    op: str
    shapes: str
    flops: int

    def describe(self, total: int = 0) -> str:
        share = f" ({100 * self.flops / total:.0f}%)" if total else ""
        return f"{self.op.removeprefix('relax.')} {self.shapes}{share}"

    def to_dict(self, total: int) -> dict:
        """The operator as JSON-able values, its share of ``total`` FLOPs included."""
        return {
            "op": self.op.removeprefix("relax."),
            "shapes": self.shapes,
            "flops": self.flops,
            "share": round(self.flops / total, 4) if total else None,
        }

    def to_json(self, total: int) -> dict:
        """Deprecated: :meth:`to_dict`."""
        warnings.warn(
            "HeavyOp.to_json() is deprecated: use to_dict()", DeprecationWarning, stacklevel=2
        )
        return self.to_dict(total)


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def _flops(call: tvm.ir.Call, out, hints: dict) -> int | None:
    """The FLOPs of ``call`` if it is compute-heavy, else None."""
    name = call.op.name
    if name == "relax.einsum":  # operands as a tuple; 2x the product of every subscript's extent
        operands = call.args[0].fields if isinstance(call.args[0], relax.Tuple) else []
        extents = {}
        for term, operand in zip(str(call.attrs.subscripts).split("->")[0].split(","), operands):
            extents.update(zip(term, (representative(d, hints) for d in shape_of(operand) or ())))
        return 2 * _prod(extents.values())
    args = [shape_of(a) for a in call.args]
    out_shape = shape_of(out)
    if out_shape is None or any(s is None for s in args[:2]):
        return None
    size = [representative(d, hints) for d in out_shape]
    ins = [[representative(d, hints) for d in s] for s in args if s is not None]
    if name == "relax.matmul":
        return 2 * _prod(size) * ins[0][-1]
    if (
        name in _CONV
    ):  # weight [O, I/groups, *kernel] in any layout: its size over O is the taps per output
        return 2 * _prod(size) * _prod(ins[1]) // max(1, _out_channels(call, ins[1]))
    if (
        name in _CONV_TRANSPOSE
    ):  # weight [I, O/groups, *kernel]: each input pixel meets its size over I
        return 2 * _prod(ins[0]) * _prod(ins[1]) // max(1, _in_channels(call, ins[1]))
    if name in ("relax.nn.attention", "relax.nn.attention_bias", "relax.nn.attention_var_len"):
        q, k = ins[0], ins[1]
        return 4 * _prod(q) * k[1]
    if name in _REDUCTIONS:
        elements = _prod(ins[0])
        return elements if elements > LARGE_REDUCTION else None
    return None


def _out_channels(call, weight) -> int:
    layout = str(call.attrs.kernel_layout)
    return weight[layout.index("O")]


def _in_channels(call, weight) -> int:
    layout = str(call.attrs.kernel_layout)
    return weight[layout.index("I")]


def heavy_ops(mod: tvm.IRModule, served: bool = False) -> list[HeavyOp]:
    """The compute-heavy Relax operators of ``mod``'s Relax functions, in program order; with
    ``served``, only those the project's kernels will not take (for a module before its rewrites:
    the layers and activation matmuls :mod:`tvm_sparse.graph` finds ready for a kernel are taken)."""
    found = []
    for _, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        hints = dim_hints(func)
        taken = _kernel_ready(func) if served else set()
        for binding in bindings(func):
            value = binding.value
            if binding.var in taken or not (
                isinstance(value, tvm.ir.Call) and isinstance(value.op, tvm.ir.Op)
            ):
                continue
            flops = _flops(value, binding.var, hints)
            if flops is not None:
                operands = (
                    value.args[0].fields if isinstance(value.args[0], relax.Tuple) else value.args
                )
                shapes = " x ".join(
                    "x".join(str(d) for d in shape_of(a))
                    for a in operands
                    if shape_of(a) is not None
                )
                found.append(HeavyOp(value.op.name, shapes, flops))
    return found


def _kernel_ready(func: relax.Function) -> set:
    layers = {layer.op_var for layer in find_layers(func) if layer.kernel_ready}
    return layers | {product.var for product in find_activation_matmuls(func)}


@tvm.transform.module_pass(opt_level=0, name="CountModelFlops")
class CountModelFlops:
    """Record the FLOPs of the model's compute-heavy operators as a module attribute (before rewriting)."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return mod.with_attr(
            FLOPS_ATTR, tvm.tirx.const(sum(op.flops for op in heavy_ops(mod)), "int64")
        )


def model_flops(mod: tvm.IRModule) -> int:
    attrs = mod.attrs
    return (
        int(attrs[FLOPS_ATTR])
        if attrs is not None and FLOPS_ATTR in attrs
        else sum(op.flops for op in heavy_ops(mod))
    )


def default_schedule_report(left: list[HeavyOp], total: int) -> str:
    """One line naming the heavy operators ``left`` on TVM's default lowering, or ``""`` if none."""
    if not left:
        return ""
    share = sum(op.flops for op in left)
    head = f"{len(left)} compute-heavy operator(s) run on TVM's default lowering"
    if total:
        head += f", {100 * share / total:.0f}% of the model's FLOPs"
    return (
        f"{head}: "
        + "; ".join(op.describe(total if len(left) > 1 else 0) for op in left[:6])
        + (" ..." if len(left) > 6 else "")
    )


@tvm.transform.module_pass(opt_level=0, name="ReportDefaultSchedules")
class ReportDefaultSchedules:
    """Warn (:class:`DefaultScheduleWarning`) about compute-heavy operators no project kernel took."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        report = default_schedule_report(heavy_ops(mod), model_flops(mod))
        if report:
            warnings.warn(report, DefaultScheduleWarning, stacklevel=2)
        return mod
