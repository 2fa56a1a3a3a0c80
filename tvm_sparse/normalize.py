"""Exported ONNX graphs brought into the form TVM's importer and the project's passes take.

Exporters write graphs that compute the same thing in many shapes. Before the
model reaches TVM's importer:

1. the input dimensions the user fixes (``input_shapes``) are written into
   the graph, so that everything that depends on them folds;
2. a float16/bfloat16 model computes in float32 (its weights are widened, its
   casts to half precision become casts to float32, its half-precision inputs
   and outputs keep their type through a cast at the boundary);
3. shape computations that are constant once the input shapes are known
   (``Shape -> Gather -> Cast -> Slice -> Concat -> Reshape`` chains, with a
   symbolic batch too) and constant subgraphs are folded by onnxslim
   (constant folding, symbolic shape inference, dead-node elimination; its
   pattern fusions are off, they emit ops TVM does not import);
4. ``Einsum`` nodes that are matrix products become ``Transpose``/``Reshape``
   + ``MatMul`` (TVM's einsum lowers to a naive loop nest);
5. a ``ConvTranspose`` sized by its ``output_shape`` attribute gets the
   explicit ``pads`` the ONNX specification derives from it (TVM's importer
   ignores the attribute); a convolution or pooling with ``auto_pad`` SAME
   gets its explicit pads where they are known (stride 1, or a static input
   size): TVM's importer would put an uneven SAME padding in a ``Pad`` of its
   own, which stays channels-first between layout transposes.

The model's inputs stay what they were (names, order, types), so a compiled
library is called the same way as the ONNX model.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .errors import ModelError

_HALF = (TensorProto.FLOAT16, TensorProto.BFLOAT16)
#: onnxslim's fusions left out: the project's passes fold BatchNorm, bias and scale into the
#: convolutions and Gemm kernels themselves; its eliminations and the Pad + Conv fusion are kept.
_SKIPPED_FUSIONS = [
    "FusionConcatReshape",
    "FusionConvAdd",
    "FusionConvTransposeAdd",
    "FusionConvBN",
    "FusionConvTransposeBN",
    "FusionConvMul",
    "FusionConvTransposeMul",
    "FusionGemm",
    "FusionGemmMul",
    "FusionGemmAdd",
    "FusionReduce",
]
_LOG = logging.getLogger("tvm_sparse")


def normalize(proto: onnx.ModelProto, input_shapes: Mapping | None = None) -> onnx.ModelProto:
    """A copy of ``proto`` normalised as the module docstring says (``proto`` is not modified).

    ``input_shapes`` maps input names to full shapes; sizes are written only
    over symbolic or unknown dimensions of inputs of the same rank (the Relax
    module is checked against ``input_shapes`` after import, which names any
    mismatch). A model that onnxslim cannot process is imported unfolded,
    with a warning.
    """
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    if input_shapes:
        _fix_input_dims(model, input_shapes)
    inputs = [_copy(vi) for vi in model.graph.input]
    _compute_in_float32(model)
    model = _fold(model)
    _restore_inputs(model, inputs)
    _einsum_as_matmul(model)
    _conv_transpose_pads(model)
    _explicit_same_pads(model)
    return model


def _copy(value_info: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    out = onnx.ValueInfoProto()
    out.CopyFrom(value_info)
    return out


def _fix_input_dims(model: onnx.ModelProto, input_shapes: Mapping) -> None:
    """Write the given sizes over symbolic or unknown dimensions; a named dimension (``batch``) takes
    its size in every input that has it."""
    named: dict = {}
    for vi in model.graph.input:
        shape = input_shapes.get(vi.name)
        dims = vi.type.tensor_type.shape.dim
        if shape is not None and len(dims) == len(shape):
            for dim, size in zip(dims, shape):
                if dim.dim_param and isinstance(size, int | np.integer) and size > 0:
                    named.setdefault(dim.dim_param, int(size))
    for vi in model.graph.input:
        shape = input_shapes.get(vi.name)
        dims = vi.type.tensor_type.shape.dim
        sizes = list(shape) if shape is not None and len(dims) == len(shape) else [None] * len(dims)
        for dim, size in zip(dims, sizes):
            if dim.HasField("dim_value"):
                continue
            size = (
                size
                if isinstance(size, int | np.integer) and size > 0
                else named.get(dim.dim_param)
            )
            if size is not None:
                dim.dim_value = int(size)  # clears dim_param


def _compute_in_float32(model: onnx.ModelProto) -> None:
    """Widen half-precision weights, casts and interfaces to float32 in place."""
    graph = model.graph
    tensors = list(graph.initializer) + [
        a.t for n in graph.node for a in n.attribute if a.type == onnx.AttributeProto.TENSOR
    ]
    half = [t for t in tensors if t.data_type in _HALF]
    if not half and not any(_half_cast(n) for n in graph.node) and not _half_interface(graph):
        return
    for tensor in half:
        tensor.CopyFrom(
            numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)
        )
    for node in graph.node:
        for attr in node.attribute:
            if (
                node.op_type
                in (
                    "Cast",
                    "RandomNormal",
                    "RandomUniform",
                    "EyeLike",
                    "RandomNormalLike",
                    "RandomUniformLike",
                )
                and attr.name in ("to", "dtype")
                and attr.i in _HALF
            ):
                attr.i = TensorProto.FLOAT
    boundary = []
    for vi in graph.input:
        if vi.type.tensor_type.elem_type in _HALF:
            inner = f"{vi.name}__float32"
            _rename_uses(graph, vi.name, inner)
            boundary.append(
                helper.make_node(
                    "Cast", [vi.name], [inner], to=TensorProto.FLOAT, name=f"{vi.name}__widen"
                )
            )
    for vi in graph.output:
        elem = vi.type.tensor_type.elem_type
        if elem in _HALF:
            inner = f"{vi.name}__float32"
            _rename_producer(graph, vi.name, inner)
            graph.node.append(
                helper.make_node("Cast", [inner], [vi.name], to=elem, name=f"{vi.name}__narrow")
            )
    for node in reversed(boundary):
        graph.node.insert(0, node)
    for vi in graph.value_info:
        if vi.type.tensor_type.elem_type in _HALF:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT


def _half_cast(node: onnx.NodeProto) -> bool:
    return node.op_type == "Cast" and any(a.name == "to" and a.i in _HALF for a in node.attribute)


def _half_interface(graph: onnx.GraphProto) -> bool:
    return any(vi.type.tensor_type.elem_type in _HALF for vi in [*graph.input, *graph.output])


def _rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _rename_producer(graph: onnx.GraphProto, old: str, new: str) -> None:
    _rename_uses(graph, old, new)
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new


#: onnxslim folds what its shape inference knows before the pass; a shape that only folding reveals
#: (GPT-2's second layer reads the first one's folded sizes) needs another round.
_FOLD_ROUNDS = 4


def _fold(model: onnx.ModelProto) -> onnx.ModelProto:
    """Constant and shape folding by onnxslim; the model unchanged (with a warning) if it fails."""
    import onnxslim

    with _log_level("onnxslim", logging.ERROR):
        for round_ in range(_FOLD_ROUNDS):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    folded = onnxslim.slim(model, skip_fusion_patterns=_SKIPPED_FUSIONS)
            except Exception as err:  # onnxslim raises whatever its passes raise; a later round keeps the last result
                if round_ == 0:
                    warnings.warn(
                        f"the model's shape computations were not folded (onnxslim: {type(err).__name__}: {err})",
                        stacklevel=3,
                    )
                break
            if folded is None:
                break
            shrank = len(folded.graph.node) < len(model.graph.node)
            model = folded  # with the shapes onnxslim inferred, also when nothing folded
            if not shrank:
                break
    return model


@contextlib.contextmanager
def _log_level(name: str, level: int) -> Iterator[None]:
    """Logger ``name`` at ``level`` in the block, back at the caller's level after (``onnxslim.slim``
    sets its own logger to ERROR on every call)."""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _restore_inputs(model: onnx.ModelProto, inputs: list) -> None:
    """Put back the model's inputs (folding drops unused ones), in their order, with the shapes given."""
    by_name: dict = {}
    for vi in inputs:
        by_name.setdefault(vi.name, vi)
    initializers = {t.name for t in model.graph.initializer}
    names = [vi.name for vi in inputs if vi.name not in initializers]
    ordered = [by_name[name] for name in dict.fromkeys(names)]
    del model.graph.input[:]
    model.graph.input.extend(ordered)


def _einsum_as_matmul(model: onnx.ModelProto) -> None:
    """Rewrite each two-operand ``Einsum`` that is a (batched) matrix product into ``MatMul``."""
    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    nodes = []
    for node in graph.node:
        rewritten = _einsum_nodes(node, constants, graph) if node.op_type == "Einsum" else None
        nodes.extend(rewritten or [node])
    del graph.node[:]
    graph.node.extend(nodes)


def _einsum_nodes(node: onnx.NodeProto, constants: dict, graph: onnx.GraphProto) -> list | None:
    """``Transpose``/``Reshape``/``MatMul`` nodes computing ``node``, or None if it is not a matrix product.

    Subscripts are *batch* (in both operands and the output), *left*/*right* (in one operand and the
    output) and *contracted* (in both operands only). With a constant operand ``W`` (either side), the
    product is ``X[left..., contracted] @ W[contracted, right]``: ``X`` is transposed to that order
    (its contracted subscripts merged by a ``Reshape``), ``W`` is rearranged at compile time, and
    the product's right dimensions are split back. Two activations multiply as
    ``A[batch..., l, c] @ B[batch..., c, r]`` (one left, contracted and right subscript). The result
    is transposed to the output's order if it differs.
    """
    equation = next(
        (helper.get_attribute_value(a) for a in node.attribute if a.name == "equation"), b""
    )
    equation = (equation.decode() if isinstance(equation, bytes) else equation).replace(" ", "")
    if len(node.input) != 2 or "->" not in equation or "." in equation:
        return None
    lhs, out = equation.split("->")
    terms = lhs.split(",")
    if len(terms) != 2 or any(len(set(t)) != len(t) for t in (*terms, out)):
        return None
    (x, a), (w, b) = zip(node.input, terms)
    if x in constants and w not in constants:
        (x, a), (w, b) = (w, b), (x, a)
    batch = [s for s in a if s in b and s in out]
    contracted = [s for s in a if s in b and s not in out]
    left = [s for s in a if s not in b]
    right = [s for s in b if s not in a]
    if not contracted or set(left + right + batch) != set(out):
        return None
    name = node.name or node.output[0]
    nodes: list = []

    def transposed(operand: str, subscripts: str, order: list) -> str:
        perm = [subscripts.index(s) for s in order]
        if perm == list(range(len(perm))):
            return operand
        nodes.append(
            helper.make_node(
                "Transpose",
                [operand],
                [f"{name}__{operand}_T"],
                perm=perm,
                name=f"{name}__{operand}_T",
            )
        )
        return f"{name}__{operand}_T"

    def reshaped(operand: str, shape: list, label: str) -> str:
        graph.initializer.append(
            numpy_helper.from_array(np.array(shape, np.int64), f"{name}__{label}_shape")
        )
        nodes.append(
            helper.make_node(
                "Reshape",
                [operand, f"{name}__{label}_shape"],
                [f"{name}__{label}"],
                name=f"{name}__{label}",
            )
        )
        return f"{name}__{label}"

    if w in constants and not batch:
        weight = numpy_helper.to_array(constants[w]).transpose(
            [b.index(s) for s in contracted + right]
        )
        right_shape = list(weight.shape[len(contracted) :])
        const = f"{name}__weight"
        graph.initializer.append(
            numpy_helper.from_array(
                np.ascontiguousarray(weight.reshape(-1, int(np.prod(right_shape)))), const
            )
        )
        operand = transposed(x, a, left + contracted)
        if len(contracted) > 1:
            operand = reshaped(operand, [0] * len(left) + [-1], "merged")
        product, order = f"{name}__product", left + right
        nodes.append(helper.make_node("MatMul", [operand, const], [product], name=name))
        if len(right) > 1:
            product = reshaped(product, [0] * len(left) + right_shape, "split")
    elif len(left) == len(contracted) == len(right) == 1:
        product, order = f"{name}__product", batch + left + right
        nodes.append(
            helper.make_node(
                "MatMul",
                [
                    transposed(x, a, batch + left + contracted),
                    transposed(w, b, batch + contracted + right),
                ],
                [product],
                name=name,
            )
        )
    else:
        return None
    if order == list(out):
        nodes[-1].output[0] = node.output[0]
    else:
        nodes.append(
            helper.make_node(
                "Transpose",
                [product],
                [node.output[0]],
                perm=[order.index(s) for s in out],
                name=f"{name}__out",
            )
        )
    return nodes


def _known_dims(graph: onnx.GraphProto) -> tuple[dict, dict]:
    """``(activation dims, initializer dims)`` by tensor name; an activation's unknown dimension is None."""
    shapes = {
        vi.name: [
            d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim
        ]
        for vi in [*graph.input, *graph.value_info]
    }
    return shapes, {t.name: list(t.dims) for t in graph.initializer}


def _set_pads(node: onnx.NodeProto, total: list[int], upper: bool) -> None:
    """Give ``node`` explicit ``pads`` splitting each axis's ``total`` padding as ``auto_pad`` SAME_UPPER
    (``upper``: the odd one at the end) or SAME_LOWER does, dropping ``auto_pad`` and ``output_shape``."""
    begin = [t // 2 if upper else t - t // 2 for t in total]
    kept = [a for a in node.attribute if a.name not in ("output_shape", "auto_pad", "pads")]
    del node.attribute[:]
    node.attribute.extend(
        [*kept, helper.make_attribute("pads", begin + [t - b for t, b in zip(total, begin)])]
    )


def _conv_transpose_pads(model: onnx.ModelProto) -> None:
    """Replace ``output_shape`` (and ``auto_pad``) of each ``ConvTranspose`` by the ``pads`` the ONNX
    specification derives from it; raises ``ModelError`` when the input's spatial size is not static."""
    shapes, weights = _known_dims(model.graph)
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "ConvTranspose" or "output_shape" not in attrs:
            continue
        name = node.name or node.output[0]
        spatial = (shapes.get(node.input[0]) or [])[2:]
        if not spatial or None in spatial or node.input[1] not in weights:
            raise ModelError(
                f"ConvTranspose {name}: its output_shape needs a static input size (give input_shapes) and a constant weight"
            )
        rank = len(spatial)
        output = list(attrs["output_shape"])[-rank:]
        kernel = list(attrs.get("kernel_shape") or weights[node.input[1]][2:])
        strides, dilations = attrs.get("strides", [1] * rank), attrs.get("dilations", [1] * rank)
        extra = attrs.get("output_padding", [0] * rank)
        total = [
            s * (i - 1) + e + (k - 1) * d + 1 - o
            for s, i, e, k, d, o in zip(strides, spatial, extra, kernel, dilations, output)
        ]
        if min(total) < 0:
            raise ModelError(
                f"ConvTranspose {name}: output_shape {output} is larger than the convolution gives"
            )
        _set_pads(node, total, upper=attrs.get("auto_pad") in (b"SAME_UPPER", "SAME_UPPER"))


def _explicit_same_pads(model: onnx.ModelProto) -> None:
    """Write ``auto_pad`` SAME as explicit ``pads`` on convolutions and poolings where they are known."""
    shapes, weights = _known_dims(model.graph)
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        mode = attrs.get("auto_pad", b"")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        if node.op_type not in ("Conv", "MaxPool", "AveragePool", "LpPool") or mode not in (
            "SAME_UPPER",
            "SAME_LOWER",
        ):
            continue
        kernel = attrs.get("kernel_shape") or (
            weights.get(node.input[1], [])[2:] if len(node.input) > 1 else []
        )
        if not kernel:
            continue
        rank = len(kernel)
        strides, dilations = attrs.get("strides", [1] * rank), attrs.get("dilations", [1] * rank)
        spatial = (shapes.get(node.input[0]) or [None] * (rank + 2))[2:]
        if len(spatial) != rank or any(s > 1 and size is None for s, size in zip(strides, spatial)):
            continue  # the padding depends on a run-time size
        total = [
            (k - 1) * d if s == 1 else max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            for k, s, d, size in zip(kernel, strides, dilations, spatial)
        ]
        _set_pads(node, total, upper=mode == "SAME_UPPER")
