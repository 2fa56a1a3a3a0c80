"""ONNX models built with ``onnx.helper`` and generated weights (tests, demo, benchmarks)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class GraphBuilder:
    """Builds an ONNX graph node by node with generated weights (seeded)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], name: str | None = None, **attrs) -> str:
        self.count += 1
        name = name or f"{op.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def weight(self, shape, scale: float | None = None) -> np.ndarray:
        scale = scale if scale is not None else 1.0 / np.sqrt(shape[0])
        return (self.rng.standard_normal(shape) * scale).astype("float32")

    def linear(self, x: str, name: str, d_in: int, d_out: int, gemm: bool = False) -> str:
        """``x @ W + b`` as MatMul + Add, or as Gemm with transB=1 (2-D inputs only)."""
        b = self.const(f"{name}.bias", self.weight((d_out,), 0.1))
        if gemm:
            w = self.const(f"{name}.weight", self.weight((d_out, d_in)))
            return self.node("Gemm", [x, w, b], name=name, transB=1)
        w = self.const(f"{name}.weight", self.weight((d_in, d_out)))
        return self.node("Add", [self.node("MatMul", [x, w], name=name), b])

    def layer_norm(self, x: str, name: str, dim: int) -> str:
        scale = self.const(f"{name}.scale", np.ones(dim, "float32"))
        bias = self.const(f"{name}.bias", np.zeros(dim, "float32"))
        return self.node("LayerNormalization", [x, scale, bias], name=name, axis=-1, epsilon=1e-5)

    def gelu(self, x: str) -> str:
        inv_sqrt2 = self.const(f"gelu{self.count}.c", np.array(1 / np.sqrt(2), "float32"))
        half = self.const(f"gelu{self.count}.h", np.array(0.5, "float32"))
        one = self.const(f"gelu{self.count}.o", np.array(1.0, "float32"))
        erf = self.node("Erf", [self.node("Mul", [x, inv_sqrt2])])
        return self.node("Mul", [self.node("Mul", [x, half]), self.node("Add", [erf, one])])

    def conv(
        self,
        x: str,
        name: str,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> str:
        """A same-padded ``kernel x kernel`` convolution (NCHW, OIHW weights)."""
        fan_in = c_in // groups * kernel * kernel
        w = self.const(
            f"{name}.weight",
            self.weight((c_out, c_in // groups, kernel, kernel), np.sqrt(2.0 / fan_in)),
        )
        inputs = [x, w] + ([self.const(f"{name}.bias", self.weight((c_out,), 0.1))] if bias else [])
        pad = kernel // 2
        return self.node(
            "Conv",
            inputs,
            name=name,
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[pad] * 4,
            group=groups,
        )

    def batch_norm(self, x: str, name: str, channels: int) -> str:
        gamma = self.const(
            f"{name}.gamma", (1 + 0.1 * self.rng.standard_normal(channels)).astype("float32")
        )
        beta = self.const(
            f"{name}.beta", (0.1 * self.rng.standard_normal(channels)).astype("float32")
        )
        mean = self.const(
            f"{name}.mean", (0.1 * self.rng.standard_normal(channels)).astype("float32")
        )
        var = self.const(f"{name}.var", (1 + 0.1 * self.rng.random(channels)).astype("float32"))
        return self.node("BatchNormalization", [x, gamma, beta, mean, var], name=name, epsilon=1e-5)

    def conv_bn(
        self,
        x: str,
        name: str,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int = 1,
        relu: bool = True,
    ) -> str:
        y = self.batch_norm(self.conv(x, name, c_in, c_out, kernel, stride), f"{name}.bn", c_out)
        return self.node("Relu", [y]) if relu else y

    def reduce_mean(self, x: str, axis: int, opset: int) -> str:
        """ReduceMean over one axis, kept: ``axes`` is an attribute before opset 18 and an input from 18."""
        if opset >= 18:
            return self.node(
                "ReduceMean",
                [x, self.const(f"axes{self.count}", np.array([axis], "int64"))],
                keepdims=1,
            )
        return self.node("ReduceMean", [x], axes=[axis], keepdims=1)

    def layer_norm_decomposed(self, x: str, name: str, dim: int, opset: int) -> str:
        """LayerNorm as exporters wrote it before ``LayerNormalization`` (opset 17): mean, variance, scale."""
        centred = self.node("Sub", [x, self.reduce_mean(x, -1, opset)])
        variance = self.reduce_mean(self.node("Mul", [centred, centred]), -1, opset)
        eps = self.const(f"{name}.eps", np.array(1e-5, "float32"))
        normed = self.node("Div", [centred, self.node("Sqrt", [self.node("Add", [variance, eps])])])
        scale = self.const(
            f"{name}.scale", (1 + 0.1 * self.rng.standard_normal(dim)).astype("float32")
        )
        return self.node(
            "Add",
            [
                self.node("Mul", [normed, scale]),
                self.const(f"{name}.bias", self.weight((dim,), 0.1)),
            ],
        )

    def model(self, inputs, outputs, opset: int = OPSET) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "tvm_sparse_test", inputs, outputs, initializer=self.inits
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def mlp(batch: int = 8, sizes=(64, 128, 32), gemm: bool = True, seed: int = 0) -> onnx.ModelProto:
    """A ReLU MLP on ``[batch, sizes[0]]``; Gemm(transB=1) layers or MatMul + Add."""
    g = GraphBuilder(seed)
    x = "x"
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        x = g.linear(x, f"fc{i}", d_in, d_out, gemm=gemm)
        if i < len(sizes) - 2:
            x = g.node("Relu", [x])
    out = g.node("Identity", [x], name="y")
    return g.model(
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, sizes[0]])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, sizes[-1]])],
    )


def bert_encoder(
    hidden: int = 384,
    heads: int = 12,
    ffn: int = 1536,
    seq: int = 128,
    layers: int = 6,
    batch: int = 1,
    seed: int = 0,
) -> onnx.ModelProto:
    """A BERT-style encoder (post-LayerNorm) on ``[batch, seq, hidden]`` embeddings."""
    if hidden % heads:
        raise ValueError("hidden must be a multiple of heads")
    g = GraphBuilder(seed)
    dh = hidden // heads
    split = g.const("shape.split", np.array([batch, seq, heads, dh], "int64"))
    merge = g.const("shape.merge", np.array([batch, seq, hidden], "int64"))
    scale = g.const("attn.scale", np.array(1 / np.sqrt(dh), "float32"))
    x = "x"
    for i in range(layers):
        p = f"layer{i}"
        q = g.node(
            "Transpose",
            [g.node("Reshape", [g.linear(x, f"{p}.query", hidden, hidden), split])],
            perm=[0, 2, 1, 3],
        )
        k = g.node(
            "Transpose",
            [g.node("Reshape", [g.linear(x, f"{p}.key", hidden, hidden), split])],
            perm=[0, 2, 3, 1],
        )
        v = g.node(
            "Transpose",
            [g.node("Reshape", [g.linear(x, f"{p}.value", hidden, hidden), split])],
            perm=[0, 2, 1, 3],
        )
        probs = g.node("Softmax", [g.node("Mul", [g.node("MatMul", [q, k]), scale])], axis=-1)
        ctx = g.node(
            "Reshape",
            [g.node("Transpose", [g.node("MatMul", [probs, v])], perm=[0, 2, 1, 3]), merge],
        )
        attn = g.linear(ctx, f"{p}.attn_out", hidden, hidden)
        x = g.layer_norm(g.node("Add", [attn, x]), f"{p}.ln1", hidden)
        h = g.gelu(g.linear(x, f"{p}.ffn_in", hidden, ffn))
        x = g.layer_norm(
            g.node("Add", [g.linear(h, f"{p}.ffn_out", ffn, hidden), x]), f"{p}.ln2", hidden
        )
    out = g.node("Identity", [x], name="y")
    return g.model(
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, seq, hidden])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, seq, hidden])],
    )


def resnet(
    image: int = 224,
    width: int = 64,
    blocks=(3, 4, 6, 3),
    classes: int = 1000,
    batch: int = 1,
    seed: int = 0,
) -> onnx.ModelProto:
    """A ResNet-50-style CNN on ``[batch, 3, image, image]``: 7x7 stem, max pool,
    bottleneck stages (1x1, 3x3, 1x1 with BatchNorm, expansion 4), global
    average pool and a classifier. ``blocks`` gives the bottlenecks per stage."""
    g = GraphBuilder(seed)
    x = g.conv_bn("x", "stem", 3, width, 7, stride=2)
    x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    c_in = width
    for stage, count in enumerate(blocks):
        mid = width * 2**stage
        for i in range(count):
            p = f"stage{stage}.block{i}"
            stride = 2 if i == 0 and stage > 0 else 1
            h = g.conv_bn(x, f"{p}.conv1", c_in, mid, 1)
            h = g.conv_bn(h, f"{p}.conv2", mid, mid, 3, stride)
            h = g.conv_bn(h, f"{p}.conv3", mid, mid * 4, 1, relu=False)
            shortcut = (
                g.conv_bn(x, f"{p}.down", c_in, mid * 4, 1, stride, relu=False) if i == 0 else x
            )
            x = g.node("Relu", [g.node("Add", [h, shortcut])])
            c_in = mid * 4
    pooled = g.node("Flatten", [g.node("GlobalAveragePool", [x])])
    out = g.linear(pooled, "fc", c_in, classes, gemm=True)
    out = g.node("Identity", [out], name="y")
    return g.model(
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, image, image])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, classes])],
    )
