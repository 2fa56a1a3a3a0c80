"""The values a model's integer inputs may take: the tables they index.

Token ids reach an embedding ``take`` (ONNX ``Gather``), sometimes through
reshapes or casts; an index outside the table is undefined behaviour in the
compiled code (TVM's ``take`` in its ``fast`` mode reads out of bounds). The
walk below follows each integer or boolean input of ``main`` through the ops
that only move or cast its values, to the ``take`` whose indices it becomes,
and records the table's extent along the gathered axis. The ONNX importer's
negative-index normalisation (``where(x < 0, x + extent, x)``) is recognised,
so negative ids down to ``-extent`` count as valid.

An integer input whose values reach an index only through arithmetic (say,
position ids computed from a mask), or an index of an op other than ``take``,
has no range that can be stated: such inputs are marked ``computes_indices``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from .graph import bindings, static_shape

#: Ops whose output holds only values of their first operand (moved, broadcast or cast).
_SAME_VALUES = {
    "relax.reshape",
    "relax.expand_dims",
    "relax.squeeze",
    "relax.permute_dims",
    "relax.flatten",
    "relax.broadcast_to",
    "relax.strided_slice",
    "relax.tile",
    "relax.repeat",
    "relax.astype",
}
#: Ops that use the values of some operands as indices or shapes, other than ``take`` (operand positions).
_INDEX_OPERANDS = {
    "relax.gather_elements": (1,),
    "relax.gather_nd": (1,),
    "relax.scatter_elements": (1,),
    "relax.scatter_nd": (1,),
    "relax.tensor_to_shape": (0,),
    "relax.dynamic_strided_slice": (1, 2, 3),
}
#: Calls whose use of their operands is opaque here: every integer operand may be an index.
_OPAQUE = {"relax.call_tir", "relax.call_dps_packed", "relax.call_pure_packed"}


@dataclass(frozen=True)
class IntegerInput:
    """What the values of one integer (or boolean) model input may be.

    ``low``/``high`` bound the valid values, ``low <= v < high``, when the input
    indexes tables (the tightest bound over them); both are ``None`` when it
    indexes none. ``computes_indices`` is set when its values reach an index
    through other computation, so no valid range can be derived.
    """

    name: str
    dtype: str
    low: int | None = None
    high: int | None = None
    computes_indices: bool = False

    @property
    def indexes_table(self) -> bool:
        return self.high is not None


def _is_integer(dtype: str) -> bool:
    return dtype == "bool" or dtype.startswith(("int", "uint"))


def _op_name(expr) -> str | None:
    op = getattr(expr, "op", None)
    return op.name if isinstance(op, tvm.ir.Op) else None


def _vars(expr) -> list:
    """The Vars among a call operand (through tuples)."""
    if isinstance(expr, relax.Var):
        return [expr]
    if isinstance(expr, relax.Tuple):
        return [v for field in expr.fields for v in _vars(field)]
    return []


class _Walk:
    """One pass over the bindings of ``main``, in order, following where the integer inputs' values go."""

    def __init__(self, func: relax.Function):
        self.values: dict = {}  # Var -> its bound expression
        self.sources: dict = {}  # Var -> names of the integer inputs its value depends on
        self.direct: dict = {}  # Var -> (input name, negative ids it normalises) when it holds the input's values
        self.bounds: dict = {}  # input name -> [(low, high)]
        self.computes: set = set()
        for p in func.params:
            if _is_integer(str(getattr(p.ty, "dtype", ""))):
                self.sources[p] = frozenset([p.name])
                self.direct[p] = (p.name, 0)
        for binding in bindings(func):
            self.values[binding.var] = binding.value
            self.visit(binding.var, binding.value)

    def deps(self, expr) -> frozenset:
        return frozenset().union(*(self.sources.get(v, frozenset()) for v in _vars(expr)))

    def visit(self, var, value) -> None:
        if isinstance(value, relax.Var):
            self.sources[var] = self.sources.get(value, frozenset())
            if value in self.direct:
                self.direct[var] = self.direct[value]
            return
        if isinstance(value, relax.TupleGetItem):
            args = [value.tuple_value]
        elif isinstance(value, relax.Tuple):
            args = list(value.fields)
        else:
            args = list(getattr(value, "args", []))
        self.sources[var] = frozenset().union(*(self.deps(a) for a in args))
        name = _op_name(value)
        if name in _OPAQUE or (
            name is None and hasattr(value, "args")
        ):  # packed, TIR or Relax function calls
            self.computes.update(self.sources[var])
        elif name in _SAME_VALUES and args and args[0] in self.direct:
            self.direct[var] = self.direct[args[0]]
        elif name == "relax.where":
            normalised = self.normalised(value)
            if normalised is not None:
                self.direct[var] = normalised
        elif name == "relax.take":
            self.take(value)
        elif name in _INDEX_OPERANDS:
            for i in _INDEX_OPERANDS[name]:
                if i < len(args):
                    self.computes.update(self.deps(args[i]))

    def take(self, call) -> None:
        data, indices = call.args
        shape = static_shape(data)
        axis = call.attrs.axis
        extent = None
        if shape is not None:
            extent = int(np.prod(shape)) if axis is None else shape[int(axis)]
        if indices in self.direct and extent is not None:
            name, negatives = self.direct[indices]
            self.bounds.setdefault(name, []).append((-min(negatives, extent), extent))
        else:
            self.computes.update(self.deps(indices))

    def normalised(self, call):
        """``where(x < 0, x + extent, x)`` for ``x`` holding an input's values: ``(input, extent)``."""
        cond, shifted = (self.values.get(a, a) for a in call.args[:2])
        x = call.args[2]
        if (
            x not in self.direct
            or _op_name(cond) != "relax.less"
            or _op_name(shifted) != "relax.add"
        ):
            return None
        if (
            not (cond.args[0].same_as(x) and shifted.args[0].same_as(x))
            or _scalar(cond.args[1], self.values) != 0
        ):
            return None
        extent = _scalar(shifted.args[1], self.values)
        return (self.direct[x][0], extent) if extent is not None and extent > 0 else None


def _scalar(expr, values: dict, depth: int = 0) -> int | None:
    """The value of a scalar integer expression when it is known at compile time: a constant, or an
    axis extent as the ONNX importer computes it (``take(shape_to_tensor(shape_of(t)), axis)``), cast."""
    expr = values.get(expr, expr)
    if isinstance(expr, tvm.ir.Constant) and hasattr(expr, "value"):
        array = expr.value.numpy()
        return int(array.item()) if array.size == 1 else None
    name = _op_name(expr)
    if depth > 4 or name is None:
        return None
    if name == "relax.astype":
        return _scalar(expr.args[0], values, depth + 1)
    if name == "relax.take":
        dims = _shape_values(expr.args[0], values)
        index = _scalar(expr.args[1], values, depth + 1)
        return dims[index % len(dims)] if dims and index is not None else None
    return None


def _shape_values(expr, values: dict) -> list[int] | None:
    """The static values of ``shape_to_tensor(s)`` where ``s`` is a static shape."""
    expr = values.get(expr, expr)
    if _op_name(expr) != "relax.shape_to_tensor":
        return None
    dims = getattr(getattr(expr.args[0], "ty", None), "values", None)
    try:
        return [int(d) for d in dims] if dims is not None else None
    except (TypeError, ValueError):
        return None


def integer_inputs(mod: tvm.IRModule) -> dict[str, IntegerInput]:
    """The integer and boolean inputs of ``mod["main"]``, by name, with the values each may take."""
    func = mod["main"]
    walk = _Walk(func)
    found = {}
    for p in func.params:
        dtype = str(getattr(p.ty, "dtype", ""))
        if not _is_integer(dtype):
            continue
        bounds = walk.bounds.get(p.name)
        low = max(b[0] for b in bounds) if bounds else None
        high = min(b[1] for b in bounds) if bounds else None
        found[p.name] = IntegerInput(p.name, dtype, low, high, p.name in walk.computes)
    return found
