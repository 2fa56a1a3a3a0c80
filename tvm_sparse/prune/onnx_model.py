"""Pruning the weights of an ONNX model's Gemm, MatMul, Conv, ConvTranspose and Einsum layers.

Weights are found, read and written back by :mod:`tvm_sparse.onnx_weights`, so
each is pruned once, in its own storage (initializer, Constant, sparse
initializer, float16 behind a Cast, int8 behind a DequantizeLinear), and a
weight shared by several layers is pruned as its first layer multiplies it.

A weight is pruned as the ``(out, in)`` matrix its kernels multiply: a
linear layer's ``(out_features, in_features)``, a convolution's
``(O, KH * KW * I)`` with the reduction ordered ``(kh, kw, i)`` (OHWI), which
is how the host and device kernels lay convolutions out. So ``nm:2:4`` keeps
2 of every 4 consecutive input channels at each kernel tap, and
``block:16x16`` zeroes 16 filters x 16 input channels at a tap.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ..compress import codebook_quantize, imbalance, prune_balanced, quantize_blocks
from ..errors import ModelError
from ..formats import FormatError
from ..onnx_weights import (
    LAYER_OPS,
    LOCAL_QUANTIZATION,
    ModelWeights,
    OnnxLayer,
    SkippedLayer,
    find_weights,
    read_onnx,
)
from .decompose import decompose_kernels, prune_coefficients, quantize_hybrid
from .magnitude import Pattern, parse_pattern, prune_weight


@dataclass
class PrunedLayer:
    name: str
    shape: tuple[int, ...]  # of the (out, in) matrix pruned; the conv weight for decompositions
    density_before: float
    density_after: float
    note: str = ""  # quantization, rounding to the storage, the other layers sharing the weight; decompositions: rank, energy, errors


class UnprunedLayer(UserWarning):
    """A layer :func:`prune_onnx` left as it was (its weight is a graph input, computed at run time, ...)."""


def _prunable(model: onnx.ModelProto, ops: tuple[str, ...]) -> ModelWeights:
    """The model's layers; warns :class:`UnprunedLayer` for each layer of ``ops`` whose weight cannot be pruned."""
    found = find_weights(model)
    for layer in found.skipped:
        if layer.op_type in ops:
            warnings.warn(UnprunedLayer(f"left unpruned: {layer}"), stacklevel=3)
    return found


def _nothing_to_prune(skipped: list[SkippedLayer], what: str) -> ModelError:
    if not skipped:
        return ModelError(f"nothing to prune: the model has no {what}")
    shown = "; ".join(map(str, skipped[:4])) + (
        f"; and {len(skipped) - 4} more" if len(skipped) > 4 else ""
    )
    return ModelError(f"nothing to prune: no layer's weight can be pruned ({shown})")


def prune_onnx(
    model,
    pattern: Pattern | str,
    density: float | None = None,
    codebook_bits: int | None = None,
    balanced_units: int | None = None,
    local_bits: int | None = None,
) -> tuple[onnx.ModelProto, list[PrunedLayer]]:
    """A copy of ``model`` with the weight of every Gemm, MatMul, Conv (1-D to 3-D), ConvTranspose and
    matmul Einsum pruned to ``pattern`` (magnitude pruning, Han et al. 2015, at the pattern's granularity).

    Each weight is pruned once, as the ``(out, in)`` matrix of its first layer, and stored back in its
    own storage and element type (see :mod:`tvm_sparse.onnx_weights`). A layer whose weight cannot be
    pruned (a graph input, computed at run time, ...) is left as it is with an :class:`UnprunedLayer`
    warning. ``decompose:...`` patterns instead rewrite every ungrouped ``k x k`` convolution (k > 1)
    into its decomposed form (PENNI, Li et al. ICML'20; see :mod:`.decompose`), in standard ONNX ops.

    Parameters
    ----------
    model
        An ONNX model: path, bytes or ``ModelProto`` (not modified).
    pattern
        ``unstructured``, ``block:RxC``, ``nm:N:M`` or ``decompose:...``
        (:func:`~tvm_sparse.prune.parse_pattern`).
    density
        The fraction of weights (or blocks) kept, in (0, 1]; N:M patterns fix their own.
    codebook_bits
        Share each weight's remaining nonzeros among ``2**bits`` values (Deep Compression's codebook,
        :func:`~tvm_sparse.compress.codebook_quantize`); the written weights are the dequantized values,
        so the model computes exactly with the quantized weights.
    balanced_units
        Unstructured only: prune each of that many processing units' rows to the same count
        (:func:`~tvm_sparse.compress.prune_balanced`, ESE's load balance).
    local_bits
        Block patterns only: quantize each stored block with its own scale
        (:func:`~tvm_sparse.compress.quantize_blocks`, Cambricon-S); the weight's ``doc_string`` records
        the bits and block shape for the compression report.

    Returns
    -------
    tuple[onnx.ModelProto, list[PrunedLayer]]
        The pruned model and, per pruned weight, its layer name, matrix shape, density before and after,
        and a note (quantization, rounding to a float16 or integer storage, layers sharing the weight).

    Raises
    ------
    ModelError
        No weight can be pruned, or no convolution decomposed.
    FormatError
        A bad pattern or option combination.
    """
    pattern = parse_pattern(pattern) if isinstance(pattern, str) else pattern
    pruned = onnx.ModelProto()
    pruned.CopyFrom(read_onnx(model))
    if balanced_units is not None and (pattern.kind != "unstructured" or density is None):
        raise FormatError(
            f"balanced pruning applies to the unstructured pattern with a density, not {pattern}"
        )
    if local_bits is not None and (pattern.kind != "block" or codebook_bits is not None):
        raise FormatError(
            f"local quantization gives each block of a block pattern its own scale (not {pattern}, nor with a codebook)"
        )
    if codebook_bits is not None and pattern.kind == "decompose":
        raise FormatError(
            "codebook quantization applies to pruned weights; decompositions have quant=hybrid"
        )
    if pattern.kind == "decompose":
        return pruned, decompose_onnx(pruned, pattern)
    found = _prunable(pruned, LAYER_OPS)
    if not found.weights:
        raise _nothing_to_prune(
            found.skipped, "Gemm, MatMul, Conv, ConvTranspose or Einsum with a constant weight"
        )
    report = []
    for weight in found.weights:
        layer = weight.layers[0]  # the first user's (out, in) orientation
        matrix = layer.matrix()
        pruned_matrix, notes, doc = _prune_matrix(
            matrix, pattern, density, codebook_bits, balanced_units, local_bits
        )
        layer.write_matrix(pruned_matrix)
        weight.storage.doc_string = doc
        stored = layer.matrix()
        if not np.array_equal(stored, pruned_matrix):
            notes.append(
                f"rounded to its {layer.storage_label()}, relative weight error {_relative_error(stored, pruned_matrix):.2e}"
            )
        if len(weight.layers) > 1:
            notes.append(f"shared with {', '.join(other.name for other in weight.layers[1:])}")
        report.append(
            PrunedLayer(
                layer.name, stored.shape, _density(matrix), _density(stored), "; ".join(notes)
            )
        )
    return pruned, report


def _density(array: np.ndarray) -> float:
    return float(np.count_nonzero(array) / array.size)


def _relative_error(approximation: np.ndarray, exact: np.ndarray) -> float:
    return float(np.linalg.norm(approximation - exact) / max(np.linalg.norm(exact), 1e-30))


def _prune_matrix(
    matrix: np.ndarray,
    pattern: Pattern,
    density: float | None,
    codebook_bits: int | None,
    balanced_units: int | None,
    local_bits: int | None,
) -> tuple[np.ndarray, list[str], str]:
    """The pruned (and quantized) ``(out, in)`` matrix, notes for the report, and the storage's doc string."""
    notes = []
    if balanced_units is not None:
        pruned = prune_balanced(matrix, density, balanced_units)
        notes.append(
            f"imbalance over {balanced_units} units {imbalance(prune_weight(matrix, pattern, density), balanced_units):.2f} -> "
            f"{imbalance(pruned, balanced_units):.2f}"
        )
    else:
        pruned = prune_weight(matrix, pattern, density)
    if codebook_bits is not None:
        shared = codebook_quantize(pruned, codebook_bits).dequantize()
        notes.append(
            f"codebook {codebook_bits}-bit, relative weight error {_relative_error(shared, pruned):.2e}"
        )
        pruned = shared
    doc = ""
    if local_bits is not None:
        local = quantize_blocks(pruned, pattern.block_shape, local_bits).dequantize()
        notes.append(
            f"{local_bits}-bit values with a scale per {pattern.block_shape[0]}x{pattern.block_shape[1]} block, "
            f"relative weight error {_relative_error(local, pruned):.2e}"
        )
        pruned = local
        doc = json.dumps(
            {LOCAL_QUANTIZATION: {"bits": local_bits, "block": list(pattern.block_shape)}}
        )
    return pruned, notes, doc


def _decomposable(layer: OnnxLayer) -> bool:
    """An ungrouped Conv with square k x k kernels, k > 1."""
    shape = layer.operand().shape
    return (
        layer.op_type == "Conv"
        and len(shape) == 4
        and shape[2] == shape[3] > 1
        and _attribute(layer.node, "group", 1) == 1
    )


def _attribute(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def decompose_onnx(model: onnx.ModelProto, pattern: Pattern) -> list[PrunedLayer]:
    """Rewrite, in place, each ungrouped square ``k x k`` Conv (k > 1) with a constant weight into
    ESCALATE's order: a 1x1 Conv with the coefficients (``O * r`` maps, map ``o * r + j``), then a Conv
    with ``O`` groups whose kernels are the shared basis (the original strides, pads, dilations, bias).
    The new weights are float initializers of the convolution's type; what only fed the old ones is removed.

    Raises :class:`ModelError` when no convolution can be decomposed.
    """
    graph = model.graph
    found = _prunable(model, ("Conv",))
    layers = {layer.index: layer for layer in found.layers if _decomposable(layer)}
    if not layers:
        raise _nothing_to_prune(
            [s for s in found.skipped if s.op_type == "Conv"],
            "ungrouped k x k convolution (k > 1) with a constant weight",
        )
    report, nodes = [], []
    for index, node in enumerate(graph.node):
        layer = layers.get(index)
        if layer is None:
            nodes.append(node)
            continue
        weight, dtype = layer.values(), layer.operand().dtype
        d = decompose_kernels(weight, pattern.rank, pattern.energy or 0.99)
        if pattern.coefficient_density is not None:
            d = prune_coefficients(d, pattern.coefficient_density, pattern.coefficient_block)
        if pattern.hybrid_quantization:
            d = quantize_hybrid(d)
        o, i, k, _ = weight.shape
        name = layer.name
        coeff_name, basis_name, maps = f"{name}.coefficients", f"{name}.basis", f"{name}.maps"
        coeff = d.coefficients.transpose(0, 2, 1).reshape(o * d.rank, i, 1, 1)
        basis = np.broadcast_to(d.basis[None], (o, d.rank, k, k))
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.ascontiguousarray(coeff).astype(dtype), coeff_name),
                numpy_helper.from_array(np.ascontiguousarray(basis).astype(dtype), basis_name),
            ]
        )
        nodes.append(
            onnx.helper.make_node(
                "Conv",
                [node.input[0], coeff_name],
                [maps],
                name=f"{name}.combine",
                kernel_shape=[1, 1],
            )
        )
        attrs = {
            a.name: onnx.helper.get_attribute_value(a)
            for a in node.attribute
            if a.name in ("strides", "pads", "dilations", "auto_pad")
        }
        inputs = [maps, basis_name] + list(node.input[2:3])
        nodes.append(
            onnx.helper.make_node(
                "Conv",
                inputs,
                list(node.output),
                name=f"{name}.basis",
                kernel_shape=[k, k],
                group=o,
                **attrs,
            )
        )
        report.append(
            PrunedLayer(
                name,
                weight.shape,
                _density(weight),
                _density(d.coefficients),
                f"rank {d.rank} of {k * k}, energy {d.energy:.3f}, weight error {d.relative_error(weight):.3g}, "
                f"output error {output_error(weight, d.weight()):.3g}",
            )
        )
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused(graph)
    return report


#: Ops that only compute constants from their inputs here: dropped when nothing reads them.
_CONSTANT_OPS = ("Constant", "Identity", "Transpose", "Cast", "DequantizeLinear")


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Remove the constant-computing nodes and the initializers nothing reads (and those initializers' graph inputs)."""
    while True:
        used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
        dead = [
            i
            for i, n in enumerate(graph.node)
            if n.op_type in _CONSTANT_OPS and not any(out in used for out in n.output)
        ]
        if not dead:
            break
        for i in reversed(dead):
            del graph.node[i]
    dropped = {t.name for t in graph.initializer if t.name not in used} | {
        s.values.name for s in graph.sparse_initializer if s.values.name not in used
    }
    for tensors, name_of in (
        (graph.initializer, lambda t: t.name),
        (graph.sparse_initializer, lambda s: s.values.name),
        (graph.input, lambda vi: vi.name),
    ):
        kept = [t for t in tensors if name_of(t) not in dropped]
        del tensors[:]
        tensors.extend(kept)


def output_error(
    weight: np.ndarray, approximation: np.ndarray, size: int = 12, seed: int = 0
) -> float:
    """Relative L2 error of a stride-1, 'same' convolution's output on a random input."""
    o, i, k, _ = weight.shape
    x = np.random.default_rng(seed).standard_normal((i, size + k - 1, size + k - 1))
    windows = np.lib.stride_tricks.sliding_window_view(
        x, (k, k), axis=(1, 2)
    )  # [i, size, size, k, k]
    exact = np.einsum("ixyhw,oihw->oxy", windows, weight)
    approx = np.einsum("ixyhw,oihw->oxy", windows, approximation)
    return float(np.linalg.norm(approx - exact) / max(np.linalg.norm(exact), 1e-30))
