"""Pruning the Gemm/MatMul weights of an ONNX model."""

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
    shape: tuple[int, int]
    density_before: float
    density_after: float


def _weight_orientation(node: onnx.NodeProto) -> bool:
    """True when the node's weight is stored (out, in), i.e. a Gemm with transB=1."""
    if node.op_type != "Gemm":
        return False
    return any(a.name == "transB" and a.i == 1 for a in node.attribute)


def prune_onnx(model, pattern: Pattern | str, density: float | None = None) -> tuple[onnx.ModelProto, list[PrunedLayer]]:
    """Return a copy of ``model`` with every 2-D Gemm/MatMul initializer pruned to ``pattern``."""
    pattern = parse_pattern(pattern) if isinstance(pattern, str) else pattern
    pruned = onnx.ModelProto()
    pruned.CopyFrom(read_onnx(model))
    inits = {t.name: t for t in pruned.graph.initializer}
    done, report = set(), []
    for node in pruned.graph.node:
        if node.op_type not in ("Gemm", "MatMul") or len(node.input) < 2:
            continue
        tensor = inits.get(node.input[1])
        if tensor is None or tensor.name in done:
            continue
        weight = numpy_helper.to_array(tensor)
        if weight.ndim != 2 or not np.issubdtype(weight.dtype, np.floating):
            continue
        out_in = _weight_orientation(node)
        w = weight if out_in else weight.T
        w = prune_weight(w, pattern, density)
        new = numpy_helper.from_array(np.ascontiguousarray(w if out_in else w.T), tensor.name)
        tensor.CopyFrom(new)
        done.add(tensor.name)
        report.append(
            PrunedLayer(node.name or tensor.name, w.shape, float(np.count_nonzero(weight) / weight.size), float(np.count_nonzero(w) / w.size))
        )
    return pruned, report
