"""tvm-sparse: structured-sparsity compilation for Apache TVM."""

from . import analysis, formats, kernels, transform
from .analysis import analyze
from .errors import ModelError, TVMSparseError

__version__ = "0.1.0"

__all__ = ["ModelError", "TVMSparseError", "analysis", "analyze", "formats", "kernels", "transform"]
