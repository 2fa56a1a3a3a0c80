"""Helpers for tests, tutorials and benchmarks: generated ONNX models and timing."""

from .exported import (
    ExportedModel,
    exported_models,
    fp16_cnn,
    keras2onnx_cnn,
    qdq_cnn,
    sparse_initializer_mlp,
    tf2onnx_cnn,
    tf2onnx_einsum_encoder,
    torch_audio_cnn,
    torch_bert,
    torch_conv_decoder,
    torch_gpt2_tied,
    torch_squeezenet,
    zoo_mnist_constants,
)
from .models import GraphBuilder, bert_encoder, mlp, resnet
from .timing import median_seconds

__all__ = [
    "ExportedModel",
    "GraphBuilder",
    "bert_encoder",
    "exported_models",
    "fp16_cnn",
    "keras2onnx_cnn",
    "median_seconds",
    "mlp",
    "qdq_cnn",
    "resnet",
    "sparse_initializer_mlp",
    "tf2onnx_cnn",
    "tf2onnx_einsum_encoder",
    "torch_audio_cnn",
    "torch_bert",
    "torch_conv_decoder",
    "torch_gpt2_tied",
    "torch_squeezenet",
    "zoo_mnist_constants",
]
