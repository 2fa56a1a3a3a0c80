"""ONNX models as exporters write them, built with ``onnx.helper`` and seeded weights.

Each builder mimics one exporter's graph for a model people export: the
exporter's node and tensor names, the op patterns it emits (run-time shape
computations, ``Constant`` nodes, Q/DQ pairs, casts, einsums), its opset and
its symbolic dimensions. A builder returns an :class:`ExportedModel`: the
model, the sizes of its symbolic dimensions to test it at, and valid inputs
for a size. Default widths are small (tests); the builders' parameters scale
them up (BERT-base, ResNet-50-like widths) for benchmarks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .models import GraphBuilder

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class ExportedModel:
    """An exporter-style model, the sizes to test it at and how to make its inputs.

    ``sizes`` gives values to the model's symbolic dimensions, keyed by their
    names in the graph (``{"batch": 3, "sequence": 32}``, tf2onnx's
    ``{"unk__12": 2}``; ``{}`` for a static model). ``float_model``, when
    set, is the float32 model the exported one was converted from, and what
    it is checked against.
    """

    name: str
    model: onnx.ModelProto
    sizes: tuple[dict[str, int], ...]
    make_inputs: Callable[[dict[str, tuple[int, ...]], np.random.Generator], Feeds]
    float_model: onnx.ModelProto | None = None

    def input_shapes(self, size: dict[str, int]) -> dict[str, tuple[int, ...]]:
        """Every input's shape at ``size``."""
        return {
            vi.name: tuple(
                d.dim_value if d.HasField("dim_value") else size[d.dim_param]
                for d in vi.type.tensor_type.shape.dim
            )
            for vi in self.model.graph.input
        }

    def inputs(self, size: dict[str, int], seed: int = 0) -> Feeds:
        """Valid inputs at ``size``, by input name (in the model's input order)."""
        return self.make_inputs(self.input_shapes(size), np.random.default_rng(seed))


def float_inputs(shapes: dict[str, tuple[int, ...]], rng: np.random.Generator) -> Feeds:
    """Standard-normal float32 values for every input."""
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


def token_inputs(vocab: int) -> Callable[[dict[str, tuple[int, ...]], np.random.Generator], Feeds]:
    """int64 token ids in ``[0, vocab)``; inputs named ``*mask*`` get ones followed by padding zeros
    (each row keeps at least one token, the first row all of them)."""

    def make(shapes, rng):
        feeds = {}
        for name, (batch, seq) in shapes.items():
            if "mask" in name:
                lengths = rng.integers(1, seq + 1, batch)
                lengths[0] = seq
                feeds[name] = (np.arange(seq)[None] < lengths[:, None]).astype(np.int64)
            else:
                feeds[name] = rng.integers(0, vocab, (batch, seq), dtype=np.int64)
        return feeds

    return make


class _Exporter(GraphBuilder):
    """A GraphBuilder that names nodes and tensors as an exporter does.

    ``op`` names a node ``name`` (a repeated name gets ``_1``, ``_2``... as
    torch and tf2onnx number them) and its output ``name + suffix``: torch
    writes ``/bert/embeddings/Gather`` -> ``/bert/embeddings/Gather_output_0``,
    tf2onnx ``model/conv2d/BiasAdd`` -> ``model/conv2d/BiasAdd:0``.
    ``constant_folding`` is torch's ``do_constant_folding``: whether the
    transposes of ``nn.Linear`` weights were folded into new initializers.
    """

    def __init__(self, seed: int, suffix: str, constant_folding: bool = True):
        super().__init__(seed)
        self.suffix = suffix
        self.constant_folding = constant_folding
        self.seen: Counter = Counter()
        self.matmul_weights = 0

    def op(
        self, op_type: str, inputs: list[str], name: str, output: str | None = None, **attrs
    ) -> str:
        repeat = self.seen[name]
        self.seen[name] += 1
        name = f"{name}_{repeat}" if repeat else name
        output = output or name + self.suffix
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=name, **attrs))
        return output

    def constant(self, value, scope: str) -> str:
        """A ``Constant`` node (torch: ``{scope}/Constant``); ints become int64, floats float32."""
        array = np.asarray(value)
        array = array.astype(np.float32 if array.dtype.kind == "f" else np.int64)
        return self.op("Constant", [], f"{scope}/Constant", value=numpy_helper.from_array(array))

    def size(self, x: str, index: int, scope: str) -> str:
        """torch's ``x.size(index)``: ``Shape -> Gather`` (a scalar)."""
        return self.op(
            "Gather",
            [self.op("Shape", [x], f"{scope}/Shape"), self.constant(index, scope)],
            f"{scope}/Gather",
        )

    def unsqueeze(self, x: str, axis: int, scope: str) -> str:
        return self.op("Unsqueeze", [x, self.constant([axis], scope)], f"{scope}/Unsqueeze")

    def slice(self, x: str, start, end, axis: int, scope: str) -> str:
        """torch's ``x[..., start:end]`` along ``axis``; ``start`` and ``end`` are ints or 1-element tensors."""
        bounds = [b if isinstance(b, str) else self.constant([b], scope) for b in (start, end)]
        return self.op(
            "Slice",
            [x, *bounds, self.constant([axis], scope), self.constant([1], scope)],
            f"{scope}/Slice",
        )

    def leading_dims(self, x: str, end: int, extra: list[int], scope: str) -> str:
        """torch's ``x.size()[:end] + tuple(extra)``, the shape of a ``view``: ``Shape -> Slice -> Concat``."""
        dims = self.slice(self.op("Shape", [x], f"{scope}/Shape"), 0, end, 0, scope)
        return self.op("Concat", [dims, self.constant(extra, scope)], f"{scope}/Concat", axis=0)

    def torch_linear(
        self,
        x: str,
        scope: str,
        prefix: str,
        d_in: int,
        d_out: int,
        weight: str | None = None,
        output: str | None = None,
    ) -> str:
        """``nn.Linear`` on a 3-D input as torch exports it: ``MatMul`` then ``Add(bias, .)``. With constant folding
        its weight is a fresh ``onnx::MatMul_<n>`` initializer (``[in, out]``, transposed at export); without, a
        ``Transpose`` of the ``[out, in]`` parameter: ``weight`` if given (a tied weight), else ``{prefix}.weight``."""
        if self.constant_folding:
            self.matmul_weights += 1
            w = self.const(f"onnx::MatMul_{1500 + self.matmul_weights}", self.weight((d_in, d_out)))
        else:
            w = self.op(
                "Transpose",
                [weight or self.const(f"{prefix}.weight", self.weight((d_out, d_in), d_in**-0.5))],
                f"{scope}/Transpose",
                perm=[1, 0],
            )
        y = self.op("MatMul", [x, w], f"{scope}/MatMul")
        return self.op(
            "Add",
            [self.const(f"{prefix}.bias", self.weight((d_out,), 0.1)), y],
            f"{scope}/Add",
            output,
        )

    def layer_norm_params(self, prefix: str, dim: int) -> list[str]:
        return [
            self.const(
                f"{prefix}.weight", (1 + 0.1 * self.rng.standard_normal(dim)).astype(np.float32)
            ),
            self.const(f"{prefix}.bias", self.weight((dim,), 0.1)),
        ]

    def conv_weight(self, shape) -> np.ndarray:
        """He-initialised ``[O, I, *kernel]`` weights."""
        return self.weight(shape, np.sqrt(2.0 / np.prod(shape[1:])))

    def bn_stats(self, channels: int) -> list[np.ndarray]:
        """BatchNorm scale, bias, running mean and variance."""
        r = self.rng
        return [
            (1 + 0.1 * r.standard_normal(channels)).astype(np.float32),
            (0.1 * r.standard_normal(channels)).astype(np.float32),
            (0.1 * r.standard_normal(channels)).astype(np.float32),
            (1 + 0.1 * r.random(channels)).astype(np.float32),
        ]

    def folded_conv(
        self, c_in: int, c_out: int, kernel: tuple[int, ...]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The weight and bias of a convolution with its BatchNorm folded in (as exporters fold it in eval mode)."""
        w = self.conv_weight((c_out, c_in, *kernel))
        gamma, beta, mean, var = self.bn_stats(c_out)
        scale = gamma / np.sqrt(var + 1e-5)
        return (w * scale.reshape(-1, *[1] * (w.ndim - 1))).astype(np.float32), (
            beta - mean * scale
        ).astype(np.float32)


def _tensor(name: str, elem: int, dims: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, dims)


def _model(
    g: GraphBuilder,
    inputs,
    outputs,
    opset: int,
    producer: tuple[str, str],
    graph_name: str,
    domains: tuple = (),
    sparse: tuple = (),
) -> onnx.ModelProto:
    graph = helper.make_graph(
        g.nodes, graph_name, inputs, outputs, initializer=g.inits, sparse_initializer=list(sparse)
    )
    model = helper.make_model(
        graph,
        opset_imports=[
            helper.make_opsetid("", opset),
            *(helper.make_opsetid(d, v) for d, v in domains),
        ],
        producer_name=producer[0],
        producer_version=producer[1],
    )
    model.ir_version = 8
    onnx.checker.check_model(
        model, full_check=not sparse
    )  # ONNX's shape inference does not read sparse initializers
    return model


_TORCH = ("pytorch", "2.1.0")
_TF2ONNX = ("tf2onnx", "1.16.1 15c810")


def torch_bert(
    vocab: int = 200,
    hidden: int = 64,
    heads: int = 4,
    ffn: int = 128,
    layers: int = 1,
    max_position: int = 64,
    mlm: bool = False,
    seed: int = 0,
) -> ExportedModel:
    """Hugging Face ``BertModel`` as ``torch.onnx.export`` (torch 2.1, opset 17, ``dynamic_axes``) writes it.

    Inputs ``input_ids`` and ``attention_mask`` (int64 ``[batch, sequence]``);
    outputs ``last_hidden_state`` and ``pooler_output``. Exercises: position
    ids sliced from the ``position_ids`` buffer by the sequence length
    (``Shape -> Gather -> Unsqueeze -> Slice``), token types expanded from a
    zero buffer, embeddings by ``Gather``; ``LayerNormalization``; attention
    reshapes whose shapes are built at run time (``Shape -> Gather ->
    Unsqueeze -> Concat -> Reshape``); the extended mask ``(1 - mask[:, None,
    None, :].float()) * -10000`` (``Unsqueeze``/``Cast``/``Sub``/``Mul``);
    ``Softmax``; Erf GELU; ``MatMul`` with ``onnx::MatMul_<n>`` weights and
    ``Add(bias, .)``; the pooler's ``Gemm(transB=1)`` and ``Tanh``; torch's
    ``Constant`` nodes and ``/scope/Op_output_0`` names. BERT-base:
    ``vocab=30522, hidden=768, heads=12, ffn=3072, layers=12, max_position=512``.

    ``mlm=True``: ``BertForMaskedLM`` exported with
    ``do_constant_folding=False``, which keeps its decoder tied to the word
    embeddings: every ``nn.Linear`` is ``MatMul(x, Transpose(weight))`` and
    the decoder's weight is ``bert.embeddings.word_embeddings.weight``, the
    table the embedding ``Gather`` reads; output ``logits``, no pooler.
    """
    if hidden % heads:
        raise ValueError("hidden must be a multiple of heads")
    g = _Exporter(seed, "_output_0", constant_folding=not mlm)
    dh = hidden // heads
    e = "/bert/embeddings"
    seq = g.unsqueeze(g.size("input_ids", 1, e), 0, e)
    positions = g.slice(
        g.const("bert.embeddings.position_ids", np.arange(max_position)[None]), 0, seq, 1, e
    )
    types = g.slice(
        g.const("bert.embeddings.token_type_ids", np.zeros((1, max_position), np.int64)),
        0,
        seq,
        1,
        e,
    )
    types = g.op(
        "Expand",
        [
            types,
            g.op(
                "Concat", [g.unsqueeze(g.size("input_ids", 0, e), 0, e), seq], f"{e}/Concat", axis=0
            ),
        ],
        f"{e}/Expand",
    )
    words = g.const("bert.embeddings.word_embeddings.weight", g.weight((vocab, hidden), 1.0))
    x = g.op("Gather", [words, "input_ids"], f"{e}/word_embeddings/Gather")
    for table, rows, ids in (
        ("token_type_embeddings", 2, types),
        ("position_embeddings", max_position, positions),
    ):
        embedded = g.op(
            "Gather",
            [g.const(f"bert.embeddings.{table}.weight", g.weight((rows, hidden), 1.0)), ids],
            f"{e}/{table}/Gather",
        )
        x = g.op("Add", [x, embedded], f"{e}/Add")

    def layer_norm(x, scope, prefix, output=None):
        return g.op(
            "LayerNormalization",
            [x, *g.layer_norm_params(prefix, hidden)],
            f"{scope}/LayerNormalization",
            output,
            axis=-1,
            epsilon=1e-12,
        )

    def gelu(x, scope):  # x * (1 + erf(x / sqrt(2))) * 0.5
        erf = g.op(
            "Erf",
            [g.op("Div", [x, g.constant(np.sqrt(2.0), scope)], f"{scope}/Div")],
            f"{scope}/Erf",
        )
        y = g.op(
            "Mul", [x, g.op("Add", [erf, g.constant(1.0, scope)], f"{scope}/Add")], f"{scope}/Mul"
        )
        return g.op("Mul", [y, g.constant(0.5, scope)], f"{scope}/Mul")

    x = layer_norm(x, f"{e}/LayerNorm", "bert.embeddings.LayerNorm")
    mask = g.op(
        "Cast",
        [g.unsqueeze(g.unsqueeze("attention_mask", 1, "/bert"), 2, "/bert")],
        "/bert/Cast",
        to=TensorProto.FLOAT,
    )
    mask = g.op(
        "Mul",
        [g.op("Sub", [g.constant(1.0, "/bert"), mask], "/bert/Sub"), g.constant(-10000.0, "/bert")],
        "/bert/Mul",
    )

    for i in range(layers):
        p, s = f"bert.encoder.layer.{i}", f"/bert/encoder/layer.{i}"
        a = f"{s}/attention/self"

        def heads_of(
            name,
        ):  # transpose_for_scores: x.view(x.size()[:-1] + (heads, dh)).permute(0, 2, 1, 3)
            t = g.torch_linear(x, f"{a}/{name}", f"{p}.attention.self.{name}", hidden, hidden)
            shape = g.op(
                "Concat",
                [
                    g.unsqueeze(g.size(t, 0, a), 0, a),
                    g.unsqueeze(g.size(t, 1, a), 0, a),
                    g.constant([heads], a),
                    g.constant([dh], a),
                ],
                f"{a}/Concat",
                axis=0,
            )
            return g.op(
                "Transpose",
                [g.op("Reshape", [t, shape], f"{a}/Reshape")],
                f"{a}/Transpose",
                perm=[0, 2, 1, 3],
            )

        q, k, v = heads_of("query"), heads_of("key"), heads_of("value")
        scores = g.op(
            "MatMul",
            [q, g.op("Transpose", [k], f"{a}/Transpose", perm=[0, 1, 3, 2])],
            f"{a}/MatMul",
        )
        scores = g.op(
            "Add", [g.op("Div", [scores, g.constant(np.sqrt(dh), a)], f"{a}/Div"), mask], f"{a}/Add"
        )
        ctx = g.op("MatMul", [g.op("Softmax", [scores], f"{a}/Softmax", axis=-1), v], f"{a}/MatMul")
        ctx = g.op("Transpose", [ctx], f"{a}/Transpose", perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, g.leading_dims(ctx, -2, [hidden], a)], f"{a}/Reshape")
        o = f"{s}/attention/output"
        h = g.op(
            "Add",
            [g.torch_linear(ctx, f"{o}/dense", f"{p}.attention.output.dense", hidden, hidden), x],
            f"{o}/Add",
        )
        x = layer_norm(h, f"{o}/LayerNorm", f"{p}.attention.output.LayerNorm")
        h = gelu(
            g.torch_linear(x, f"{s}/intermediate/dense", f"{p}.intermediate.dense", hidden, ffn),
            f"{s}/intermediate/intermediate_act_fn",
        )
        o = f"{s}/output"
        h = g.op(
            "Add",
            [g.torch_linear(h, f"{o}/dense", f"{p}.output.dense", ffn, hidden), x],
            f"{o}/Add",
        )
        x = layer_norm(
            h,
            f"{o}/LayerNorm",
            f"{p}.output.LayerNorm",
            output="last_hidden_state" if i == layers - 1 and not mlm else None,
        )

    if mlm:
        c = "/cls/predictions/transform"
        h = gelu(
            g.torch_linear(x, f"{c}/dense", "cls.predictions.transform.dense", hidden, hidden),
            f"{c}/transform_act_fn",
        )
        h = layer_norm(h, f"{c}/LayerNorm", "cls.predictions.transform.LayerNorm")
        g.torch_linear(
            h,
            "/cls/predictions/decoder",
            "cls.predictions",
            hidden,
            vocab,
            weight=words,
            output="logits",
        )
        outputs = [_tensor("logits", TensorProto.FLOAT, ["batch", "sequence", vocab])]
    else:
        first = g.op("Gather", [x, g.constant(0, "/bert/pooler")], "/bert/pooler/Gather", axis=1)
        pooler = [
            g.const("bert.pooler.dense.weight", g.weight((hidden, hidden))),
            g.const("bert.pooler.dense.bias", g.weight((hidden,), 0.1)),
        ]
        pooled = g.op(
            "Gemm", [first, *pooler], "/bert/pooler/dense/Gemm", alpha=1.0, beta=1.0, transB=1
        )
        g.op("Tanh", [pooled], "/bert/pooler/activation/Tanh", output="pooler_output")
        outputs = [
            _tensor("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", hidden]),
            _tensor("pooler_output", TensorProto.FLOAT, ["batch", hidden]),
        ]
    inputs = [
        _tensor(n, TensorProto.INT64, ["batch", "sequence"])
        for n in ("input_ids", "attention_mask")
    ]
    model = _model(g, inputs, outputs, 17, _TORCH, "main_graph")
    sizes = ({"batch": 1, "sequence": 7}, {"batch": 3, "sequence": 32})
    return ExportedModel(
        "torch_bert_mlm_tied" if mlm else "torch_bert", model, sizes, token_inputs(vocab)
    )


def tf2onnx_cnn(
    image: int = 32, width: int = 16, classes: int = 10, seed: int = 0
) -> ExportedModel:
    """A Keras functional CNN on NHWC images as tf2onnx 1.16 (``--opset 13``) converts a saved model.

    Input ``input_1:0`` ``[unk__12, image, image, 3]`` behind a leading
    ``Transpose`` to NCHW; convolutions with their bias (``BiasAdd`` names,
    ``.../ReadVariableOp:0`` weights); Keras ``padding="same"`` written as
    explicit pads, asymmetric ``[0, 0, 1, 1]`` on the stride-2 convolution;
    a ``BatchNormalization`` left unfolded after one convolution and folded
    into another; ``MaxPool``; the ``Transpose`` back to NHWC before Keras'
    ``Flatten``, which is ``Shape -> Gather -> Cast -> Slice -> Concat ->
    Cast -> Reshape`` (batch symbolic; the ``Gather`` permutes the NCHW shape
    as tf2onnx's transpose optimizer writes it); dense layers as ``MatMul``
    + ``Add``; ``Softmax``; output ``Identity:0``.
    """
    g = _Exporter(seed, ":0")

    def conv(x, layer, c_in, c_out, stride, pads, w=None, b=None):
        if w is None:
            w, b = g.conv_weight((c_out, c_in, 3, 3)), g.weight((c_out,), 0.1)
        y = g.op(
            "Conv",
            [
                x,
                g.const(f"model/{layer}/Conv2D/ReadVariableOp:0", w),
                g.const(f"model/{layer}/BiasAdd/ReadVariableOp:0", b),
            ],
            f"model/{layer}/BiasAdd",
            kernel_shape=[3, 3],
            strides=[stride, stride],
            pads=pads,
            dilations=[1, 1],
            group=1,
        )
        return g.op("Relu", [y], f"model/{layer}/Relu")

    x = g.op("Transpose", ["input_1:0"], "model/conv2d/BiasAdd__6", perm=[0, 3, 1, 2])
    x = conv(x, "conv2d", 3, width, 1, [1, 1, 1, 1])
    bn = "model/batch_normalization/FusedBatchNormV3"
    x = g.op(
        "BatchNormalization",
        [
            x,
            *(
                g.const(f"{bn}/ReadVariableOp{suffix}:0", a)
                for suffix, a in zip(("", "_1", "_2", "_3"), g.bn_stats(width))
            ),
        ],
        bn,
        epsilon=1e-3,
    )
    x = conv(
        x, "conv2d_1", width, 2 * width, 2, [0, 0, 1, 1]
    )  # SAME at stride 2 pads after, not before
    x = g.op(
        "MaxPool",
        [x],
        "model/max_pooling2d/MaxPool",
        kernel_shape=[2, 2],
        strides=[2, 2],
        pads=[0, 0, 0, 0],
    )
    x = conv(
        x,
        "conv2d_2",
        2 * width,
        2 * width,
        1,
        [1, 1, 1, 1],
        *g.folded_conv(2 * width, 2 * width, (3, 3)),
    )
    f = "model/flatten"  # tf2onnx moved the Transpose below Shape: Gather picks the NHWC dims out of the NCHW shape
    shape = g.op(
        "Gather",
        [
            g.op("Shape", [x], f"{f}/Shape"),
            g.const(f"{f}/Shape__29:0", np.array([0, 2, 3, 1], np.int64)),
        ],
        f"{f}/Shape__30",
        axis=0,
    )
    x = g.op("Transpose", [x], "model/conv2d_2/Relu__28", perm=[0, 2, 3, 1])
    batch = g.op(
        "Slice",
        [
            g.op("Cast", [shape], f"{f}/Shape__31", to=TensorProto.INT32),
            g.const(f"{f}/strided_slice/stack:0", np.array([0], np.int64)),
            g.const(f"{f}/strided_slice/stack_1:0", np.array([1], np.int64)),
            g.const(f"{f}/strided_slice/stack_2:0", np.array([0], np.int64)),
        ],
        f"{f}/strided_slice",
    )
    shape = g.op(
        "Concat",
        [batch, g.const(f"{f}/Const:0", np.array([-1], np.int32))],
        f"{f}/Reshape/shape",
        axis=0,
    )
    x = g.op(
        "Reshape",
        [x, g.op("Cast", [shape], f"{f}/Reshape__33", to=TensorProto.INT64)],
        f"{f}/Reshape",
    )
    flat = 2 * width * (image // 4) ** 2
    for layer, d_in, d_out in (("dense", flat, 4 * width), ("dense_1", 4 * width, classes)):
        x = g.op(
            "MatMul",
            [x, g.const(f"model/{layer}/MatMul/ReadVariableOp:0", g.weight((d_in, d_out)))],
            f"model/{layer}/MatMul",
        )
        x = g.op(
            "Add",
            [x, g.const(f"model/{layer}/BiasAdd/ReadVariableOp:0", g.weight((d_out,), 0.1))],
            f"model/{layer}/BiasAdd",
        )
        x = (
            g.op("Relu", [x], f"model/{layer}/Relu")
            if layer == "dense"
            else g.op("Softmax", [x], f"model/{layer}/Softmax", output="Identity:0", axis=1)
        )
    model = _model(
        g,
        [_tensor("input_1:0", TensorProto.FLOAT, ["unk__12", image, image, 3])],
        [_tensor("Identity:0", TensorProto.FLOAT, ["unk__12", classes])],
        13,
        _TF2ONNX,
        "tf2onnx",
    )
    return ExportedModel("tf2onnx_cnn", model, ({"unk__12": 1}, {"unk__12": 4}), float_inputs)


def keras2onnx_cnn(
    image: int = 30, width: int = 16, classes: int = 10, seed: int = 0
) -> ExportedModel:
    """A Keras CNN with ``padding="same"`` as keras2onnx 1.7 (opset 11) converts it.

    Input ``input_1`` ``[N, image, image, 3]`` behind a ``Transpose``;
    convolutions with ``auto_pad="SAME_UPPER"`` (a 5x5 stride-2 one on an
    even input, so its padding is uneven), a depthwise convolution
    (``group`` = channels), ReLU, ``GlobalAveragePool`` + ``Flatten``, a dense
    layer as ``MatMul`` + ``Add`` and ``Softmax``; keras2onnx's layer-named
    nodes and ``:0`` tensor names.
    """
    g = _Exporter(seed, ":0")

    def conv(x, layer, c_in, c_out, kernel, stride=1, group=1):
        w = g.const(f"{layer}/kernel:0", g.conv_weight((c_out, c_in // group, kernel, kernel)))
        y = g.op(
            "Conv",
            [x, w, g.const(f"{layer}/bias:0", g.weight((c_out,), 0.1))],
            layer,
            auto_pad="SAME_UPPER",
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            group=group,
        )
        return g.op("Relu", [y], f"{layer}/Relu")

    x = g.op("Transpose", ["input_1"], "Transpose", perm=[0, 3, 1, 2])
    x = conv(x, "conv2d", 3, width, 3)
    x = conv(x, "conv2d_1", width, 2 * width, 5, stride=2)
    x = conv(x, "depthwise_conv2d", 2 * width, 2 * width, 3, group=2 * width)
    x = conv(x, "conv2d_2", 2 * width, 4 * width, 1)
    x = g.op(
        "Flatten",
        [g.op("GlobalAveragePool", [x], "global_average_pooling2d")],
        "global_average_pooling2d/Flatten",
        axis=1,
    )
    x = g.op(
        "MatMul", [x, g.const("dense/kernel:0", g.weight((4 * width, classes)))], "dense/MatMul"
    )
    x = g.op("Add", [x, g.const("dense/bias:0", g.weight((classes,), 0.1))], "dense/BiasAdd")
    g.op("Softmax", [x], "dense/Softmax", output="dense", axis=1)
    model = _model(
        g,
        [_tensor("input_1", TensorProto.FLOAT, ["N", image, image, 3])],
        [_tensor("dense", TensorProto.FLOAT, ["N", classes])],
        11,
        ("keras2onnx", "1.7.0"),
        "keras_model",
    )
    return ExportedModel("keras2onnx_cnn", model, ({"N": 1}, {"N": 3}), float_inputs)


def torch_audio_cnn(
    width: int = 16,
    classes: int = 8,
    mels: int | None = None,
    n_fft: int = 64,
    hop: int = 16,
    seed: int = 0,
) -> ExportedModel:
    """An M5-style 1-D CNN on raw audio as ``torch.onnx.export`` (torch 2.1, opset 17, eval mode) writes it.

    Input ``waveform`` ``[batch, 1, samples]`` (both symbolic). Four 1-D
    ``Conv`` layers (a 40-tap stride-8 padded one first) whose BatchNorm
    torch folded into ``onnx::Conv_<n>`` weights, ``Relu``, ``MaxPool`` over
    time, the mean over time (``ReduceMean``), a ``Gemm(transB=1)``
    classifier and ``LogSoftmax``; the output keeps torch's numeric name.

    With ``mels``, an nnAudio-style log-mel front end replaces the first
    layer: the STFT as two strided 1-D ``Conv`` with fixed windowed DFT
    kernels after a reflect ``Pad`` (``center=True``), the power
    ``real^2 + imag^2`` (``Pow``, ``Add``), the filterbank as
    ``MatMul(mel_basis, power)`` (the constant on the left) and ``Log``.
    """
    g = _Exporter(seed, "_output_0")
    x = "waveform"
    if mels:
        bins = n_fft // 2 + 1
        x = g.op(
            "Pad",
            [x, g.constant([0, 0, n_fft // 2, 0, 0, n_fft // 2], "/stft")],
            "/stft/Pad",
            mode="reflect",
        )
        phase = 2 * np.pi * np.outer(np.arange(bins), np.arange(n_fft)) / n_fft
        window = np.hanning(n_fft + 1)[:-1]
        power = []
        for name, kernel in (("wcos", np.cos(phase)), ("wsin", -np.sin(phase))):
            w = g.const(f"stft.{name}", (kernel * window)[:, None, :].astype(np.float32))
            y = g.op(
                "Conv",
                [x, w],
                "/stft/Conv",
                dilations=[1],
                group=1,
                kernel_shape=[n_fft],
                pads=[0, 0],
                strides=[hop],
            )
            power.append(g.op("Pow", [y, g.constant(2.0, "")], "/Pow"))
        centers = np.linspace(0, bins - 1, mels + 2)
        mel_basis = np.maximum(
            0, 1 - np.abs(np.arange(bins)[None] - centers[1:-1, None]) / (centers[1] - centers[0])
        )
        x = g.op(
            "MatMul",
            [g.const("mel_basis", mel_basis.astype(np.float32)), g.op("Add", power, "/Add")],
            "/MatMul",
        )
        x = g.op("Log", [g.op("Add", [x, g.constant(1e-6, "")], "/Add")], "/Log")
        layers = [(mels, width, 3, 1, 1)]
    else:
        layers = [(1, width, 40, 8, 16)]
    layers += [
        (width, width, 3, 1, 1),
        (width, 2 * width, 3, 1, 1),
        (2 * width, 2 * width, 3, 1, 1),
    ]
    for i, (c_in, c_out, kernel, stride, pad) in enumerate(layers, start=1):
        w, b = g.folded_conv(c_in, c_out, (kernel,))
        x = g.op(
            "Conv",
            [x, g.const(f"onnx::Conv_{100 + 2 * i}", w), g.const(f"onnx::Conv_{101 + 2 * i}", b)],
            f"/conv{i}/Conv",
            dilations=[1],
            group=1,
            kernel_shape=[kernel],
            pads=[pad, pad],
            strides=[stride],
        )
        x = g.op("Relu", [x], "/Relu")
        if i < len(layers):
            x = g.op(
                "MaxPool",
                [x],
                f"/pool{i}/MaxPool",
                ceil_mode=0,
                kernel_shape=[4],
                pads=[0, 0],
                strides=[4],
            )
    x = g.op("ReduceMean", [x], "/ReduceMean", axes=[-1], keepdims=0)
    x = g.op(
        "Gemm",
        [
            x,
            g.const("fc1.weight", g.weight((classes, 2 * width), (2 * width) ** -0.5)),
            g.const("fc1.bias", g.weight((classes,), 0.1)),
        ],
        "/fc1/Gemm",
        alpha=1.0,
        beta=1.0,
        transB=1,
    )
    g.op("LogSoftmax", [x], "/LogSoftmax", output="63", axis=1)
    model = _model(
        g,
        [_tensor("waveform", TensorProto.FLOAT, ["batch", 1, "samples"])],
        [_tensor("63", TensorProto.FLOAT, ["batch", classes])],
        17,
        _TORCH,
        "main_graph",
    )
    sizes = ({"batch": 1, "samples": 1600}, {"batch": 2, "samples": 4000})
    return ExportedModel(
        "torch_audio_mel_cnn" if mels else "torch_audio_cnn", model, sizes, float_inputs
    )


def torch_conv_decoder(
    latent: int = 16, width: int = 16, size: int = 8, seed: int = 0
) -> ExportedModel:
    """A convolutional decoder (``nn.Sequential``) as ``torch.onnx.export`` (torch 2.1, opset 17) writes it.

    ``Conv -> Relu -> ConvTranspose (4x4, stride 2, pad 1) -> Relu ->
    ConvTranspose (3x3, stride 2, pad 1, output_padding 1) -> Sigmoid`` on
    ``z`` ``[batch, latent, size, size]``, batch symbolic; weights keep their
    ``decoder.<i>.weight`` names (``[in, out, kh, kw]`` for the transposed ones).
    """
    g = _Exporter(seed, "_output_0")
    d = "/decoder/decoder"

    def layer(
        x, op, index, shape, scale, **attrs
    ):  # weight [out, in, k, k] (Conv) or [in, out, k, k] (ConvTranspose)
        w = g.const(f"decoder.{index}.weight", g.weight(shape, scale))
        b = g.const(f"decoder.{index}.bias", g.weight((shape[0 if op == "Conv" else 1],), 0.1))
        k = shape[-1]
        return g.op(
            op,
            [x, w, b],
            f"{d}.{index}/{op}",
            dilations=[1, 1],
            group=1,
            kernel_shape=[k, k],
            pads=[1, 1, 1, 1],
            **attrs,
        )

    x = g.op(
        "Relu",
        [
            layer(
                "z", "Conv", 0, (2 * width, latent, 3, 3), np.sqrt(2 / (9 * latent)), strides=[1, 1]
            )
        ],
        f"{d}.1/Relu",
    )
    x = g.op(
        "Relu",
        [
            layer(
                x, "ConvTranspose", 2, (2 * width, width, 4, 4), (8 * width) ** -0.5, strides=[2, 2]
            )
        ],
        f"{d}.3/Relu",
    )
    x = layer(
        x,
        "ConvTranspose",
        4,
        (width, 3, 3, 3),
        (2 * width) ** -0.5,
        output_padding=[1, 1],
        strides=[2, 2],
    )
    g.op("Sigmoid", [x], f"{d}.5/Sigmoid", output="image")
    model = _model(
        g,
        [_tensor("z", TensorProto.FLOAT, ["batch", latent, size, size])],
        [_tensor("image", TensorProto.FLOAT, ["batch", 3, 4 * size, 4 * size])],
        17,
        _TORCH,
        "main_graph",
    )
    return ExportedModel("torch_conv_decoder", model, ({"batch": 1}, {"batch": 2}), float_inputs)


def torch_squeezenet(
    image: int = 38, width: int = 16, fires=(1,), classes: int = 10, seed: int = 0
) -> ExportedModel:
    """torchvision's ``squeezenet1_1`` as torch 1.x's ``torch.onnx.export`` (opset 11) wrote it.

    A 3x3 stride-2 stem; ``MaxPool`` with ``ceil_mode=1`` (on the default
    38x38 input the ceil makes the pool's output 9x9 instead of 8x8); fire
    modules (squeeze 1x1, expand 1x1 and 3x3 ``Concat``-ed on channels), the
    classifier's ``Dropout`` left in before the final 1x1 convolution,
    ``GlobalAveragePool`` and ``Flatten``; batch symbolic. ``width=64,
    fires=(2, 2, 4), image=224, classes=1000`` has squeezenet1_1's layers and
    widths, but for its last two fires (64/256 there, 48/192 here).
    """
    g = _Exporter(seed, "_output_0")

    def conv(x, scope, prefix, c_in, c_out, kernel, stride=1, pad=0):
        w, b = (
            g.const(f"{prefix}.weight", g.conv_weight((c_out, c_in, kernel, kernel))),
            g.const(f"{prefix}.bias", g.weight((c_out,), 0.1)),
        )
        return g.op(
            "Conv",
            [x, w, b],
            f"{scope}/Conv",
            dilations=[1, 1],
            group=1,
            kernel_shape=[kernel, kernel],
            pads=[pad] * 4,
            strides=[stride, stride],
        )

    def pool(x, index):
        return g.op(
            "MaxPool",
            [x],
            f"/features/features.{index}/MaxPool",
            ceil_mode=1,
            kernel_shape=[3, 3],
            pads=[0, 0, 0, 0],
            strides=[2, 2],
        )

    x = g.op(
        "Relu",
        [conv("input", "/features/features.0", "features.0", 3, width, 3, stride=2)],
        "/features/features.1/Relu",
    )
    x = pool(x, 2)
    index, c_in = 3, width
    for stage, count in enumerate(fires):
        squeeze, expand = width // 4 * (stage + 1), width * (stage + 1)
        for _ in range(count):
            s, p = f"/features/features.{index}", f"features.{index}"
            h = g.op(
                "Relu",
                [conv(x, f"{s}/squeeze", f"{p}.squeeze", c_in, squeeze, 1)],
                f"{s}/squeeze_activation/Relu",
            )
            e1 = g.op(
                "Relu",
                [conv(h, f"{s}/expand1x1", f"{p}.expand1x1", squeeze, expand, 1)],
                f"{s}/expand1x1_activation/Relu",
            )
            e3 = g.op(
                "Relu",
                [conv(h, f"{s}/expand3x3", f"{p}.expand3x3", squeeze, expand, 3, pad=1)],
                f"{s}/expand3x3_activation/Relu",
            )
            x, c_in, index = g.op("Concat", [e1, e3], f"{s}/Concat", axis=1), 2 * expand, index + 1
        if stage < len(fires) - 1:
            x, index = pool(x, index), index + 1
    x = g.op("Dropout", [x], "/classifier/classifier.0/Dropout", ratio=0.5)
    x = g.op(
        "Relu",
        [conv(x, "/classifier/classifier.1", "classifier.1", c_in, classes, 1)],
        "/classifier/classifier.2/Relu",
    )
    x = g.op("GlobalAveragePool", [x], "/classifier/classifier.3/GlobalAveragePool")
    g.op("Flatten", [x], "/Flatten", output="output", axis=1)
    model = _model(
        g,
        [_tensor("input", TensorProto.FLOAT, ["batch", 3, image, image])],
        [_tensor("output", TensorProto.FLOAT, ["batch", classes])],
        11,
        ("pytorch", "1.13.1"),
        "main_graph",
    )
    return ExportedModel("torch_squeezenet", model, ({"batch": 1}, {"batch": 2}), float_inputs)


def fp16_cnn(image: int = 16, width: int = 16, classes: int = 10, seed: int = 0) -> ExportedModel:
    """A small torch CNN converted by onnxconverter-common 1.14's ``convert_float_to_float16(model, keep_io_types=True)``.

    float16 weights and intermediate tensors, the float32 input cast in
    (``graph_input_cast0`` -> ``graph_input_cast_0``) and the output cast
    out (``graph_output_cast0``); ``Conv``, ``Relu``, ``GlobalAveragePool``,
    ``Flatten``, ``Gemm(transB=1)``. ``float_model`` is the same network in
    float32 with the float16 weights widened: what a float32 computation of
    the converted model gives.
    """

    def build(half: bool) -> onnx.ModelProto:
        g = _Exporter(seed, "_output_0")
        dtype = np.float16 if half else np.float32

        def conv(x, name, c_in, c_out, stride):
            w, b = (
                g.conv_weight((c_out, c_in, 3, 3)).astype(np.float16),
                g.weight((c_out,), 0.1).astype(np.float16),
            )
            y = g.op(
                "Conv",
                [
                    x,
                    g.const(f"{name}.weight", w.astype(dtype)),
                    g.const(f"{name}.bias", b.astype(dtype)),
                ],
                f"/{name}/Conv",
                dilations=[1, 1],
                group=1,
                kernel_shape=[3, 3],
                pads=[1, 1, 1, 1],
                strides=[stride, stride],
            )
            return g.op("Relu", [y], "/Relu")

        x = (
            g.op(
                "Cast",
                ["input"],
                "graph_input_cast0",
                output="graph_input_cast_0",
                to=TensorProto.FLOAT16,
            )
            if half
            else "input"
        )
        x = conv(x, "conv1", 3, width, 1)
        x = conv(x, "conv2", width, 2 * width, 2)
        x = g.op(
            "Flatten",
            [g.op("GlobalAveragePool", [x], "/pool/GlobalAveragePool")],
            "/Flatten",
            axis=1,
        )
        w, b = (
            g.weight((classes, 2 * width)).astype(np.float16),
            g.weight((classes,), 0.1).astype(np.float16),
        )
        x = g.op(
            "Gemm",
            [x, g.const("fc.weight", w.astype(dtype)), g.const("fc.bias", b.astype(dtype))],
            "/fc/Gemm",
            output="graph_output_cast_0" if half else "output",
            alpha=1.0,
            beta=1.0,
            transB=1,
        )
        if half:
            g.op("Cast", [x], "graph_output_cast0", output="output", to=TensorProto.FLOAT)
        return _model(
            g,
            [_tensor("input", TensorProto.FLOAT, ["batch", 3, image, image])],
            [_tensor("output", TensorProto.FLOAT, ["batch", classes])],
            17,
            _TORCH,
            "main_graph",
        )

    return ExportedModel(
        "fp16_cnn",
        build(half=True),
        ({"batch": 1}, {"batch": 3}),
        float_inputs,
        float_model=build(half=False),
    )


def qdq_cnn(image: int = 16, width: int = 16, classes: int = 10, seed: int = 0) -> ExportedModel:
    """A small torch CNN quantized by onnxruntime 1.16's ``quantize_static`` (``QuantFormat.QDQ``,
    ``per_channel=True``, uint8 activations, int8 weights).

    ``QuantizeLinear``/``DequantizeLinear`` pairs on activations (named
    ``<tensor>_QuantizeLinear``, scales ``<tensor>_scale``); int8 weights
    ``<w>_quantized`` behind ``DequantizeLinear(axis=0)`` with per-channel
    scales; int32 biases ``<b>_quantized`` scaled by input scale x weight
    scale; the ``Relu`` after each convolution removed, its clamp left to
    the uint8 zero point 0; ``GlobalAveragePool`` and ``Flatten`` each
    re-quantized; ``Gemm(transB=1)``; the ``com.microsoft`` opset import.
    """
    g = _Exporter(seed, "")

    def qdq(x, scale, zero_point):
        s, z = (
            g.const(f"{x}_scale", np.float32(scale)),
            g.const(f"{x}_zero_point", np.uint8(zero_point)),
        )
        q = g.op(
            "QuantizeLinear", [x, s, z], f"{x}_QuantizeLinear", output=f"{x}_QuantizeLinear_Output"
        )
        return g.op(
            "DequantizeLinear",
            [q, s, z],
            f"{x}_DequantizeLinear",
            output=f"{x}_DequantizeLinear_Output",
        )

    def weights(name, w, b, x_scale):
        scale = (np.abs(w.reshape(len(w), -1)).max(axis=1) / 127).astype(np.float32)
        q = np.clip(np.rint(w / scale.reshape(-1, *[1] * (w.ndim - 1))), -127, 127).astype(np.int8)
        dq_w = g.op(
            "DequantizeLinear",
            [
                g.const(f"{name}.weight_quantized", q),
                g.const(f"{name}.weight_scale", scale),
                g.const(f"{name}.weight_zero_point", np.zeros(len(w), np.int8)),
            ],
            f"{name}.weight_DequantizeLinear",
            output=f"{name}.weight_DequantizeLinear_Output",
            axis=0,
        )
        b_scale = (scale * x_scale).astype(np.float32)
        dq_b = g.op(
            "DequantizeLinear",
            [
                g.const(f"{name}.bias_quantized", np.rint(b / b_scale).astype(np.int32)),
                g.const(f"{name}.bias_quantized_scale", b_scale),
                g.const(f"{name}.bias_quantized_zero_point", np.zeros(len(b), np.int32)),
            ],
            f"{name}.bias_quantized_DequantizeLinear",
            output=f"{name}.bias",
            axis=0,
        )
        return dq_w, dq_b

    x_scale = 8 / 255
    x = qdq("input", x_scale, 128)
    for i, (c_in, c_out, stride) in enumerate([(3, width, 1), (width, 2 * width, 2)], start=1):
        w, b = weights(
            f"conv{i}", g.conv_weight((c_out, c_in, 3, 3)), g.weight((c_out,), 0.1), x_scale
        )
        y = g.op(
            "Conv",
            [x, w, b],
            f"/conv{i}/Conv",
            output=f"/relu{i}/Relu_output_0",
            dilations=[1, 1],
            group=1,
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            strides=[stride, stride],
        )
        x_scale = 6 / 255
        x = qdq(y, x_scale, 0)  # the removed Relu: the uint8 range starts at 0
    x = qdq(
        g.op(
            "GlobalAveragePool",
            [x],
            "/pool/GlobalAveragePool",
            output="/pool/GlobalAveragePool_output_0",
        ),
        2 / 255,
        0,
    )
    x = qdq(g.op("Flatten", [x], "/Flatten", output="/Flatten_output_0", axis=1), 2 / 255, 0)
    w, b = weights("fc", g.weight((classes, 2 * width)), g.weight((classes,), 0.1), 2 / 255)
    y = g.op(
        "Gemm",
        [x, w, b],
        "/fc/Gemm",
        output="output_QuantizeLinear_Input",
        alpha=1.0,
        beta=1.0,
        transB=1,
    )
    s, z = g.const("output_scale", np.float32(8 / 255)), g.const("output_zero_point", np.uint8(128))
    q = g.op(
        "QuantizeLinear", [y, s, z], "output_QuantizeLinear", output="output_QuantizeLinear_Output"
    )
    g.op("DequantizeLinear", [q, s, z], "output_DequantizeLinear", output="output")
    model = _model(
        g,
        [_tensor("input", TensorProto.FLOAT, ["batch", 3, image, image])],
        [_tensor("output", TensorProto.FLOAT, ["batch", classes])],
        13,
        ("onnx.quantize", "0.1.0"),
        "main_graph",
        domains=(("com.microsoft", 1),),
    )
    return ExportedModel("qdq_cnn", model, ({"batch": 1}, {"batch": 2}), float_inputs)


def tf2onnx_einsum_encoder(
    dim: int = 32, heads: int = 4, ffn: int = 64, seed: int = 0
) -> ExportedModel:
    """A Keras ``MultiHeadAttention`` + ``EinsumDense`` block as tf2onnx 1.16 (``--opset 13``) converts it.

    ``Einsum`` everywhere Keras has one: projections to heads
    ``abc,cde->abde`` (bias ``[heads, dh]``), scores ``aecd,abcd->acbe``,
    context ``acbe,aecd->abcd``, the output projection ``abcd,cde->abe`` and
    the FFN's ``abc,cd->abd``; Keras' ``LayerNormalization`` as tf2onnx
    decomposes ``tf.nn.batch_normalization`` (``ReduceMean``, ``Sub``/``Mul``
    for the squared difference, ``Sqrt`` + ``Reciprocal`` for ``Rsqrt``);
    batch (``unk__6``) and sequence (``unk__7``) symbolic.
    """
    g = _Exporter(seed, ":0")
    dh = dim // heads
    mha = "model/multi_head_attention"

    def einsum_dense(x, scope, equation, w_shape, b_shape):
        y = g.op(
            "Einsum",
            [
                x,
                g.const(
                    f"{scope}/einsum/Einsum/ReadVariableOp:0",
                    g.weight(w_shape, np.prod(w_shape[: len(w_shape) - len(b_shape)]) ** -0.5),
                ),
            ],
            f"{scope}/einsum/Einsum",
            equation=equation,
        )
        return g.op(
            "Add",
            [y, g.const(f"{scope}/add/ReadVariableOp:0", g.weight(b_shape, 0.1))],
            f"{scope}/add",
        )

    q, k, v = (
        einsum_dense("input_1", f"{mha}/{n}", "abc,cde->abde", (dim, heads, dh), (heads, dh))
        for n in ("query", "key", "value")
    )
    q = g.op("Mul", [q, g.const(f"{mha}/Mul/y:0", np.float32(dh**-0.5))], f"{mha}/Mul")
    scores = g.op("Einsum", [k, q], f"{mha}/einsum/Einsum", equation="aecd,abcd->acbe")
    probs = g.op("Softmax", [scores], f"{mha}/softmax/Softmax", axis=-1)
    ctx = g.op("Einsum", [probs, v], f"{mha}/einsum_1/Einsum", equation="acbe,aecd->abcd")
    x = g.op(
        "Add",
        [
            "input_1",
            einsum_dense(ctx, f"{mha}/attention_output", "abcd,cde->abe", (heads, dh, dim), (dim,)),
        ],
        "model/add/add",
    )

    ln = "model/layer_normalization"
    mean = g.op("ReduceMean", [x], f"{ln}/moments/mean", axes=[2], keepdims=1)
    diff = g.op("Sub", [x, mean], f"{ln}/moments/SquaredDifference")
    var = g.op(
        "ReduceMean",
        [g.op("Mul", [diff, diff], f"{ln}/moments/SquaredDifference__15")],
        f"{ln}/moments/variance",
        axes=[2],
        keepdims=1,
    )
    rsqrt = g.op(
        "Reciprocal",
        [
            g.op(
                "Sqrt",
                [
                    g.op(
                        "Add",
                        [var, g.const(f"{ln}/batchnorm/add/y:0", np.float32(1e-3))],
                        f"{ln}/batchnorm/add",
                    )
                ],
                f"{ln}/batchnorm/Rsqrt__17",
            )
        ],
        f"{ln}/batchnorm/Rsqrt",
    )
    gamma, beta = g.layer_norm_params(f"{ln}/batchnorm", dim)
    scale = g.op("Mul", [rsqrt, gamma], f"{ln}/batchnorm/mul")
    shift = g.op(
        "Sub", [beta, g.op("Mul", [mean, scale], f"{ln}/batchnorm/mul_2")], f"{ln}/batchnorm/sub"
    )
    x = g.op(
        "Add", [g.op("Mul", [x, scale], f"{ln}/batchnorm/mul_1"), shift], f"{ln}/batchnorm/add_1"
    )

    h = g.op(
        "Relu",
        [einsum_dense(x, "model/einsum_dense", "abc,cd->abd", (dim, ffn), (ffn,))],
        "model/einsum_dense/Relu",
    )
    g.op(
        "Add",
        [x, einsum_dense(h, "model/einsum_dense_1", "abc,cd->abd", (ffn, dim), (dim,))],
        "model/add_1/add",
        output="Identity:0",
    )
    model = _model(
        g,
        [_tensor("input_1", TensorProto.FLOAT, ["unk__6", "unk__7", dim])],
        [_tensor("Identity:0", TensorProto.FLOAT, ["unk__6", "unk__7", dim])],
        13,
        _TF2ONNX,
        "tf2onnx",
    )
    return ExportedModel(
        "tf2onnx_einsum_encoder",
        model,
        ({"unk__6": 1, "unk__7": 5}, {"unk__6": 2, "unk__7": 16}),
        float_inputs,
    )


def torch_gpt2_tied(
    vocab: int = 200,
    hidden: int = 64,
    heads: int = 4,
    layers: int = 1,
    max_position: int = 64,
    head: str = "matmul",
    position_ids: bool = False,
    seed: int = 0,
) -> ExportedModel:
    """Hugging Face ``GPT2LMHeadModel`` as ``torch.onnx.export`` (torch 2.1, opset 17, ``do_constant_folding=False``) writes it.

    The LM head is tied to the token embedding ``transformer.wte.weight``:
    one initializer read by the embedding ``Gather`` and by the head, as
    ``MatMul`` with a ``Transpose`` of it (``head="matmul"``, logits for
    every token) or as ``Gemm(transB=1)`` on the last token
    (``head="gemm"``, ``next_token_logits``). Exercises: position ids by
    ``Range`` over the sequence length, transformers' ``Conv1D`` (``Gemm``
    on the tokens flattened by a ``Reshape``, its output reshaped to a shape
    concatenated at run time), ``Split`` into q/k/v, the causal mask sliced
    from the ``attn.bias`` bool buffer by the sequence length and applied by
    ``Where``, the tanh GELU (``Pow``, ``Tanh``). ``position_ids=True``
    takes the positions as an int64 input ``position_ids`` ``[batch,
    sequence]`` instead, as optimum's text-generation export does. GPT-2
    small: ``vocab=50257, hidden=768, heads=12, layers=12, max_position=1024``.
    """
    if head not in ("matmul", "gemm"):
        raise ValueError(f"head must be 'matmul' or 'gemm', not {head!r}")
    g = _Exporter(seed, "_output_0")
    dh = hidden // heads
    t = "/transformer"

    def conv1d(
        x, scope, prefix, nx, nf
    ):  # transformers' Conv1D: addmm on x.view(-1, nx), viewed back to x.size()[:-1] + (nf,)
        size_out = g.leading_dims(x, -1, [nf], scope)
        flat = g.op("Reshape", [x, g.constant([-1, nx], scope)], f"{scope}/Reshape")
        w, b = (
            g.const(f"{prefix}.weight", g.weight((nx, nf))),
            g.const(f"{prefix}.bias", g.weight((nf,), 0.1)),
        )
        return g.op(
            "Reshape",
            [g.op("Gemm", [flat, w, b], f"{scope}/Gemm", alpha=1.0, beta=1.0), size_out],
            f"{scope}/Reshape",
        )

    def layer_norm(x, scope, prefix):
        return g.op(
            "LayerNormalization",
            [x, *g.layer_norm_params(prefix, hidden)],
            f"{scope}/LayerNormalization",
            axis=-1,
            epsilon=1e-5,
        )

    wte = g.const("transformer.wte.weight", g.weight((vocab, hidden), 1.0))
    if position_ids:
        positions = "position_ids"
    else:
        end = g.op(
            "Add", [g.size("input_ids", -1, t), g.constant(0, t)], f"{t}/Add"
        )  # past_length + sequence length
        positions = g.unsqueeze(
            g.op("Range", [g.constant(0, t), end, g.constant(1, t)], f"{t}/Range"), 0, t
        )
    wpe = g.const("transformer.wpe.weight", g.weight((max_position, hidden), 1.0))
    x = g.op(
        "Add",
        [
            g.op("Gather", [wte, "input_ids"], f"{t}/wte/Gather"),
            g.op("Gather", [wpe, positions], f"{t}/wpe/Gather"),
        ],
        f"{t}/Add",
    )
    causal = np.tril(np.ones((max_position, max_position), bool))[None, None]
    for i in range(layers):
        s, p = f"{t}/h.{i}", f"transformer.h.{i}"
        a = f"{s}/attn"
        qkv = conv1d(
            layer_norm(x, f"{s}/ln_1", f"{p}.ln_1"),
            f"{a}/c_attn",
            f"{p}.attn.c_attn",
            hidden,
            3 * hidden,
        )
        parts = [f"{a}/Split_output_{j}" for j in range(3)]
        g.nodes.append(
            helper.make_node(
                "Split", [qkv, g.constant([hidden] * 3, a)], parts, name=f"{a}/Split", axis=2
            )
        )
        q, k, v = (
            g.op(
                "Transpose",
                [g.op("Reshape", [part, g.leading_dims(part, -1, [heads, dh], a)], f"{a}/Reshape")],
                f"{a}/Transpose",
                perm=[0, 2, 1, 3],
            )
            for part in parts
        )
        scores = g.op(
            "MatMul",
            [q, g.op("Transpose", [k], f"{a}/Transpose", perm=[0, 1, 3, 2])],
            f"{a}/MatMul",
        )
        scores = g.op("Div", [scores, g.constant(float(dh) ** 0.5, a)], f"{a}/Div")
        q_len, k_len = (
            g.unsqueeze(g.size(n, -2, a), 0, a) for n in (q, k)
        )  # bias[:, :, k_len - q_len : k_len, :k_len]
        mask = g.slice(
            g.const(f"{p}.attn.bias", causal), g.op("Sub", [k_len, q_len], f"{a}/Sub"), k_len, 2, a
        )
        scores = g.op(
            "Where",
            [g.slice(mask, 0, k_len, 3, a), scores, g.constant(np.finfo(np.float32).min, a)],
            f"{a}/Where",
        )
        ctx = g.op(
            "Transpose",
            [
                g.op(
                    "MatMul", [g.op("Softmax", [scores], f"{a}/Softmax", axis=-1), v], f"{a}/MatMul"
                )
            ],
            f"{a}/Transpose",
            perm=[0, 2, 1, 3],
        )
        ctx = g.op("Reshape", [ctx, g.leading_dims(ctx, -2, [hidden], a)], f"{a}/Reshape")
        x = g.op(
            "Add", [conv1d(ctx, f"{a}/c_proj", f"{p}.attn.c_proj", hidden, hidden), x], f"{s}/Add"
        )
        m = f"{s}/mlp"
        h = conv1d(
            layer_norm(x, f"{s}/ln_2", f"{p}.ln_2"),
            f"{m}/c_fc",
            f"{p}.mlp.c_fc",
            hidden,
            4 * hidden,
        )
        act = f"{m}/act"  # 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))
        inner = g.op(
            "Add",
            [
                h,
                g.op(
                    "Mul",
                    [
                        g.constant(0.044715, act),
                        g.op("Pow", [h, g.constant(3.0, act)], f"{act}/Pow"),
                    ],
                    f"{act}/Mul",
                ),
            ],
            f"{act}/Add",
        )
        tanh = g.op(
            "Tanh",
            [g.op("Mul", [g.constant(np.sqrt(2 / np.pi), act), inner], f"{act}/Mul")],
            f"{act}/Tanh",
        )
        h = g.op(
            "Mul",
            [
                g.op("Mul", [g.constant(0.5, act), h], f"{act}/Mul"),
                g.op("Add", [g.constant(1.0, act), tanh], f"{act}/Add"),
            ],
            f"{act}/Mul",
        )
        x = g.op(
            "Add", [x, conv1d(h, f"{m}/c_proj", f"{p}.mlp.c_proj", 4 * hidden, hidden)], f"{s}/Add"
        )
    x = layer_norm(x, f"{t}/ln_f", "transformer.ln_f")
    if head == "matmul":
        g.op(
            "MatMul",
            [x, g.op("Transpose", [wte], "/lm_head/Transpose", perm=[1, 0])],
            "/lm_head/MatMul",
            output="logits",
        )
        output = _tensor("logits", TensorProto.FLOAT, ["batch", "sequence", vocab])
    else:
        last = g.op("Gather", [x, g.constant(-1, "")], "/Gather", axis=1)
        g.op(
            "Gemm",
            [last, wte],
            "/lm_head/Gemm",
            output="next_token_logits",
            alpha=1.0,
            beta=1.0,
            transB=1,
        )
        output = _tensor("next_token_logits", TensorProto.FLOAT, ["batch", vocab])
    inputs = ["input_ids", "position_ids"] if position_ids else ["input_ids"]
    model = _model(
        g,
        [_tensor(n, TensorProto.INT64, ["batch", "sequence"]) for n in inputs],
        [output],
        17,
        _TORCH,
        "main_graph",
    )

    def make_inputs(shapes, rng):
        feeds = token_inputs(vocab)({"input_ids": shapes["input_ids"]}, rng)
        if position_ids:
            feeds["position_ids"] = np.broadcast_to(
                np.arange(shapes["position_ids"][1]), shapes["position_ids"]
            ).copy()
        return feeds

    name = f"torch_gpt2_tied_{head}" + ("_position_ids" if position_ids else "")
    return ExportedModel(
        name, model, ({"batch": 1, "sequence": 6}, {"batch": 2, "sequence": 24}), make_inputs
    )


def zoo_mnist_constants(seed: int = 0) -> ExportedModel:
    """The ONNX model zoo's MNIST graph (``mnist-12``: CNTK export, opset 12) with every parameter a ``Constant`` node.

    CNTK's names (``Input3``, ``Parameter5``, ``Convolution28``,
    ``Plus214_Output_0``); ``auto_pad="SAME_UPPER"`` 5x5 convolutions whose
    bias is a separate ``Add`` of a ``[C, 1, 1]`` constant; 2x2 and 3x3
    ``MaxPool``; the dense weight a ``[16, 4, 4, 10]`` constant reshaped to
    ``[256, 10]`` in the graph; ``MatMul`` + ``Add``. Static ``[1, 1, 28, 28]`` input.
    """
    g = _Exporter(seed, "_Output_0")

    def parameter(name, array):
        g.nodes.append(
            helper.make_node(
                "Constant",
                [],
                [name],
                name=name,
                value=numpy_helper.from_array(np.asarray(array), name),
            )
        )
        return name

    def conv(x, index, bias_index, plus, relu, c_in, c_out):
        w = parameter(f"Parameter{index}", g.conv_weight((c_out, c_in, 5, 5)))
        y = g.op(
            "Conv",
            [x, w],
            f"Convolution{index + 23}",
            auto_pad="SAME_UPPER",
            dilations=[1, 1],
            group=1,
            kernel_shape=[5, 5],
            strides=[1, 1],
        )
        y = g.op(
            "Add",
            [y, parameter(f"Parameter{bias_index}", g.weight((c_out, 1, 1), 0.1))],
            f"Plus{plus}",
        )
        return g.op("Relu", [y], f"ReLU{relu}")

    x = conv("Input3", 5, 6, 30, 32, 1, 8)
    x = g.op(
        "MaxPool",
        [x],
        "Pooling66",
        auto_pad="NOTSET",
        kernel_shape=[2, 2],
        pads=[0, 0, 0, 0],
        strides=[2, 2],
    )
    x = conv(x, 87, 88, 112, 114, 8, 16)
    x = g.op(
        "MaxPool",
        [x],
        "Pooling160",
        auto_pad="NOTSET",
        kernel_shape=[3, 3],
        pads=[0, 0, 0, 0],
        strides=[3, 3],
    )
    x = g.op(
        "Reshape",
        [x, parameter("Pooling160_Output_0_reshape0_shape", np.array([1, 256], np.int64))],
        "Times212_reshape0",
    )
    w = parameter("Parameter193", g.weight((16, 4, 4, 10), 256**-0.5))
    w = g.op(
        "Reshape",
        [w, parameter("Parameter193_reshape1_shape", np.array([256, 10], np.int64))],
        "Times212_reshape1",
    )
    x = g.op("MatMul", [x, w], "Times212")
    g.op("Add", [x, parameter("Parameter194", g.weight((1, 10), 0.1))], "Plus214")
    model = _model(
        g,
        [_tensor("Input3", TensorProto.FLOAT, [1, 1, 28, 28])],
        [_tensor("Plus214_Output_0", TensorProto.FLOAT, [1, 10])],
        12,
        ("CNTK", "2.5.1"),
        "CNTKGraph",
    )
    return ExportedModel("zoo_mnist_constants", model, ({},), float_inputs)


def sparse_initializer_mlp(
    features: int = 64, hidden: int = 128, classes: int = 16, density: float = 0.1, seed: int = 0
) -> ExportedModel:
    """A pruned MLP whose weights are stored in ONNX's sparse formats (torch 2.1 export, opset 13, then
    the pruned weights moved out of the dense initializers).

    ``fc1.weight`` (``[features, hidden]``, 16x1 blocks of output features
    at ``density``) is a ``graph.sparse_initializer`` with linear indices;
    ``fc2``'s is a ``Constant`` node's ``sparse_value`` with ``[nnz, 2]``
    coordinates. ``MatMul`` + ``Add``, ``Relu``; batch symbolic.
    """
    g = _Exporter(seed, "_output_0")

    def pruned(d_in, d_out):
        keep = g.rng.random((d_in, d_out // 16)) < density
        return g.weight((d_in, d_out)) * np.repeat(keep, 16, axis=1)

    def sparse(name, w, coordinates):
        flat = np.flatnonzero(w)
        indices = np.stack(np.unravel_index(flat, w.shape), axis=1) if coordinates else flat
        values, indices = (
            numpy_helper.from_array(w.reshape(-1)[flat], name),
            numpy_helper.from_array(indices.astype(np.int64), f"{name}_indices"),
        )
        return helper.make_sparse_tensor(values, indices, list(w.shape))

    w1 = sparse("fc1.weight", pruned(features, hidden), coordinates=False)
    x = g.op(
        "Add",
        [
            g.const("fc1.bias", g.weight((hidden,), 0.1)),
            g.op("MatMul", ["input", "fc1.weight"], "/fc1/MatMul"),
        ],
        "/fc1/Add",
    )
    x = g.op("Relu", [x], "/relu/Relu")
    w2 = g.op(
        "Constant",
        [],
        "/fc2/Constant",
        sparse_value=sparse("/fc2/Constant_value", pruned(hidden, classes), coordinates=True),
    )
    g.op(
        "Add",
        [g.const("fc2.bias", g.weight((classes,), 0.1)), g.op("MatMul", [x, w2], "/fc2/MatMul")],
        "/fc2/Add",
        output="output",
    )
    model = _model(
        g,
        [_tensor("input", TensorProto.FLOAT, ["batch", features])],
        [_tensor("output", TensorProto.FLOAT, ["batch", classes])],
        13,
        _TORCH,
        "main_graph",
        sparse=(w1,),
    )
    return ExportedModel(
        "sparse_initializer_mlp", model, ({"batch": 1}, {"batch": 5}), float_inputs
    )


def exported_models() -> list[ExportedModel]:
    """The whole corpus at its default (test) sizes."""
    return [
        torch_bert(),
        torch_bert(mlm=True),
        tf2onnx_cnn(),
        keras2onnx_cnn(),
        torch_audio_cnn(),
        torch_audio_cnn(mels=16),
        torch_conv_decoder(),
        torch_squeezenet(),
        fp16_cnn(),
        qdq_cnn(),
        tf2onnx_einsum_encoder(),
        torch_gpt2_tied(head="matmul"),
        torch_gpt2_tied(head="gemm", position_ids=True),
        zoo_mnist_constants(),
        sparse_initializer_mlp(),
    ]
