"""The weights of an ONNX graph, whatever their storage: find them, read them, write them back.

A *layer* is a node that multiplies an activation by a constant weight:

* ``Gemm`` and ``MatMul`` with a 2-D weight as input 1, and ``MatMul`` with a
  2-D weight as input 0 and an activation as input 1 (``W @ x``);
* ``Conv`` (1-, 2- or 3-D) and ``ConvTranspose`` with their weight as input 1;
* ``Einsum`` of two operands whose equation is a matmul by the constant one,
  ``x[..., c] * w[c, o] -> y[..., o]`` (``w``'s subscripts in either order).

Its weight operand is traced back through ``Identity``, ``Transpose``, ``Cast``
and ``DequantizeLinear`` (per-tensor or per-axis scale and zero point) to where
it is stored: an initializer, a sparse initializer (COO, with ``[NNZ]`` linear
or ``[NNZ, rank]`` indices), or a ``Constant`` node (``value`` or
``sparse_value``). Layers that share a stored weight are its users.

Reading gives the weight the node computes with. Writing goes back through the
same steps into the same storage, which keeps its kind and element type:
float16 stays float16, an integer weight is re-quantized with its own scale and
zero point (so a zero is stored as the zero point and stays an exact zero), a
sparse tensor stores its new nonzeros.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import ModelError

#: The op types that can carry a weight.
LAYER_OPS = ("Gemm", "MatMul", "Conv", "ConvTranspose", "Einsum")
#: The Constant attributes :func:`densify` turns into a ``value`` tensor.
_NON_TENSOR_VALUES = ("sparse_value", "value_float", "value_floats", "value_int", "value_ints")
#: Element types a layer may compute with.
_FLOAT_TYPES = ("float16", "bfloat16", "float32", "float64")


def _convert(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` as ``dtype``; integers are rounded to nearest and saturated."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return np.asarray(values).astype(dtype)


# Steps between the storage and the layer: forward(stored) -> what the next node sees,
# inverse(new, stored) -> what to store for ``new`` (``stored`` gives the dtype and quantization).


@dataclass(frozen=True)
class _Transpose:
    label = "Transpose"
    perm: tuple[int, ...] | None  # None: reverse the axes

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.transpose(x, self.perm)

    def inverse(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return np.transpose(y, None if self.perm is None else np.argsort(self.perm))


@dataclass(frozen=True)
class _Cast:
    label = "Cast"
    dtype: np.dtype

    def forward(self, x: np.ndarray) -> np.ndarray:
        return _convert(x, self.dtype)

    def inverse(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return _convert(y, x.dtype)


@dataclass(frozen=True, eq=False)
class _Dequantize:
    """ONNX DequantizeLinear: ``(q - zero_point) * scale``, computed in float32, of the scale's type."""

    label = "DequantizeLinear"
    node_name: str
    scale: np.ndarray
    zero_point: np.ndarray | None
    axis: int

    def _params(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scale = self.scale
        zero_point = np.zeros(scale.shape, q.dtype) if self.zero_point is None else self.zero_point
        if scale.size == 1 and zero_point.size == 1:
            return scale.reshape(()).astype(np.float32), zero_point.reshape(()).astype(np.int64)
        axis = self.axis + q.ndim if self.axis < 0 else self.axis
        if (
            not 0 <= axis < q.ndim
            or scale.shape != (q.shape[axis],)
            or zero_point.shape != scale.shape
        ):
            raise ModelError(
                f"DequantizeLinear '{self.node_name}': a scale of shape {list(scale.shape)} and zero point of "
                f"shape {list(zero_point.shape)} do not fit axis {self.axis} of a weight of shape {list(q.shape)}"
            )
        shape = [1] * q.ndim
        shape[axis] = -1
        return scale.astype(np.float32).reshape(shape), zero_point.astype(np.int64).reshape(shape)

    def forward(self, q: np.ndarray) -> np.ndarray:
        scale, zero_point = self._params(q)
        return ((q.astype(np.int64) - zero_point).astype(np.float32) * scale).astype(
            self.scale.dtype
        )

    def inverse(self, y: np.ndarray, q: np.ndarray) -> np.ndarray:
        scale, zero_point = self._params(q)
        with np.errstate(divide="ignore", invalid="ignore"):
            steps = np.where(scale != 0, np.rint(y.astype(np.float32) / scale), 0)
        return _convert(steps + zero_point, q.dtype)


# Storage: where a weight's tensor lives.


class _TensorStorage:
    """A dense TensorProto: an initializer or a Constant node's ``value``."""

    def __init__(self, tensor: onnx.TensorProto, name: str, kind: str):
        self.tensor, self.name, self.kind = tensor, name, kind

    def read(self) -> np.ndarray:
        return numpy_helper.to_array(self.tensor)

    def write(self, array: np.ndarray) -> None:
        doc = self.tensor.doc_string
        self.tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), self.tensor.name))
        self.tensor.doc_string = doc

    @property
    def doc_string(self) -> str:
        return self.tensor.doc_string

    @doc_string.setter
    def doc_string(self, text: str) -> None:
        self.tensor.doc_string = text


class _SparseStorage:
    """A COO SparseTensorProto: a sparse initializer or a Constant node's ``sparse_value``."""

    def __init__(self, sparse: onnx.SparseTensorProto, name: str, kind: str):
        self.sparse, self.name, self.kind = sparse, name, kind

    def read(self) -> np.ndarray:
        return sparse_to_array(self.sparse, self.name)

    def write(self, array: np.ndarray) -> None:
        linear = np.flatnonzero(array)
        if len(self.sparse.indices.dims) == 2:
            indices = (
                np.stack(np.unravel_index(linear, array.shape), axis=1)
                if linear.size
                else np.zeros((0, array.ndim), np.int64)
            )
        else:
            indices = linear
        values = numpy_helper.from_array(array.reshape(-1)[linear], self.sparse.values.name)
        values.doc_string = self.sparse.values.doc_string
        self.sparse.CopyFrom(
            helper.make_sparse_tensor(
                values,
                numpy_helper.from_array(indices.astype(np.int64), self.sparse.indices.name),
                list(array.shape),
            )
        )

    @property
    def doc_string(self) -> str:
        return self.sparse.values.doc_string

    @doc_string.setter
    def doc_string(self, text: str) -> None:
        self.sparse.values.doc_string = text


def sparse_to_array(sparse: onnx.SparseTensorProto, name: str = "") -> np.ndarray:
    """The dense array of a COO SparseTensorProto (onnx has no helper for it).

    ``indices`` are ``[NNZ]`` positions in the flattened tensor or ``[NNZ, rank]`` coordinates.
    Raises :class:`ModelError` when they do not fit the values or the shape.
    """
    label = name or sparse.values.name
    values = numpy_helper.to_array(sparse.values)
    indices = (
        numpy_helper.to_array(sparse.indices).astype(np.int64)
        if sparse.HasField("indices")
        else np.zeros(0, np.int64)
    )
    shape = tuple(int(d) for d in sparse.dims)
    if values.ndim != 1 or min(shape, default=0) < 0:
        raise ModelError(
            f"sparse tensor '{label}': {list(values.shape)} values for shape {list(shape)} (values must be 1-D, dims non-negative)"
        )
    dense = np.zeros(shape, values.dtype)
    if indices.shape == (values.size,):
        if indices.size and (indices.min() < 0 or indices.max() >= dense.size):
            raise ModelError(
                f"sparse tensor '{label}': an index is outside its {dense.size} elements"
            )
        dense.reshape(-1)[indices] = values
    elif indices.shape == (values.size, len(shape)):
        if indices.size and ((indices < 0).any() or (indices >= np.array(shape)).any()):
            raise ModelError(
                f"sparse tensor '{label}': an index is outside its shape {list(shape)}"
            )
        dense[tuple(indices.T)] = values
    else:
        raise ModelError(
            f"sparse tensor '{label}': indices of shape {list(indices.shape)} do not index "
            f"{values.size} values of a {len(shape)}-D tensor"
        )
    return dense


def _attribute(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _constant_node_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The array a Constant node produces (any of its value attributes); None for strings."""
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name == "sparse_value":
            return sparse_to_array(a.sparse_tensor, node.output[0])
        if a.name in ("value_float", "value_floats"):
            return np.array(helper.get_attribute_value(a), np.float32)
        if a.name in ("value_int", "value_ints"):
            return np.array(helper.get_attribute_value(a), np.int64)
    return None


# The model's layers and weights.


@dataclass(eq=False)
class Weight:
    """One stored weight and the layers that use it, in graph order."""

    storage: _TensorStorage | _SparseStorage
    layers: list[OnnxLayer] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.storage.name


@dataclass(eq=False)
class OnnxLayer:
    """A weight-carrying node and how its weight operand is computed from the weight's storage."""

    node: onnx.NodeProto
    index: int  # position in graph.node
    weight: Weight
    steps: tuple  # from the storage to the node's operand, in order
    out_first: bool = False  # matmuls: the operand is (out, in) (Gemm transB=1, some Einsums)

    @property
    def name(self) -> str:
        """The node's name, else ``<op type>_<index>``."""
        return self.node.name or f"{self.node.op_type.lower()}_{self.index}"

    @property
    def op_type(self) -> str:
        return self.node.op_type

    @property
    def is_conv(self) -> bool:
        return self.node.op_type in ("Conv", "ConvTranspose")

    def operand(self) -> np.ndarray:
        """The weight operand as the node receives it: its shape and element type (float16, float32, ...)."""
        value = self.weight.storage.read()
        for step in self.steps:
            value = step.forward(value)
        return value

    def values(self) -> np.ndarray:
        """The weight operand as float32, in the node's layout."""
        return self.operand().astype(np.float32)

    def matrix(self) -> np.ndarray:
        """The float32 ``(out, in)`` matrix the layer multiplies: a matmul's ``(out_features, in_features)``;
        a Conv's ``(O, k... * I)`` and a ConvTranspose's ``(O / groups, k... * I)``, reduction ordered
        (kernel taps, input channels) with input channels innermost."""
        w = self.values()
        if self.node.op_type == "Conv":
            return np.ascontiguousarray(np.moveaxis(w, 1, -1)).reshape(w.shape[0], -1)
        if self.node.op_type == "ConvTranspose":
            return np.ascontiguousarray(np.moveaxis(w, 0, -1)).reshape(w.shape[1], -1)
        return w if self.out_first else np.ascontiguousarray(w.T)

    def layer_weight(self) -> np.ndarray:
        """The float32 weight as the compiled layer multiplies it (the frontend computes in float32):
        ``(out, in)`` for a matmul, the stored layout for a convolution (OI[D]HW; ConvTranspose: IO[D]HW)."""
        w = self.values()
        return w if self.is_conv or self.out_first else np.ascontiguousarray(w.T)

    def write(self, values: np.ndarray) -> None:
        """Store ``values`` (the operand's shape, any float type) as this layer's weight, in the weight's own
        storage and element type. Other layers sharing the weight see the new values too.

        Raises :class:`ModelError` when the shape differs from the operand's.
        """
        stages = [self.weight.storage.read()]
        for step in self.steps:
            stages.append(step.forward(stages[-1]))
        if np.shape(values) != stages[-1].shape:
            raise ModelError(
                f"layer {self.name}: new weight of shape {list(np.shape(values))}, expected {list(stages[-1].shape)}"
            )
        value = _convert(np.asarray(values), stages[-1].dtype)
        for step, stored in zip(reversed(self.steps), reversed(stages[:-1])):
            value = step.inverse(value, stored)
        self.weight.storage.write(value)

    def write_matrix(self, matrix: np.ndarray) -> None:
        """:meth:`write` with the ``(out, in)`` matrix of :meth:`matrix`."""
        shape = self.operand().shape
        if self.node.op_type == "Conv":
            values = np.moveaxis(matrix.reshape(shape[0], *shape[2:], shape[1]), -1, 1)
        elif self.node.op_type == "ConvTranspose":
            values = np.moveaxis(matrix.reshape(shape[1], *shape[2:], shape[0]), -1, 0)
        else:
            values = matrix if self.out_first else matrix.T
        self.write(values)

    def storage_label(self) -> str:
        """How the weight is stored, e.g. ``int8 initializer 'w' behind DequantizeLinear``."""
        storage = self.weight.storage
        behind = (
            f" behind {', '.join(step.label for step in reversed(self.steps))}"
            if self.steps
            else ""
        )
        return f"{storage.read().dtype} {storage.kind} '{storage.name}'{behind}"


@dataclass(frozen=True)
class SkippedLayer:
    """A weight-carrying node whose weight cannot be read or written, and why."""

    name: str
    op_type: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name} ({self.op_type}): {self.reason}"


@dataclass
class ModelWeights:
    """The layers of a graph (in graph order), their weights (in order of first use), and the skipped ones."""

    layers: list[OnnxLayer]
    weights: list[Weight]
    skipped: list[SkippedLayer]


class _Graph:
    """Name lookups over one graph, and the tracing of a layer's weight operand."""

    def __init__(self, graph: onnx.GraphProto):
        self.initializers = {t.name: t for t in graph.initializer}
        self.sparse = {s.values.name: s for s in graph.sparse_initializer}
        self.producers = {out: node for node in graph.node for out in node.output if out}
        self.inputs = (
            {vi.name for vi in graph.input} - self.initializers.keys() - self.sparse.keys()
        )
        self.runtime = set(self.inputs)  # values that depend on a graph input
        for node in graph.node:
            if any(name in self.runtime for name in node.input):
                self.runtime.update(node.output)
        self.storages: dict[str, Weight] = {}

    def constant(self, name: str) -> np.ndarray | None:
        """The value of a constant (initializer, Constant node, through Identity), or None."""
        seen = set()
        while (
            name in self.producers
            and self.producers[name].op_type == "Identity"
            and name not in seen
        ):
            seen.add(name)
            name = self.producers[name].input[0]
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        if name in self.sparse:
            return sparse_to_array(self.sparse[name], name)
        node = self.producers.get(name)
        return (
            _constant_node_value(node) if node is not None and node.op_type == "Constant" else None
        )

    def _weight(self, name: str, make) -> Weight:
        if name not in self.storages:
            self.storages[name] = Weight(make())
        return self.storages[name]

    def trace(self, name: str) -> tuple[Weight, tuple] | str | None:
        """The stored weight and steps behind value ``name``; a reason when it is a weight that cannot be
        read (a graph input, computed at run time); None when it is an activation."""
        steps, seen = [], set()
        while name not in seen:
            seen.add(name)
            if name in self.initializers:
                return self._weight(
                    name, lambda: _TensorStorage(self.initializers[name], name, "initializer")
                ), tuple(reversed(steps))
            if name in self.sparse:
                return self._weight(
                    name, lambda: _SparseStorage(self.sparse[name], name, "sparse initializer")
                ), tuple(reversed(steps))
            if name in self.inputs:
                return f"its weight '{name}' is a graph input, not a constant"
            node = self.producers.get(name)
            if node is None:
                return f"its weight '{name}' is not defined in the graph"
            label = node.name or name
            if node.op_type == "Constant":
                for a in node.attribute:
                    if a.name == "value":
                        return self._weight(
                            name, lambda: _TensorStorage(a.t, name, "Constant")
                        ), tuple(reversed(steps))
                    if a.name == "sparse_value":
                        return self._weight(
                            name, lambda: _SparseStorage(a.sparse_tensor, name, "Constant")
                        ), tuple(reversed(steps))
                return f"its weight is Constant '{label}', which holds no tensor"
            if name in self.runtime:
                return None
            if node.op_type == "Identity":
                pass
            elif node.op_type == "Transpose":
                perm = _attribute(node, "perm")
                steps.append(_Transpose(None if perm is None else tuple(perm)))
            elif node.op_type == "Cast":
                to = _attribute(node, "to")
                if to is None:
                    raise ModelError(f"Cast '{label}' has no 'to' attribute")
                steps.append(_Cast(helper.tensor_dtype_to_np_dtype(to)))
            elif node.op_type == "DequantizeLinear":
                step = self._dequantize(node, label)
                if isinstance(step, str):
                    return step
                steps.append(step)
            else:
                return f"its weight is computed at run time by {node.op_type} '{label}'"
            name = node.input[0]
        return f"its weight '{name}' depends on itself (the graph has a cycle)"

    def _dequantize(self, node: onnx.NodeProto, label: str) -> _Dequantize | str:
        if _attribute(node, "block_size", 0):
            return f"its weight uses blocked quantization (DequantizeLinear '{label}')"
        scale = self.constant(node.input[1])
        has_zero_point = len(node.input) > 2 and node.input[2]
        zero_point = self.constant(node.input[2]) if has_zero_point else None
        if scale is None or (has_zero_point and zero_point is None):
            return f"the scale or zero point of DequantizeLinear '{label}' is computed at run time"
        return _Dequantize(label, scale, zero_point, int(_attribute(node, "axis", 1)))


def _einsum_out_first(equation: str, weight_operand: int) -> bool | None:
    """For an Einsum of two operands with ``weight_operand`` the weight: whether the weight's subscripts are
    ``(out, in)`` (else ``(in, out)``); None when the equation is not ``x[..., c] * w -> y[..., o]``."""
    lhs, arrow, out = equation.replace(" ", "").partition("->")
    operands = lhs.split(",")
    if len(operands) != 2:
        return None
    if not arrow:  # implicit output: the subscripts used once, sorted, after any ellipsis
        letters = lhs.replace("...", "").replace(",", "")
        out = ("..." if "..." in lhs else "") + "".join(
            sorted(s for s in set(letters) if letters.count(s) == 1)
        )
    w, x = operands[weight_operand], operands[1 - weight_operand]
    if len(w) != 2 or len(set(w)) != 2 or "." in w or not x or x[-1] not in w:
        return None
    c = x[-1]
    o = w.replace(c, "")
    if x.count(c) != 1 or o in x or out != x[:-1] + o:
        return None
    return w == o + c


def _weight_operand(node: onnx.NodeProto, graph: _Graph) -> tuple[int, bool] | str | None:
    """``(input index, out_first)`` of a layer op's weight operand; a reason for an Einsum that multiplies a
    constant some other way; None when the node has no constant operand."""
    if node.op_type != "Einsum":
        if len(node.input) < 2 or not node.input[1]:
            return None
        if (
            node.op_type == "MatMul"
            and node.input[1] in graph.runtime
            and node.input[0] not in graph.runtime
        ):
            return 0, True  # W @ x: the constant on the left is (out, in)
        return 1, node.op_type == "Gemm" and _attribute(node, "transB", 0) == 1
    if len(node.input) != 2:
        return None
    equation = _attribute(node, "equation", b"")
    equation = equation.decode() if isinstance(equation, bytes) else equation
    for operand in (1, 0):
        if node.input[operand] in graph.runtime:
            continue
        out_first = _einsum_out_first(equation, operand)
        if out_first is None:
            return f"Einsum '{equation}' is not a matmul by its constant operand"
        return operand, out_first
    return None


def _check_operand(layer: OnnxLayer) -> str | None:
    """Why the traced weight cannot serve the layer, or None."""
    operand = layer.weight.storage.read()
    for step in layer.steps:
        if isinstance(step, _Dequantize) and not np.issubdtype(operand.dtype, np.integer):
            return f"its weight '{layer.weight.name}' is {operand.dtype.name} behind DequantizeLinear '{step.node_name}' (integer types only)"
        operand = step.forward(operand)
    where = f"its weight '{layer.weight.name}'"
    if operand.dtype.name not in _FLOAT_TYPES:
        return f"{where} is {operand.dtype.name}, not a floating-point type"
    if layer.is_conv and operand.ndim < 3:
        return f"{where} is {operand.ndim}-D; a convolution's has 3 or more dimensions"
    if not layer.is_conv and operand.ndim != 2:
        return f"{where} is {operand.ndim}-D, not a matrix"
    return None


def _layer(node: onnx.NodeProto, index: int, graph: _Graph) -> OnnxLayer | str | None:
    """The layer of a layer op, a reason it has no usable weight, or None when all its operands are activations."""
    found = _weight_operand(node, graph)
    if not isinstance(found, tuple):
        return found
    operand, out_first = found
    found = graph.trace(node.input[operand])
    if not isinstance(found, tuple):
        return found
    layer = OnnxLayer(node, index, found[0], found[1], out_first)
    return _check_operand(layer) or layer


def find_weights(model: onnx.ModelProto) -> ModelWeights:
    """The layers of ``model``'s main graph and their stored weights (see the module docstring).

    Layers whose weight cannot be read or written (a graph input, computed at run time, not a floating-point
    type, not a matrix) are listed in ``skipped`` with the reason; nodes whose operands are all activations
    (attention matmuls) are not layers. Raises :class:`ModelError` for a malformed weight (unreadable
    tensor, bad sparse indices, a quantization scale that does not fit its weight).
    """
    graph = _Graph(model.graph)
    layers, skipped = [], []
    for index, node in enumerate(model.graph.node):
        if node.op_type not in LAYER_OPS:
            continue
        name = node.name or f"{node.op_type.lower()}_{index}"
        try:
            found = _layer(node, index, graph)
        except ModelError:
            raise
        except (
            ValueError,
            TypeError,
            IndexError,
            KeyError,
        ) as err:  # numpy and onnx on malformed tensors and attributes
            raise ModelError(f"layer {name}: cannot read its weight ({err})") from None
        if isinstance(found, OnnxLayer):
            found.weight.layers.append(found)
            layers.append(found)
        elif found is not None:
            skipped.append(SkippedLayer(name, node.op_type, found))
    return ModelWeights(layers, list(dict.fromkeys(layer.weight for layer in layers)), skipped)


def densify(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its sparse initializers as initializers and every Constant node holding a ``value``
    tensor (``sparse_value`` and ``value_float(s)``/``value_int(s)`` converted), the forms importers that
    read only those (TVM's) accept; the model itself when there is nothing to convert.

    Raises :class:`ModelError` for sparse tensors whose indices do not fit them.
    """
    graph = model.graph
    constants = [
        i
        for i, n in enumerate(graph.node)
        if n.op_type == "Constant" and any(a.name in _NON_TENSOR_VALUES for a in n.attribute)
    ]
    if not graph.sparse_initializer and not constants:
        return model
    dense = onnx.ModelProto()
    dense.CopyFrom(model)
    graph = dense.graph
    graph.initializer.extend(
        numpy_helper.from_array(sparse_to_array(s), s.values.name) for s in graph.sparse_initializer
    )
    del graph.sparse_initializer[:]
    for i in constants:
        node = graph.node[i]
        value = numpy_helper.from_array(_constant_node_value(node), node.output[0])
        del node.attribute[:]
        node.attribute.append(helper.make_attribute("value", value))
    return dense


def read_onnx(model) -> onnx.ModelProto:
    """Read an ONNX model from a path, bytes or a ModelProto, with a clear error."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, bytes):
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(model)
        except Exception as err:  # protobuf raises DecodeError and friends
            raise ModelError(f"not a valid ONNX model: {err}") from None
        return proto
    path = os.fspath(model)
    if os.path.isdir(path):
        raise ModelError(f"{path}: is a directory, not an ONNX model file")
    if not os.path.isfile(path):
        raise ModelError(f"{path}: no such model file")
    try:
        proto = onnx.load(path)
    except Exception as err:
        raise ModelError(f"{path}: not a valid ONNX model ({type(err).__name__}: {err})") from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelError(f"{path}: not a valid ONNX model (empty graph)")
    return proto


def weight_matrices(model) -> dict[str, np.ndarray]:
    """The float32 ``(out, in)`` matrix of every weight of an ONNX model, by the name of its first layer
    (see :meth:`~tvm_sparse.onnx_weights.OnnxLayer.matrix`)."""
    return {w.layers[0].name: w.layers[0].matrix() for w in find_weights(read_onnx(model)).weights}


#: Key of the JSON an initializer's ``doc_string`` carries when its values are locally quantized.
LOCAL_QUANTIZATION = "tvm_sparse.local_quantization"


def local_quantization(model) -> dict[str, tuple[int, tuple[int, int]]]:
    """``(bits, block shape)`` of each weight that ``prune_onnx(local_bits=...)`` quantized, by layer name."""
    found = {}
    for weight in find_weights(read_onnx(model)).weights:
        doc = weight.storage.doc_string
        try:
            info = json.loads(doc)[LOCAL_QUANTIZATION] if doc else None
            if info is not None:
                found[weight.layers[0].name] = (
                    int(info["bits"]),
                    (int(info["block"][0]), int(info["block"][1])),
                )
        except (ValueError, KeyError, TypeError, IndexError):
            continue  # another tool's doc string
    return found
