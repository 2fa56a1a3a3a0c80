"""The passes that normalise an imported model before the project's rewrites."""

from __future__ import annotations

import tvm
from tvm import relax


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
