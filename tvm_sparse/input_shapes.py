"""Specialising a model's symbolic input dimensions to given sizes.

``input_shapes={"x": (1, 128, 768)}`` gives the full shape of each listed
input. Its symbolic dimensions (ONNX ``dim_param`` names, or unnamed ones)
take those sizes everywhere they appear in ``main``, so a dimension shared by
two inputs (``batch``) is fixed for both; static dimensions must be given as
they are. Inputs not listed keep their symbolic dimensions.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral

import tvm
from tvm import relax

from .errors import ModelError


def _dim_text(dim) -> str:
    if isinstance(dim, tvm.tirx.IntImm):
        return str(int(dim))
    return str(dim) if not isinstance(dim, tvm.tirx.Var) or dim.name else "?"


def symbolic_bindings(mod: tvm.IRModule, input_shapes: Mapping, what: str = "input_shapes") -> dict:
    """The size of each symbolic variable that ``input_shapes`` fixes, ``{tirx.Var: int}``.

    Raises ``ModelError`` for an unknown input name, a shape that is not a
    sequence of positive ints, a rank or static dimension that differs from
    the model's, a dimension that is an expression rather than a variable,
    and a variable given two different sizes; ``what`` starts each message.
    """
    params = {p.name: p for p in mod["main"].params}
    bound: dict = {}
    where: dict = {}
    for name, shape in input_shapes.items():
        if name not in params:
            raise ModelError(
                f"{what}: no input named {name!r} (the model's inputs: {', '.join(params)})"
            )
        try:
            sizes = tuple(shape)
        except TypeError:
            raise ModelError(
                f"{what}: the shape of {name} must be a sequence of ints, got {shape!r}"
            ) from None
        if not all(isinstance(s, Integral) and not isinstance(s, bool) and s > 0 for s in sizes):
            raise ModelError(f"{what}: the dimensions of {name} must be positive ints, got {sizes}")
        sizes = tuple(int(s) for s in sizes)
        dims = list(params[name].ty.shape)
        if len(dims) != len(sizes):
            raise ModelError(
                f"{what}: {name} has {len(dims)} dimensions ({', '.join(map(_dim_text, dims))}), got {len(sizes)}"
            )
        for axis, (dim, size) in enumerate(zip(dims, sizes)):
            if isinstance(dim, tvm.tirx.IntImm):
                if int(dim) != size:
                    raise ModelError(
                        f"{what}: dimension {axis} of {name} is static ({int(dim)}), got {size}"
                    )
            elif not isinstance(dim, tvm.tirx.Var):
                raise ModelError(
                    f"{what}: dimension {axis} of {name} is the expression {dim}, which cannot be set"
                )
            elif bound.setdefault(dim, size) != size:
                raise ModelError(
                    f"{what}: dimension {_dim_text(dim)} is {bound[dim]} in {where[dim]} but {size} in {name}"
                )
            else:
                where.setdefault(dim, name)
    return bound


def specialize(mod: tvm.IRModule, input_shapes: Mapping | None) -> tvm.IRModule:
    """``mod`` with the symbolic dimensions that ``input_shapes`` fixes replaced by their sizes
    (``mod`` itself when ``input_shapes`` is empty). Errors: see :func:`symbolic_bindings`."""
    if not input_shapes:
        return mod
    bindings = symbolic_bindings(mod, input_shapes)
    return relax.transform.BindSymbolicVars(bindings, "main")(mod) if bindings else mod
