"""Helpers for tests, tutorials and benchmarks: generated ONNX models and timing."""

from .models import GraphBuilder, bert_encoder, mlp, resnet
from .timing import median_seconds

__all__ = ["GraphBuilder", "bert_encoder", "median_seconds", "mlp", "resnet"]
