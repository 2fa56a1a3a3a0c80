"""Module-level sparsity report: one row per weight-carrying layer."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field

from ..frontend import load_model
from ..graph import ConvLayer, Layer, find_layers, weight_names
from ..kernels.nm_matmul import nm_kernel_available
from ..prepare import prepare
from ..prune.decompose import energy_profile
from .cost_model import DENSE, CPUCostModel, FormatChoice
from .profile import WeightProfile, profile_weight
from .slow_path import HeavyOp, default_schedule_report, heavy_ops, model_flops

SUPPORTED_DTYPES = ("float32",)


@dataclass
class LayerReport:
    """What the analysis found for one layer and what it decided."""

    name: str
    op: str
    weight_shape: tuple[int, int]
    profile: WeightProfile
    choice: FormatChoice
    note: str = ""
    decomposition: dict | None = None  # convolutions: see decomposition_summary

    def to_dict(self) -> dict:
        """The layer's row as JSON-able values."""
        return {
            "name": self.name,
            "op": self.op,
            "weight_shape": list(self.weight_shape),
            "density": round(self.profile.density, 6),
            "structure": self.profile.structure,
            "format": self.choice.label,
            "predicted_speedup": round(self.choice.predicted_speedup, 3),
            "note": self.note,
            "profile": self.profile.to_dict(),
            "decomposition": self.decomposition,
        }

    def to_json(self) -> dict:
        """Deprecated: :meth:`to_dict`."""
        warnings.warn(
            "LayerReport.to_json() is deprecated: use to_dict()", DeprecationWarning, stacklevel=2
        )
        return self.to_dict()


@dataclass
class SparsityReport:
    """The analysis of a whole model."""

    target: str
    layers: list[LayerReport] = field(default_factory=list)
    #: compute-heavy operators no project kernel takes (TVM's default lowering), and the model's FLOPs
    default_schedule: list[HeavyOp] = field(default_factory=list)
    model_flops: int = 0

    def to_dict(self) -> dict:
        """The report as JSON-able values (what ``analyze --json`` prints)."""
        return {
            "target": self.target,
            "layers": [layer.to_dict() for layer in self.layers],
            "default_schedule_ops": [op.to_dict(self.model_flops) for op in self.default_schedule],
        }

    def to_json(self) -> dict:
        """Deprecated: :meth:`to_dict`."""
        warnings.warn(
            "SparsityReport.to_json() is deprecated: use to_dict()",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.to_dict()

    def dumps(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=2)

    def to_table(self) -> str:
        head = (
            "layer",
            "op",
            "weight",
            "density",
            "structure",
            "format",
            "pred. speedup",
            "decomposition",
        )
        rows = [
            (
                lr.name,
                lr.op,
                "x".join(map(str, lr.weight_shape)),
                f"{lr.profile.density:.3f}",
                lr.profile.structure,
                lr.choice.label + (f" ({lr.note})" if lr.note else ""),
                f"{lr.choice.predicted_speedup:.2f}x",
                _decomposition_label(lr.decomposition),
            )
            for lr in self.layers
        ]
        widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
        lines += [fmt.format(*r) for r in rows]
        if not rows:
            lines.append("(no layer with a constant weight)")
        if self.default_schedule:
            lines.append(
                "warning: " + default_schedule_report(self.default_schedule, self.model_flops)
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_table()


def _decomposition_label(summary: dict | None) -> str:
    """``rank R keeps 95%: G x`` for a k x k convolution (the predicted gain of decomposing), else ``-``."""
    if not summary:
        return "-"
    return f"rank {summary['rank_95']} keeps 95%: {summary['predicted_gain']:.2f}x"


def layer_decision(layer: Layer, model: CPUCostModel) -> tuple[WeightProfile, FormatChoice, str]:
    """Profile a layer's ``(out, in)`` matrix and decide its format; the note says why a layer stays dense.

    Convolutions run the block-sparse kernel on im2col rows; there is no N:M convolution kernel on the CPU.
    """
    profile = profile_weight(layer.matrix())
    dtype = str(layer.weight.dtype)
    if dtype not in SUPPORTED_DTYPES:
        return profile, DENSE, f"{dtype} weights are kept dense"
    if layer.x_shape is None:
        return profile, DENSE, "dynamic activation shape: kept dense"
    if isinstance(layer, ConvLayer):
        if layer.groups != 1:
            return profile, DENSE, "grouped convolution: dense kernel"
        return profile, model.choose(profile, nm=False), ""
    return profile, model.choose(profile), ""


def decomposition_summary(layer: ConvLayer) -> dict | None:
    """For a k x k convolution (k > 1): the energy of the best rank-r basis for r = 1..k*k, the rank that
    keeps 95% of it, and the predicted gain of decomposing to that rank (dense MACs / decomposed MACs)."""
    o, kh, kw, i = layer.weight.shape
    if kh != kw or kh < 2 or layer.groups != 1:
        return None
    energy = energy_profile(layer.weight.transpose(0, 3, 1, 2))
    rank = int(min(len(energy), 1 + (energy < 0.95).sum()))
    gain = (i * kh * kw) / (i * rank + rank * kh * kw)
    return {
        "energy": [round(float(e), 4) for e in energy],
        "rank_95": rank,
        "predicted_gain": round(gain, 2),
    }


def analyze(
    model, target: str = "llvm", min_speedup: float = 1.1, input_shapes=None
) -> SparsityReport:
    """Analyze the constant weights of a model: density, structure, the format that pays.

    Parameters
    ----------
    model
        An ONNX model (path, bytes, ``ModelProto``) or a Relax ``IRModule``.
    target
        The CPU the cost model prices kernels for (``"llvm"``: this host).
    min_speedup
        The predicted speedup over dense (a ratio) below which a layer stays dense.
    input_shapes
        ``{input name: shape}`` fixing symbolic input dimensions, as in :func:`~tvm_sparse.build`;
        without it the cost model uses each symbolic dimension's hint.

    Returns
    -------
    SparsityReport
        One row per matmul/Gemm/convolution whose weight is a constant: density, the structure its
        zeros follow (blocks, N:M, dead channels, rank energy), the format the cost model picks and
        the predicted speedup; the compute-heavy operators left on TVM's default lowering.

    Raises
    ------
    ModelError
        The model cannot be read or imported (one line naming the problem).
    """
    loaded = load_model(model, input_shapes)
    mod = prepare(loaded.mod)
    cost_model = CPUCostModel(min_speedup=min_speedup, nm_kernel=nm_kernel_available())
    report = SparsityReport(
        target=str(target),
        default_schedule=heavy_ops(mod, served=True),
        model_flops=model_flops(mod),
    )
    for layer in find_layers(mod["main"], weight_names(mod)):
        profile, choice, note = layer_decision(layer, cost_model)
        conv = isinstance(layer, ConvLayer)
        report.layers.append(
            LayerReport(
                layer.name,
                "conv2d" if conv else "matmul",
                profile.shape,
                profile,
                choice,
                note,
                decomposition_summary(layer) if conv else None,
            )
        )
    return report
