"""Pruning the Gemm/MatMul and Conv weights of an ONNX model.

A weight is pruned as the ``(out, in)`` matrix its kernels multiply: a
linear layer's ``(out_features, in_features)``, a convolution's
``(O, KH * KW * I)`` with the reduction ordered ``(kh, kw, i)`` (OHWI), which
is how the host and device kernels lay convolutions out. So ``nm:2:4`` keeps
2 of every 4 consecutive input channels at each kernel tap, and
``block:16x16`` zeroes 16 filters x 16 input channels at a tap.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ..compress import codebook_quantize, imbalance, prune_balanced, quantize_blocks
from ..formats import FormatError
from ..frontend import read_onnx
from .decompose import decompose_kernels, prune_coefficients, quantize_hybrid
from .magnitude import Pattern, parse_pattern, prune_weight


@dataclass
class PrunedLayer:
    name: str
    shape: tuple[int, ...]  # of the (out, in) matrix pruned; the conv weight for decompositions
    density_before: float
    density_after: float
    note: str = ""  # decompositions: rank, energy kept and the relative errors


def _weight_orientation(node: onnx.NodeProto) -> bool:
    """True when the node's weight is stored (out, in), i.e. a Gemm with transB=1."""
    if node.op_type != "Gemm":
        return False
    return any(a.name == "transB" and a.i == 1 for a in node.attribute)


def _as_matrix(node: onnx.NodeProto, weight: np.ndarray) -> np.ndarray | None:
    """The ``(out, in)`` matrix of a node's weight (see the module docstring), or None if not prunable."""
    if node.op_type == "Conv":
        return np.ascontiguousarray(weight.transpose(0, 2, 3, 1)).reshape(weight.shape[0], -1) if weight.ndim == 4 else None
    if weight.ndim != 2:
        return None
    return weight if _weight_orientation(node) else weight.T


def _from_matrix(node: onnx.NodeProto, matrix: np.ndarray, like: np.ndarray) -> np.ndarray:
    if node.op_type == "Conv":
        o, i, kh, kw = like.shape
        return matrix.reshape(o, kh, kw, i).transpose(0, 3, 1, 2)
    return matrix if _weight_orientation(node) else matrix.T


def _weights(model: onnx.ModelProto):
    """``(node, initializer, weight, (out, in) matrix)`` for each float Gemm/MatMul/Conv weight, once each."""
    inits = {t.name: t for t in model.graph.initializer}
    done = set()
    for node in model.graph.node:
        if node.op_type not in ("Gemm", "MatMul", "Conv") or len(node.input) < 2:
            continue
        tensor = inits.get(node.input[1])
        if tensor is None or tensor.name in done:
            continue
        weight = numpy_helper.to_array(tensor)
        matrix = _as_matrix(node, weight) if np.issubdtype(weight.dtype, np.floating) else None
        if matrix is not None:
            done.add(tensor.name)
            yield node, tensor, weight, matrix


def weight_matrices(model) -> dict[str, np.ndarray]:
    """The ``(out, in)`` matrix of every prunable weight of an ONNX model, by layer (node) name."""
    return {node.name or tensor.name: matrix for node, tensor, _, matrix in _weights(read_onnx(model))}


#: Key of the JSON an initializer's ``doc_string`` carries when its values are locally quantized.
LOCAL_QUANTIZATION = "tvm_sparse.local_quantization"


def local_quantization(model) -> dict[str, tuple[int, tuple[int, int]]]:
    """``(bits, block shape)`` of each weight that ``prune_onnx(local_bits=...)`` quantized, by layer name."""
    found = {}
    for node, tensor, _, _ in _weights(read_onnx(model)):
        try:
            info = json.loads(tensor.doc_string)[LOCAL_QUANTIZATION] if tensor.doc_string else None
            if info is not None:
                found[node.name or tensor.name] = (int(info["bits"]), (int(info["block"][0]), int(info["block"][1])))
        except (ValueError, KeyError, TypeError, IndexError):
            continue  # another tool's doc string
    return found


def prune_onnx(model, pattern: Pattern | str, density: float | None = None, codebook_bits: int | None = None,
               balanced_units: int | None = None, local_bits: int | None = None) -> tuple[onnx.ModelProto, list[PrunedLayer]]:
    """Return a copy of ``model`` with every Gemm/MatMul (2-D) and Conv (4-D) initializer weight pruned to ``pattern``.

    ``decompose:...`` patterns instead rewrite every ungrouped ``k x k`` convolution (k > 1) into its
    decomposed form (see :mod:`.decompose`), in standard ONNX ops.

    ``balanced_units`` (unstructured only) prunes each of that many processing units' rows to the same
    count (:func:`~tvm_sparse.compress.prune_balanced`); ``codebook_bits`` then shares the remaining
    nonzeros of each weight among ``2^bits`` values (:func:`~tvm_sparse.compress.codebook_quantize`). The
    written weights are the dequantized values, so the model computes exactly with the quantized weights.

    ``local_bits`` (block patterns only) instead quantizes each stored block with its own scale
    (:func:`~tvm_sparse.compress.quantize_blocks`, Cambricon-S); the initializer's ``doc_string`` records
    the bits and block shape for the compression report.
    """
    pattern = parse_pattern(pattern) if isinstance(pattern, str) else pattern
    pruned = onnx.ModelProto()
    pruned.CopyFrom(read_onnx(model))
    if balanced_units is not None and (pattern.kind != "unstructured" or density is None):
        raise FormatError(f"balanced pruning applies to the unstructured pattern with a density, not {pattern}")
    if local_bits is not None and (pattern.kind != "block" or codebook_bits is not None):
        raise FormatError(f"local quantization gives each block of a block pattern its own scale (not {pattern}, nor with a codebook)")
    if codebook_bits is not None and pattern.kind == "decompose":
        raise FormatError("codebook quantization applies to pruned weights; decompositions have quant=hybrid")
    if pattern.kind == "decompose":
        return pruned, decompose_onnx(pruned, pattern)
    report = []
    for node, tensor, weight, matrix in _weights(pruned):
        notes = []
        if balanced_units is not None:
            pruned_matrix = prune_balanced(matrix, density, balanced_units)
            notes.append(f"imbalance over {balanced_units} units {imbalance(prune_weight(matrix, pattern, density), balanced_units):.2f} -> "
                         f"{imbalance(pruned_matrix, balanced_units):.2f}")
        else:
            pruned_matrix = prune_weight(matrix, pattern, density)
        if codebook_bits is not None:
            shared = codebook_quantize(pruned_matrix, codebook_bits).dequantize()
            error = np.linalg.norm(shared - pruned_matrix) / max(np.linalg.norm(pruned_matrix), 1e-30)
            notes.append(f"codebook {codebook_bits}-bit, relative weight error {error:.2e}")
            pruned_matrix = shared
        doc = ""
        if local_bits is not None:
            local = quantize_blocks(pruned_matrix, pattern.block_shape, local_bits).dequantize()
            error = np.linalg.norm(local - pruned_matrix) / max(np.linalg.norm(pruned_matrix), 1e-30)
            notes.append(f"{local_bits}-bit values with a scale per {pattern.block_shape[0]}x{pattern.block_shape[1]} block, relative weight error {error:.2e}")
            pruned_matrix = local
            doc = json.dumps({LOCAL_QUANTIZATION: {"bits": local_bits, "block": list(pattern.block_shape)}})
        tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(_from_matrix(node, pruned_matrix, weight)), tensor.name))
        tensor.doc_string = doc
        report.append(
            PrunedLayer(
                node.name or tensor.name,
                pruned_matrix.shape,
                float(np.count_nonzero(weight) / weight.size),
                float(np.count_nonzero(pruned_matrix) / pruned_matrix.size),
                "; ".join(notes),
            )
        )
    return pruned, report


def _attribute(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def decompose_onnx(model: onnx.ModelProto, pattern: Pattern) -> list[PrunedLayer]:
    """Rewrite, in place, each ungrouped square ``k x k`` Conv (k > 1) with a constant weight into
    ESCALATE's order: a 1x1 Conv with the coefficients (``O * r`` maps, map ``o * r + j``), then a Conv
    with ``O`` groups whose kernels are the shared basis (the original strides, pads, dilations, bias)."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    report, nodes = [], []
    for node in graph.node:
        weight_init = inits.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        weight = numpy_helper.to_array(weight_init) if weight_init is not None else None
        if weight is None or weight.ndim != 4 or weight.shape[2] != weight.shape[3] or weight.shape[2] < 2 or _attribute(node, "group", 1) != 1:
            nodes.append(node)
            continue
        d = decompose_kernels(weight, pattern.rank, pattern.energy or 0.99)
        if pattern.coefficient_density is not None:
            d = prune_coefficients(d, pattern.coefficient_density, pattern.coefficient_block)
        if pattern.hybrid_quantization:
            d = quantize_hybrid(d)
        o, i, k, _ = weight.shape
        name = node.name or node.output[0]
        coeff_name, basis_name, maps = f"{name}.coefficients", f"{name}.basis", f"{name}.maps"
        coeff = d.coefficients.transpose(0, 2, 1).reshape(o * d.rank, i, 1, 1)
        basis = np.broadcast_to(d.basis[None], (o, d.rank, k, k))
        graph.initializer.extend([numpy_helper.from_array(np.ascontiguousarray(coeff, weight.dtype), coeff_name), numpy_helper.from_array(np.ascontiguousarray(basis, weight.dtype), basis_name)])
        nodes.append(onnx.helper.make_node("Conv", [node.input[0], coeff_name], [maps], name=f"{name}.combine", kernel_shape=[1, 1]))
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute if a.name in ("strides", "pads", "dilations", "auto_pad")}
        inputs = [maps, basis_name] + list(node.input[2:3])
        nodes.append(onnx.helper.make_node("Conv", inputs, list(node.output), name=f"{name}.basis", kernel_shape=[k, k], group=o, **attrs))
        error = d.relative_error(weight)
        report.append(
            PrunedLayer(
                name,
                weight.shape,
                float(np.count_nonzero(weight) / weight.size),
                float(np.count_nonzero(d.coefficients) / d.coefficients.size),
                f"rank {d.rank} of {k * k}, energy {d.energy:.3f}, weight error {error:.3g}, output error {output_error(weight, d.weight()):.3g}",
            )
        )
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for n in graph.node for name in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return report


def output_error(weight: np.ndarray, approximation: np.ndarray, size: int = 12, seed: int = 0) -> float:
    """Relative L2 error of a stride-1, 'same' convolution's output on a random input."""
    o, i, k, _ = weight.shape
    x = np.random.default_rng(seed).standard_normal((i, size + k - 1, size + k - 1))
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))  # [i, size, size, k, k]
    exact = np.einsum("ixyhw,oihw->oxy", windows, weight)
    approx = np.einsum("ixyhw,oihw->oxy", windows, approximation)
    return float(np.linalg.norm(approx - exact) / max(np.linalg.norm(exact), 1e-30))
