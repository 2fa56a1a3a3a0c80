"""Loading models: ONNX files or protos to Relax, with errors that name the problem."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import onnx
import tvm

from . import progress
from .errors import ModelError
from .graph import CONV_ORDER_PREFIX, WEIGHT_NAMES_ATTR, weight_key
from .input_shapes import specialize
from .normalize import normalize
from .onnx_weights import densify, find_weights, read_onnx


@dataclass
class LoadedModel:
    """A Relax module plus what the user knows the model by."""

    mod: tvm.IRModule
    input_names: list[str]
    input_shapes: dict[str, tuple]
    input_dtypes: dict[str, str]
    output_names: list[str]


#: Ops TVM's importer handles itself rather than through its converter table.
_IMPORTED_DIRECTLY = {"If", "Constant"}


def _check_supported(proto: onnx.ModelProto) -> None:
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    supported = set(_get_convert_map()) | _IMPORTED_DIRECTLY
    bad = [
        f"{n.name or '<unnamed>'} ({n.op_type})"
        for n in proto.graph.node
        if n.op_type not in supported
    ]
    if bad:
        raise ModelError(
            f"unsupported ONNX op(s): {', '.join(bad[:8])}{' ...' if len(bad) > 8 else ''}"
        )


def _weight_names(original: onnx.ModelProto, imported: onnx.ModelProto) -> dict[str, str]:
    """Map each layer's weight key to its node name, and ``conv#<i>`` to the name of the i-th Conv (weights
    folded with a BatchNorm no longer match their key).

    The key is :func:`~tvm_sparse.graph.weight_key` of the weight as the Relax layer multiplies it
    (:meth:`~tvm_sparse.onnx_weights.OnnxLayer.layer_weight`), with the count of earlier layers whose
    weight has the same key as its occurrence, so each user of a shared weight keeps its own name.
    Names and weights come from the ``original`` graph (as ``prune`` names them), the order from the
    ``imported`` one (normalisation may reorder nodes; the importer emits them in its order).
    """
    position = {output: i for i, node in enumerate(imported.graph.node) for output in node.output}
    names = {}
    convs = [n for n in imported.graph.node if n.op_type == "Conv"]
    for i, node in enumerate(convs):
        names[f"{CONV_ORDER_PREFIX}{i}"] = node.name or f"conv_{i}"
    seen: dict[str, int] = {}
    layers = find_weights(original).layers
    for layer in sorted(layers, key=lambda layer: position.get(layer.node.output[0], layer.index)):
        weight = layer.layer_weight()
        key = weight_key(weight)
        occurrence = seen.get(key, 0)
        seen[key] = occurrence + 1
        names[weight_key(weight, occurrence)] = layer.name
    return names


def _tensor_info(value_info) -> tuple[tuple, str]:
    ttype = value_info.type.tensor_type
    dims = tuple(
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in ttype.shape.dim
    )
    dtype = (
        onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type).name if ttype.elem_type else "float32"
    )
    return dims, dtype


def load_onnx(model, input_shapes: Mapping | None = None) -> LoadedModel:
    """Import an ONNX model into Relax (weights as constants), normalised first
    (:func:`~tvm_sparse.normalize.normalize`); ``input_shapes`` fixes symbolic input dimensions
    (:func:`~tvm_sparse.input_shapes.specialize`, whose errors it raises)."""
    with progress.task("importing the model"):
        return _import_onnx(model, input_shapes)


def _import_onnx(model, input_shapes: Mapping | None) -> LoadedModel:
    from tvm.relax.frontend.onnx import from_onnx

    original = densify(
        read_onnx(model)
    )  # sparse initializers and Constant sparse_value: TVM reads neither
    proto = normalize(original, input_shapes)
    _check_supported(proto)
    init_names = {t.name for t in proto.graph.initializer}
    inputs = [vi for vi in proto.graph.input if vi.name not in init_names]
    shapes, dtypes = {}, {}
    for vi in inputs:
        shapes[vi.name], dtypes[vi.name] = _tensor_info(vi)
    try:
        # The importer prints its own diagnostics to stdout; the ModelError below carries the message.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            mod = from_onnx(proto, dtype_dict=dtypes)
    except Exception as err:
        msg = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise ModelError(f"the ONNX importer rejected the model: {msg}") from None
    mod = specialize(mod, input_shapes).with_attr(WEIGHT_NAMES_ATTR, _weight_names(original, proto))
    for name, param in zip(shapes, mod["main"].params):
        if getattr(param.ty, "shape", None) is None:
            raise ModelError(f"input {name}: the model gives it no shape, not even a rank")
    return LoadedModel(
        mod=mod,
        input_names=[vi.name for vi in inputs],
        input_shapes={name: _param_shape(p) for name, p in zip(shapes, mod["main"].params)},
        input_dtypes=dtypes,
        output_names=[o.name for o in proto.graph.output],
    )


def _param_shape(param) -> tuple:
    """A parameter's shape: ints, and the names of symbolic dimensions."""
    return tuple(int(s) if isinstance(s, tvm.tirx.IntImm) else str(s) for s in param.ty.shape)


def load_model(model, input_shapes: Mapping | None = None) -> LoadedModel:
    """Accept an ONNX path/bytes/ModelProto or a Relax IRModule; ``input_shapes`` as in :func:`load_onnx`."""
    if isinstance(model, tvm.IRModule):
        if "main" not in [gv.name_hint for gv in model.get_global_vars()]:
            raise ModelError("the IRModule has no 'main' function")
        model = specialize(model, input_shapes)
        main = model["main"]
        names = [p.name for p in main.params]
        shapes = {p.name: _param_shape(p) for p in main.params}
        dtypes = {p.name: str(p.ty.dtype) for p in main.params}
        return LoadedModel(model, names, shapes, dtypes, ["output"])
    return load_onnx(model, input_shapes)
