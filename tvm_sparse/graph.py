"""Finding the weight-carrying layers of a Relax module.

Analysis and the rewrite passes look at the same layers:

* a ``relax.matmul`` whose right operand is a constant 2-D weight, either as
  it is (ONNX ``MatMul``) or behind ``permute_dims`` (ONNX ``Gemm`` with
  ``transB``, before ``FoldConstant``);
* a ``relax.nn.conv2d`` in NHWC layout with a constant OHWI weight (the
  layout the host pipeline converts convolutions to).

Each may be followed by an ``add`` of a constant per-output-channel bias and
then a ``relu``; these are fused into the layer (and so into its kernel) when
the value they consume has no other user.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import tvm
import tvm_ffi
from tvm import relax

WEIGHT_NAMES_ATTR = "tvm_sparse.weight_names"
#: ``weight_names`` also maps ``conv#<i>`` to the name of the model's i-th convolution.
CONV_ORDER_PREFIX = "conv#"
#: The size a symbolic dimension stands for where a number is needed, unless it leads an input (then 1).
DIM_HINT = 128

_MATMUL = tvm.ir.Op.get("relax.matmul")
_PERMUTE = tvm.ir.Op.get("relax.permute_dims")
_ADD = tvm.ir.Op.get("relax.add")
_RELU = tvm.ir.Op.get("relax.nn.relu")
_CONV2D = tvm.ir.Op.get("relax.nn.conv2d")


def weight_key(weight: np.ndarray, occurrence: int = 0) -> str:
    """A content hash identifying a layer's weight as the layer multiplies it.

    A weight shared by several layers (tied embeddings) gets one key per use:
    ``occurrence`` counts the earlier layers, in program order, that use the same
    values in the same orientation.
    """
    canon = np.ascontiguousarray(weight)
    digest = hashlib.sha1(canon.tobytes())
    digest.update(str((canon.shape, canon.dtype.str)).encode())
    key = digest.hexdigest()[:20]
    return key if occurrence == 0 else f"{key}#{occurrence}"


@dataclass
class Layer:
    """A weight-carrying operator and the epilogue fused into it."""

    name: str
    op_var: relax.Var  # the binding of the matmul / conv2d
    x: relax.Expr  # the activation operand
    x_shape: (
        tuple | None
    )  # ints, and int64 expressions for symbolic dims; None when the rank is unknown
    weight: np.ndarray
    bias: np.ndarray | None = None  # (out_channels,), when fused
    relu: bool = False  # when fused
    fused_vars: list = field(default_factory=list)  # bindings of the fused epilogue, in order
    hints: dict = field(
        default_factory=dict
    )  # symbolic dimension -> the size it stands for (dim_hints)

    @property
    def output_var(self) -> relax.Var:
        """The binding that carries the layer's result (the last fused one)."""
        return self.fused_vars[-1] if self.fused_vars else self.op_var

    @property
    def absorbed_vars(self) -> list:
        """Bindings a rewrite of the layer replaces, other than ``output_var``."""
        return [self.op_var, *self.fused_vars][:-1]

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @property
    def kernel_ready(self) -> bool:
        """Whether the project's CPU kernels can run the layer: a float32 weight and known input (and
        output) ranks; sizes may be symbolic."""
        return (
            str(self.weight.dtype) == "float32"
            and self.x_shape is not None
            and getattr(self, "out_shape", ()) is not None
        )

    @property
    def static(self) -> bool:
        """Whether every dimension of the layer's input (and output) is known at compile time."""
        shapes = [self.x_shape, getattr(self, "out_shape", ())]
        return all(shape is not None and all(isinstance(d, int) for d in shape) for shape in shapes)

    def matrix(self) -> np.ndarray:
        """The ``(out, in)`` matrix the layer multiplies (a convolution's in order ``(kh, kw, i)``)."""
        return self.weight.reshape(self.out_channels, -1)


@dataclass
class LinearLayer(Layer):
    """``out = x @ weight.T`` with ``weight`` as ``(out_features, in_features)``."""

    @property
    def rows(self):
        """Rows of the flattened activation (batch dims multiplied): an int, or an int64 expression when
        a dimension is symbolic; None when the rank is unknown."""
        if not self.x_shape:
            return None
        rows = 1
        for d in self.x_shape[:-1]:
            rows = rows * d
        return rows

    @property
    def rows_hint(self) -> int | None:
        """:attr:`rows` with symbolic dimensions at their hints (:func:`dim_hints`)."""
        return None if self.rows is None else representative(self.rows, self.hints)


@dataclass
class ConvLayer(Layer):
    """An NHWC ``conv2d`` with ``weight`` as OHWI (``I`` = input channels / groups)."""

    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    out_shape: tuple | None = None  # as ``x_shape``


def shape_of(expr) -> tuple | None:
    """The shape of ``expr``: ints for static dimensions, int64 ``tirx`` expressions for symbolic ones;
    None when the rank is unknown."""
    shape = getattr(getattr(expr, "ty", None), "shape", None)
    if not isinstance(shape, relax.ShapeExpr):
        return None
    return tuple(int(d) if isinstance(d, tvm.tirx.IntImm) else d for d in shape.values)


def dim_hints(func: relax.Function) -> dict:
    """The size each symbolic dimension of ``func``'s inputs stands for where a number is needed
    (tuning records, kernel parameters): 1 for the leading (batch) axis of an input, else
    :data:`DIM_HINT` (a typical sequence length or image side)."""
    hints: dict = {}
    for param in func.params:
        for axis, d in enumerate(shape_of(param) or ()):
            if isinstance(d, tvm.tirx.Var):
                hints[d] = min(hints.get(d, DIM_HINT), 1 if axis == 0 else DIM_HINT)
    return hints


def representative(dim, hints: dict) -> int:
    """``dim`` (an int or an expression of symbolic dimensions) evaluated at the ``hints``
    (:func:`dim_hints`; a variable without one counts as :data:`DIM_HINT`)."""
    if isinstance(dim, int):
        return dim
    analyzer = tvm.sym.Analyzer()
    for var in tvm.tirx.analysis.undefined_vars(dim):
        analyzer.bind(var, tvm.tirx.const(hints.get(var, DIM_HINT), "int64"))
    return int(analyzer.simplify(dim))


def static_shape(expr) -> tuple[int, ...] | None:
    """The shape of ``expr`` if every dimension is static, else None."""
    shape = shape_of(expr)
    return shape if shape is not None and all(isinstance(d, int) for d in shape) else None


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


def use_counts(func: relax.Function) -> dict:
    """How many times each Var of ``func`` is used."""
    counts: dict = {}

    def visit(expr):
        if isinstance(expr, relax.Var):
            counts[expr] = counts.get(expr, 0) + 1

    relax.analysis.post_order_visit(func.body, visit)
    return counts


def find_linear_layers(func: relax.Function, names: dict | None = None) -> list[LinearLayer]:
    """All matmuls with a constant 2-D weight in ``func``, in program order."""
    return [layer for layer in find_layers(func, names) if isinstance(layer, LinearLayer)]


def find_layers(func: relax.Function, names: dict | None = None) -> list[Layer]:
    """All matmuls and NHWC convolutions with constant weights in ``func``, in program order."""
    names = names or {}
    bound = {}
    uses = use_counts(func)
    layers: list[Layer] = []
    convs = 0  # convolutions found so far (names by position when weights changed)
    seen: dict = {}  # weight key -> layers found so far that use it
    hints = dim_hints(func)
    by_output: dict = {}  # the var holding a layer's result so far -> the layer
    for binding in bindings(func):
        if not isinstance(binding, relax.VarBinding):
            continue
        var, value = binding.var, binding.value
        bound[var] = value
        if not isinstance(value, tvm.ir.Call):
            continue
        layer = _layer_of(var, value, bound, names, len(layers), convs, seen)
        if layer is not None:
            layer.hints = hints
            layers.append(layer)
            convs += isinstance(layer, ConvLayer)
            by_output[var] = layer
            continue
        producer = value.args[0] if value.args else None
        layer = by_output.get(producer)
        if layer is None or uses.get(producer, 0) != 1:
            continue
        if value.op.same_as(_ADD) and layer.bias is None and not layer.relu:
            bias = _const_array(value.args[1])
            n = layer.out_channels
            if (
                bias is not None
                and bias.size == n
                and bias.shape[-1:] == (n,)
                and bias.dtype == layer.weight.dtype
            ):
                layer.bias = bias.reshape(n)
                layer.fused_vars.append(var)
                by_output[var] = layer
        elif value.op.same_as(_RELU) and not layer.relu:
            layer.relu = True
            layer.fused_vars.append(var)
            by_output[var] = layer
    return layers


def _name(names: dict, seen: dict, weight: np.ndarray) -> str | None:
    """The model's name for the next layer using ``weight`` (as its ``(out, in)`` / OIHW array)."""
    key = weight_key(weight)
    occurrence = seen.get(key, 0)
    seen[key] = occurrence + 1
    return names.get(weight_key(weight, occurrence)) or names.get(key)


def _layer_of(var, call, bound, names, index, conv_index, seen) -> Layer | None:
    if call.op.same_as(_MATMUL):
        weight = _matmul_weight(call.args[1], bound)
        if weight is None:
            return None
        x = call.args[0]
        return LinearLayer(
            _name(names, seen, weight) or f"matmul_{index}", var, x, shape_of(x), weight
        )
    if call.op.same_as(_CONV2D):
        attrs = call.attrs
        weight = _const_array(call.args[1])
        if weight is None or (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != (
            "NHWC",
            "OHWI",
            "NHWC",
        ):
            return None
        x = call.args[0]
        name = _name(names, seen, weight.transpose(0, 3, 1, 2)) or names.get(
            f"{CONV_ORDER_PREFIX}{conv_index}", f"conv2d_{index}"
        )
        return ConvLayer(
            name,
            var,
            x,
            shape_of(x),
            weight,
            strides=tuple(int(v) for v in attrs.strides),
            padding=tuple(int(v) for v in attrs.padding),
            dilation=tuple(int(v) for v in attrs.dilation),
            groups=int(attrs.groups),
            out_shape=shape_of(var),
        )
    return None


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


@dataclass
class ActivationMatmul:
    """``a @ b`` of two float32 activations with the same batch dimensions (attention's scores and
    context): the product the batched kernel runs."""

    var: relax.Var
    a: relax.Expr
    b: relax.Expr
    a_shape: tuple
    b_shape: tuple
    out_shape: tuple
    transposed_b: (
        relax.Expr | None
    )  # ``b``'s input when ``b`` swaps its last two axes (folded into the kernel)


def find_activation_matmuls(func: relax.Function) -> list[ActivationMatmul]:
    """The matmuls of ``func`` whose operands are both float32 activations of rank >= 2 with equal
    batch dimensions (broadcasting ones are not), in program order."""
    bound, found = {}, []
    for binding in bindings(func):
        bound[binding.var] = value = binding.value
        if not (isinstance(value, tvm.ir.Call) and value.op.same_as(_MATMUL)):
            continue
        a, b = value.args
        if any(
            isinstance(x, tvm.ir.Constant) or str(getattr(x.ty, "dtype", "")) != "float32"
            for x in (a, b)
        ):
            continue
        a_shape, b_shape, out_shape = shape_of(a), shape_of(b), shape_of(binding.var)
        if None in (a_shape, b_shape, out_shape) or len(a_shape) < 2 or len(b_shape) < 2:
            continue
        if _matmul_weight(b, bound) is not None or not tvm_ffi.structural_equal(
            list(a_shape[:-2]), list(b_shape[:-2])
        ):
            continue
        found.append(
            ActivationMatmul(
                binding.var, a, b, a_shape, b_shape, out_shape, _last_axes_swapped(b, bound)
            )
        )
    return found


def _last_axes_swapped(expr, bound):
    """If ``expr`` is ``permute_dims`` swapping only the last two axes, its input."""
    producer = bound.get(expr) if isinstance(expr, relax.Var) else None
    if not (isinstance(producer, tvm.ir.Call) and producer.op.same_as(_PERMUTE)):
        return None
    shape = shape_of(producer.args[0])
    axes = producer.attrs.axes
    if shape is None or axes is None or len(shape) < 2:
        return None
    expected = list(range(len(shape) - 2)) + [len(shape) - 1, len(shape) - 2]
    return producer.args[0] if [int(a) for a in axes] == expected else None


def weight_names(mod: tvm.IRModule) -> dict:
    """The ``weight_key -> layer name`` map attached by the ONNX frontend (empty if none)."""
    attrs = mod.attrs
    if attrs is None or WEIGHT_NAMES_ATTR not in attrs:
        return {}
    return {str(k): str(v) for k, v in attrs[WEIGHT_NAMES_ATTR].items()}
