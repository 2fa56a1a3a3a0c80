"""tvm-sparse: structured-sparsity compilation for Apache TVM.

Importing the package registers what TVM needs (the device runtime's global functions, a target
tag per shipped device variant) and changes nothing else; thread settings are explicit
(:mod:`tvm_sparse.threads`).
"""

from . import accel, analysis, formats, kernels, prune, threads, transform
from .accel.runtime import register as _register_accel_runtime
from .analysis import analyze
from .build import build
from .errors import ModelError, TVMSparseError
from .pipeline import cpu_pipeline
from .target import register_shipped_devices as _register_accel_targets
from .tune import tune  # the function; the subpackage stays importable as tvm_sparse.tune.*

_register_accel_targets()
_register_accel_runtime()

__version__ = "0.1.0"

__all__ = [
    "ModelError",
    "TVMSparseError",
    "accel",
    "analysis",
    "analyze",
    "build",
    "cpu_pipeline",
    "formats",
    "kernels",
    "prune",
    "threads",
    "transform",
    "tune",
]
