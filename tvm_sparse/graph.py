"""Finding the weight-carrying layers of a Relax module.

Analysis and the rewrite passes look at the same layers: a ``relax.matmul``
whose right operand is a constant 2-D weight, either as it is (ONNX
``MatMul``) or behind ``permute_dims`` (ONNX ``Gemm`` with ``transB``, before
``FoldConstant``), optionally followed by an ``add`` of a constant bias (the
bias is fused into the sparse kernel when the matmul has no other user).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

WEIGHT_NAMES_ATTR = "tvm_sparse.weight_names"

_MATMUL = tvm.ir.Op.get("relax.matmul")
_PERMUTE = tvm.ir.Op.get("relax.permute_dims")
_ADD = tvm.ir.Op.get("relax.add")


def weight_key(weight: np.ndarray) -> str:
    """A content hash identifying a weight independently of its orientation."""
    canon = np.ascontiguousarray(weight)
    digest = hashlib.sha1(canon.tobytes())
    digest.update(str((canon.shape, canon.dtype.str)).encode())
    return digest.hexdigest()[:20]


@dataclass
class LinearLayer:
    """``out = x @ weight.T (+ bias)`` found in a Relax function."""

    name: str
    matmul_var: relax.Var  # the binding of the matmul
    output_var: relax.Var  # the binding that carries the layer's result (the add when fused)
    x: relax.Expr  # the activation operand
    x_shape: tuple[int, ...] | None  # None when not fully static
    weight: np.ndarray  # (out_features, in_features)
    bias: np.ndarray | None  # (out_features,), only when fusable

    @property
    def rows(self) -> int | None:
        """Rows of the flattened activation (batch dims multiplied), if static."""
        return int(np.prod(self.x_shape[:-1])) if self.x_shape else None


def static_shape(expr) -> tuple[int, ...] | None:
    shape = getattr(getattr(expr, "ty", None), "shape", None)
    if shape is None:
        return None
    try:
        return tuple(int(s) for s in shape)
    except (TypeError, ValueError):  # symbolic dimension
        return None


def _const_array(expr) -> np.ndarray | None:
    if isinstance(expr, tvm.ir.Constant) and hasattr(expr, "value"):
        try:
            return expr.value.numpy()
        except AttributeError:
            return None
    return None


def bindings(func: relax.Function):
    body = func.body
    for block in getattr(body, "blocks", []):
        yield from block.bindings


def _use_counts(func: relax.Function) -> dict:
    counts: dict = {}

    def visit(expr):
        if isinstance(expr, relax.Var):
            counts[expr] = counts.get(expr, 0) + 1

    relax.analysis.post_order_visit(func.body, visit)
    return counts


def find_linear_layers(func: relax.Function, names: dict | None = None) -> list[LinearLayer]:
    """All matmuls with a constant 2-D weight in ``func``, in program order."""
    names = names or {}
    bound = {}
    uses = _use_counts(func)
    layers: list[LinearLayer] = []
    by_matmul: dict = {}
    for binding in bindings(func):
        if not isinstance(binding, relax.VarBinding):
            continue
        var, value = binding.var, binding.value
        bound[var] = value
        if not isinstance(value, tvm.ir.Call):
            continue
        if value.op.same_as(_MATMUL):
            weight = _matmul_weight(value.args[1], bound)
            if weight is None:
                continue
            x = value.args[0]
            key = weight_key(weight)
            name = names.get(key, f"matmul_{len(layers)}")
            layer = LinearLayer(name, var, var, x, static_shape(x), weight, None)
            layers.append(layer)
            by_matmul[var] = layer
        elif value.op.same_as(_ADD):
            lhs, rhs = value.args
            layer = by_matmul.get(lhs)
            bias = _const_array(rhs)
            if layer is None or bias is None or uses.get(lhs, 0) != 1:
                continue
            n = layer.weight.shape[0]
            if bias.size == n and bias.shape[-1:] == (n,) and bias.dtype == layer.weight.dtype:
                layer.bias = bias.reshape(n)
                layer.output_var = var
    return layers


def _matmul_weight(expr, bound) -> np.ndarray | None:
    """The ``(out, in)`` weight behind a matmul's right operand, or None if not constant 2-D."""
    arr = _const_array(expr)
    if arr is not None:
        return np.ascontiguousarray(arr.T) if arr.ndim == 2 else None
    producer = bound.get(expr) if isinstance(expr, relax.Var) else None
    if isinstance(producer, tvm.ir.Call) and producer.op.same_as(_PERMUTE):
        src = _const_array(producer.args[0])
        axes = producer.attrs.axes
        if src is not None and src.ndim == 2 and (axes is None or [int(a) for a in axes] == [1, 0]):
            return src
    return None


def weight_names(mod: tvm.IRModule) -> dict:
    """The ``weight_key -> layer name`` map attached by the ONNX frontend (empty if none)."""
    attrs = mod.attrs
    if attrs is None or WEIGHT_NAMES_ATTR not in attrs:
        return {}
    return {str(k): str(v) for k, v in attrs[WEIGHT_NAMES_ATTR].items()}
