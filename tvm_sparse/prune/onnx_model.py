"""Pruning the Gemm/MatMul and Conv weights of an ONNX model.

A weight is pruned as the ``(out, in)`` matrix its kernels multiply: a
linear layer's ``(out_features, in_features)``, a convolution's
``(O, KH * KW * I)`` with the reduction ordered ``(kh, kw, i)`` (OHWI), which
is how the host and device kernels lay convolutions out. So ``nm:2:4`` keeps
2 of every 4 consecutive input channels at each kernel tap, and
``block:16x16`` zeroes 16 filters x 16 input channels at a tap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ..frontend import read_onnx
from .magnitude import Pattern, parse_pattern, prune_weight


@dataclass
class PrunedLayer:
    name: str
    shape: tuple[int, int]  # of the (out, in) matrix pruned
    density_before: float
    density_after: float


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


def prune_onnx(model, pattern: Pattern | str, density: float | None = None) -> tuple[onnx.ModelProto, list[PrunedLayer]]:
    """Return a copy of ``model`` with every Gemm/MatMul (2-D) and Conv (4-D) initializer weight pruned to ``pattern``."""
    pattern = parse_pattern(pattern) if isinstance(pattern, str) else pattern
    pruned = onnx.ModelProto()
    pruned.CopyFrom(read_onnx(model))
    inits = {t.name: t for t in pruned.graph.initializer}
    done, report = set(), []
    for node in pruned.graph.node:
        if node.op_type not in ("Gemm", "MatMul", "Conv") or len(node.input) < 2:
            continue
        tensor = inits.get(node.input[1])
        if tensor is None or tensor.name in done:
            continue
        weight = numpy_helper.to_array(tensor)
        matrix = _as_matrix(node, weight) if np.issubdtype(weight.dtype, np.floating) else None
        if matrix is None:
            continue
        pruned_matrix = prune_weight(matrix, pattern, density)
        tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(_from_matrix(node, pruned_matrix, weight)), tensor.name))
        done.add(tensor.name)
        report.append(
            PrunedLayer(
                node.name or tensor.name,
                pruned_matrix.shape,
                float(np.count_nonzero(weight) / weight.size),
                float(np.count_nonzero(pruned_matrix) / pruned_matrix.size),
            )
        )
    return pruned, report
