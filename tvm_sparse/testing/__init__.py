"""Helpers for tests, tutorials and benchmarks: generated ONNX models and reference runs."""

from .models import bert_encoder, mlp

__all__ = ["bert_encoder", "mlp"]
