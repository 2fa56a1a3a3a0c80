"""The passes that normalise an imported model before the project's rewrites."""

from __future__ import annotations

import tvm
from tvm import relax

from .errors import tvm_rejection


def prepare_passes() -> list[tvm.transform.Pass]:
    """Normalise an imported model: BatchNorm folded into convolutions, NHWC/OHWI convolutions, constants folded.

    Convolutions are moved to NHWC with OHWI weights (TVM's ``ConvertLayout``;
    the model's own layout is kept at its inputs and outputs) so that channels
    are contiguous for the kernels.
    """
    return [
        relax.transform.FoldBatchnormToConv2D(),
        relax.transform.DecomposeOpsForInference(),
        relax.transform.FoldConstant(),  # ConvertLayout crashes on the unfolded weight arithmetic of FoldBatchnormToConv2D
        relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "OHWI"]}),
        relax.transform.FoldConstant(),
    ]


def prepare(mod: tvm.IRModule) -> tvm.IRModule:
    """Apply :func:`prepare_passes`; TVM rejecting the module (an inconsistent model that its importer
    let through) is a :class:`~tvm_sparse.errors.ModelError`."""
    try:
        return tvm.transform.Sequential(prepare_passes())(mod)
    except Exception as err:
        raise tvm_rejection(err, "process") from err
