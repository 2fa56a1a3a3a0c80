"""Helpers for tests, tutorials and benchmarks: generated ONNX models and timing."""

from .models import bert_encoder, mlp
from .timing import median_seconds

__all__ = ["bert_encoder", "median_seconds", "mlp"]
