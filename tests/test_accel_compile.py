"""Compiling models for sparse-accel: bit-exact device layers, accuracy, sparse modes, partition, export."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tvm
from conftest import run_onnxruntime
from onnx import TensorProto, helper
from tvm import relax

import tvm_sparse
from tvm_sparse.accel.run_report import run_report
from tvm_sparse.codegen.quantize import quantize
from tvm_sparse.prune import prune_onnx
from tvm_sparse.testing import GraphBuilder, bert_encoder, mlp, resnet

#: The device layers of the latest :func:`run` (layer name, mode, SimReport).
RUNS: list = []


def run(build, x):
    with tvm_sparse.accel.profile() as runs:
        y = relax.VirtualMachine(build.executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    RUNS[:] = runs
    return y


def gemm_cycles(build, x) -> int:
    """The PE array's cycles over all device layers of one run."""
    run(build, x)
    return sum(report.total.gemm_cycles for _, _, report in RUNS)


def cosine(a, b):
    return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))


def test_mlp_is_bit_exact_against_the_integer_model(rng):
    model = mlp(batch=8, sizes=(64, 96, 40), gemm=True)
    x = rng.standard_normal((8, 64)).astype("float32")
    build = tvm_sparse.accel.compile(model, "sparse-accel", calibration={"x": x})
    got = run(build, x)
    # numpy integer model of the same quantized network: quantize, integer layer, dequantize, per layer
    np.testing.assert_array_equal(got, integer_model(build, x))
    (expected,) = run_onnxruntime(model, {"x": x})
    assert cosine(got, expected) > 0.99
    assert [p.target for p in build.placements] == ["device", "device"]
    assert all(p.quantization_error < 0.05 for p in build.placements)


def test_small_cnn_within_quantization_tolerance(rng):
    model = resnet(image=16, width=8, blocks=(1,), classes=10)
    x = rng.standard_normal((1, 3, 16, 16)).astype("float32")
    build = tvm_sparse.accel.compile(model, "sparse-accel", calibration={"x": x})
    (expected,) = run_onnxruntime(model, {"x": x})
    assert cosine(run(build, x), expected) > 0.99
    assert {p.op for p in build.placements} == {"conv2d", "matmul"}
    assert len(RUNS) == len(build.placements)


@pytest.mark.parametrize(
    "pattern, density, mode", [("nm:2:4", None, "nm"), ("block:16x16", 0.25, "block")]
)
def test_sparse_modes_end_to_end(rng, pattern, density, mode):
    dense = mlp(batch=32, sizes=(128, 128, 64), gemm=False)
    model, _ = prune_onnx(dense, pattern, density=density)
    x = rng.standard_normal((32, 128)).astype("float32")
    build = tvm_sparse.accel.compile(model, "sparse-accel", calibration={"x": x})
    assert [p.mode for p in build.placements] == [mode, mode]
    got = run(build, x)
    (expected,) = run_onnxruntime(model, {"x": x})
    assert cosine(got, expected) > 0.99
    dense_build = tvm_sparse.accel.compile(model, "sparse-accel-dense", calibration={"x": x})
    np.testing.assert_array_equal(run(dense_build, x), got)  # same integers, another encoding
    assert gemm_cycles(build, x) < 0.7 * gemm_cycles(dense_build, x)


def integer_model(build, x, names=("fc0", "fc1"), relu_layers=("fc0",)):
    """The numpy integer model of a chain of quantized layers: quantize, integer layer, dequantize, per layer."""
    h = x
    for name in names:
        q = build.quantized[name]
        h = q.reference(quantize(h, q.input_scale), relu=name in relu_layers).astype(
            "float32"
        ) * np.float32(q.output_scale)
    return h


@pytest.mark.parametrize("pattern, density", [("nm:2:4", None), ("block:16x16", 0.3)])
def test_codebook_weights_load_through_the_shared_weight_table(rng, pattern, density):
    model, _ = prune_onnx(
        mlp(batch=8, sizes=(128, 256, 64), gemm=True), pattern, density, codebook_bits=4
    )
    x = rng.standard_normal((8, 128)).astype("float32")
    build = tvm_sparse.accel.compile(model, "sparse-accel", calibration={"x": x})
    assert all(0 < p.weight_table <= 16 for p in build.placements)
    got = run(build, x)
    np.testing.assert_array_equal(got, integer_model(build, x))
    coded = run_report(RUNS, build.placements)["layers"]
    assert [layer["mode"] for layer in coded] == [pattern.split(":")[0] + "+table"] * 2
    # the same model on the device without the table (int8 weight loads, per-channel scales)
    doc = tvm_sparse.accel.load_device("sparse-accel").to_dict()
    del doc["sparse_modes"]["weight_sharing"]
    plain = tvm_sparse.accel.compile(
        model, tvm_sparse.accel.Device.from_dict(doc), calibration={"x": x}
    )
    assert all(p.weight_table == 0 for p in plain.placements)
    np.testing.assert_array_equal(run(plain, x), integer_model(plain, x))
    plain_bytes = sum(layer["dram_read_bytes"] for layer in run_report(RUNS)["layers"])
    coded_bytes = sum(layer["dram_read_bytes"] for layer in coded)
    weight_bytes = sum(int(np.count_nonzero(q.weight)) for q in build.quantized.values())
    assert plain_bytes - coded_bytes >= 0.45 * weight_bytes  # 4-bit indices instead of int8 values


def test_layers_without_a_device_mode_stay_on_the_host(rng):
    g = GraphBuilder(seed=3)
    y = g.node("Relu", [g.conv("x", "depthwise", 8, 8, 3, groups=8)])
    y = g.conv(y, "pointwise", 8, 16, 1)
    y = g.node("Identity", [y], name="y")
    model = g.model(
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 10, 10])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 16, 10, 10])],
    )
    x = rng.standard_normal((1, 8, 10, 10)).astype("float32")
    build = tvm_sparse.accel.compile(model, "sparse-accel", calibration={"x": x})
    placements = {p.name: p for p in build.placements}
    assert (
        placements["depthwise"].target == "host" and "depthwise" in placements["depthwise"].reason
    )
    assert placements["pointwise"].target == "device"
    assert "host" in build.to_table()
    (expected,) = run_onnxruntime(model, {"x": x})
    assert cosine(run(build, x), expected) > 0.99


def test_build_with_the_target_name_and_export_round_trip(rng, tmp_path):
    model = mlp(batch=4, sizes=(32, 16), gemm=True)
    x = rng.standard_normal((4, 32)).astype("float32")
    exe = tvm_sparse.build(model, target="sparse-accel", calibration={"x": x})
    expected = relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    path = tmp_path / "model.so"
    exe.export_library(str(path))
    np.save(tmp_path / "x.npy", x)
    script = (
        "import numpy as np, tvm, tvm_sparse\n"
        "from tvm import relax\n"
        f"vm = relax.VirtualMachine(tvm.runtime.load_module({str(path)!r}), tvm.cpu())\n"
        f"y = vm['main'](tvm.runtime.tensor(np.load({str(tmp_path / 'x.npy')!r}))).numpy()\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, y)\n"
        "with tvm_sparse.accel.profile() as runs:\n"
        f"    y = vm['main'](tvm.runtime.tensor(np.load({str(tmp_path / 'x.npy')!r}))).numpy()\n"
        "print(len(runs))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)


def test_user_device_description_as_target(tmp_path):
    doc = json.loads(tvm_sparse.accel.shipped_devices()["sparse-accel"].read_text())
    doc["name"] = "my-accel"
    doc["pe_array"] = {"reduction_lanes": 8, "output_lanes": 8}
    doc["sparse_modes"]["block"] = {"block_rows": 8, "block_cols": 8, "index_bits": 16}
    doc["sparse_modes"]["nm"] = {"n": 2, "m": 4}
    path = tmp_path / "my.json"
    path.write_text(json.dumps(doc))
    target = tvm_sparse.accel.target(str(path))
    assert "sparse-accel" in [str(k) for k in target.keys]
    model = mlp(batch=4, sizes=(32, 16), gemm=True)
    exe = tvm_sparse.build(model, target=target)
    with tvm_sparse.accel.profile() as runs:
        y = relax.VirtualMachine(exe, tvm.cpu())["main"](
            tvm.runtime.tensor(np.ones((4, 32), "float32"))
        )
    assert y.numpy().shape == (4, 16) and runs[-1][2].device.name == "my-accel"


def escalate_in_two_steps() -> tvm_sparse.accel.Device:
    """``sparse-accel-escalate`` without the fused dataflow: the maps go through DRAM."""
    doc = tvm_sparse.accel.load_device("sparse-accel-escalate").to_dict()
    for field in ("maps_buffer_bytes", "basis_macs_per_cycle"):
        del doc["sparse_modes"]["decomposed_conv"][field]
    doc["name"] = "escalate-two-steps"
    return tvm_sparse.accel.Device.from_dict(doc)


def test_decomposed_convolutions_on_the_escalate_engine(rng):
    """The fused engine keeps the maps on chip and computes exactly what the two steps through DRAM compute,
    in fewer cycles and with less DRAM traffic."""
    model, _ = prune_onnx(
        resnet(image=16, width=16, blocks=(1,), classes=10),
        "decompose:rank=4,coef-density=0.5,coef-block=16x16",
    )
    x = rng.standard_normal((1, 3, 16, 16)).astype("float32")
    fused = tvm_sparse.accel.compile(model, "sparse-accel-escalate", calibration={"x": x})
    two_steps = tvm_sparse.accel.compile(model, escalate_in_two_steps(), calibration={"x": x})
    modes = {p.name: (p.target, p.mode) for p in fused.placements}
    assert (
        modes["stage0.block0.conv2.combine"]
        == modes["stage0.block0.conv2.basis"]
        == ("device", "fused")
    )
    assert modes["stem.basis"][0] == "host"  # 7x7: the engine takes 3x3 and 5x5 kernels
    stem = next(p for p in fused.placements if p.name == "stem.combine")
    assert "off the engine (7x7 basis kernels; the engine takes 3x3, 5x5)" in stem.hint
    assert {p.name: p.mode for p in two_steps.placements}["stage0.block0.conv2.basis"] == "basis"

    got = run(fused, x)
    fused_run = {name: (mode, report.total) for name, mode, report in RUNS}
    np.testing.assert_array_equal(got, run(two_steps, x))
    two_steps_run = [
        (name, report.total) for name, _, report in RUNS if name.startswith("stage0.block0.conv2")
    ]
    mode, layer = fused_run["stage0.block0.conv2.basis"]
    assert mode == "fused" and [name for name, _ in two_steps_run] == [
        "stage0.block0.conv2.combine",
        "stage0.block0.conv2.basis",
    ]
    assert layer.cycles < sum(counters.cycles for _, counters in two_steps_run)
    assert layer.dram_write_bytes < sum(counters.dram_write_bytes for _, counters in two_steps_run)
    (expected,) = run_onnxruntime(model, {"x": x})
    assert cosine(got, expected) > 0.99


def strided_conv_bn(channels: int = 32, image: int = 12):
    """One 3x3 stride-2 convolution with BatchNorm and ReLU (NCHW input)."""
    g = GraphBuilder(seed=5)
    y = g.conv_bn("x", "conv", channels, channels, 3, stride=2)
    return g.model(
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, image, image])],
        [
            helper.make_tensor_value_info(
                y, TensorProto.FLOAT, [1, channels, image // 2, image // 2]
            )
        ],
    )


def basis_first_integer_model(quant, x_nhwc: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """Every channel of the quantized input convolved with each int8 basis kernel, requantized per kernel:
    int8 maps ``[N, OH, OW, r * C]``, map ``j * C + c``."""
    x_q = np.pad(
        quantize(x_nhwc, quant.input_scale).astype(np.int64),
        ((0, 0), (padding, padding), (padding, padding), (0, 0)),
    )
    rank, taps = quant.weight.shape
    k = int(round(taps**0.5))
    n, h, w, c = x_nhwc.shape
    oh, ow = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    maps = []
    for j, kernel in enumerate(quant.weight.reshape(rank, k, k).astype(np.int64)):
        acc = sum(
            x_q[:, i : i + stride * oh : stride, j_ : j_ + stride * ow : stride] * kernel[i, j_]
            for i in range(k)
            for j_ in range(k)
        )
        maps.append(
            np.clip(
                (acc * quant.multiplier[j] + (1 << (quant.shift - 1))) >> quant.shift, -128, 127
            )
        )
    return np.concatenate(maps, axis=-1)


def test_strided_decomposed_convolution_runs_basis_first(rng):
    """A stride-2 decomposed layer: the basis kernels run first on the input channels (fewer MACs), then
    the coefficients on the strided maps; both steps bit-exact against the integer model."""
    model, _ = prune_onnx(strided_conv_bn(), "decompose:rank=4,coef-density=0.5,coef-block=16x16")
    x = rng.standard_normal((1, 32, 12, 12)).astype("float32")
    build = tvm_sparse.accel.compile(model, escalate_in_two_steps(), calibration={"x": x})
    assert [(p.name, p.mode) for p in build.placements] == [
        ("conv.combine", "basis-first"),
        ("conv.basis", "block"),
    ]
    got = run(build, x)
    fused = tvm_sparse.accel.compile(
        model, "sparse-accel-escalate", calibration={"x": x}
    )  # the same in one fused layer
    assert [(p.name, p.mode) for p in fused.placements] == [
        ("conv.combine", "fused"),
        ("conv.basis", "fused"),
    ]
    np.testing.assert_array_equal(run(fused, x), got)
    expand, coefficients = build.quantized["conv.combine"], build.quantized["conv.basis"]
    maps = basis_first_integer_model(expand, x.transpose(0, 2, 3, 1), stride=2, padding=1).astype(
        "float32"
    ) * np.float32(expand.output_scale)
    y_q = coefficients.reference(
        quantize(maps.reshape(-1, maps.shape[-1]), coefficients.input_scale), relu=True
    )
    np.testing.assert_array_equal(
        got,
        (y_q.astype("float32") * np.float32(coefficients.output_scale))
        .reshape(1, 6, 6, 32)
        .transpose(0, 3, 1, 2),
    )
    (expected,) = run_onnxruntime(model, {"x": x})
    assert cosine(got, expected) > 0.99


def test_bert_style_encoder_within_quantization_tolerance(rng):
    """Attention projections and FFN of a pruned encoder layer on the device; softmax, LayerNorm, GELU
    and the attention matmuls on the host."""
    model, _ = prune_onnx(
        bert_encoder(hidden=64, heads=4, ffn=128, seq=16, layers=1), "block:16x16", 0.5
    )
    x = rng.standard_normal((1, 16, 64)).astype("float32")
    build = tvm_sparse.accel.compile(model, "sparse-accel", calibration={"x": x})
    on_device = [p for p in build.placements if p.target == "device"]
    assert len(on_device) == 6 and {p.mode for p in on_device} == {
        "block"
    }  # q, k, v, output, two FFN layers
    (expected,) = run_onnxruntime(model, {"x": x})
    assert cosine(run(build, x), expected) > 0.99


def token_encoder(vocab: int = 50, seq: int = 16, hidden: int = 32, heads: int = 2, ffn: int = 64):
    """A one-layer BERT-style encoder on int64 inputs: token ids and token-type ids into embedding tables,
    and an attention mask turned into the additive score bias ``(1 - mask) * -10000``."""
    g = GraphBuilder(seed=11)
    dh = hidden // heads
    x = g.node("Gather", [g.const("word_emb", g.weight((vocab, hidden), 1.0)), "input_ids"], axis=0)
    types = g.node(
        "Gather", [g.const("type_emb", g.weight((2, hidden), 1.0)), "token_type_ids"], axis=0
    )
    x = g.layer_norm(
        g.node(
            "Add", [g.node("Add", [x, types]), g.const("pos_emb", g.weight((1, seq, hidden), 1.0))]
        ),
        "emb.ln",
        hidden,
    )
    mask = g.node(
        "Cast",
        [g.node("Unsqueeze", ["attention_mask", g.const("axes", np.array([1, 2], "int64"))])],
        to=TensorProto.FLOAT,
    )
    one, neg = (
        g.const("one", np.array(1.0, "float32")),
        g.const("neg", np.array(-10000.0, "float32")),
    )
    score_bias = g.node("Mul", [g.node("Sub", [one, mask]), neg])
    split = g.const("shape.split", np.array([1, seq, heads, dh], "int64"))
    merge = g.const("shape.merge", np.array([1, seq, hidden], "int64"))

    def heads_of(name, perm):
        return g.node(
            "Transpose", [g.node("Reshape", [g.linear(x, name, hidden, hidden), split])], perm=perm
        )

    q, k, v = (
        heads_of("query", [0, 2, 1, 3]),
        heads_of("key", [0, 2, 3, 1]),
        heads_of("value", [0, 2, 1, 3]),
    )
    scores = g.node(
        "Add",
        [
            g.node(
                "Mul", [g.node("MatMul", [q, k]), g.const("scale", np.array(dh**-0.5, "float32"))]
            ),
            score_bias,
        ],
    )
    ctx = g.node(
        "Reshape",
        [
            g.node(
                "Transpose",
                [g.node("MatMul", [g.node("Softmax", [scores], axis=-1), v])],
                perm=[0, 2, 1, 3],
            ),
            merge,
        ],
    )
    x = g.layer_norm(g.node("Add", [g.linear(ctx, "attn_out", hidden, hidden), x]), "ln1", hidden)
    x = g.layer_norm(
        g.node(
            "Add", [g.linear(g.gelu(g.linear(x, "ffn_in", hidden, ffn)), "ffn_out", ffn, hidden), x]
        ),
        "ln2",
        hidden,
    )
    y = g.node("Identity", [x], name="y")
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, [1, seq])
        for n in ("input_ids", "token_type_ids", "attention_mask")
    ]
    return g.model(inputs, [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, seq, hidden])])


def embedding_gemm(
    vocab: int = 20, dim: int = 32, out: int = 16, tokens: int = 6, index_op: str | None = None
):
    """``Gemm(Gather(table, ids))`` on int64 ids; ``index_op`` computes the indices from the ids first."""
    g = GraphBuilder(seed=12)
    ids = (
        "ids"
        if index_op is None
        else g.node(index_op, ["ids", g.const("one", np.array(1, "int64"))])
    )
    e = g.node("Gather", [g.const("emb", g.weight((vocab, dim), 1.0)), ids], axis=0)
    y = g.node("Identity", [g.linear(e, "fc", dim, out, gemm=True)], name="y")
    return g.model(
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [tokens])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [tokens, out])],
    )


def run_inputs(exe, feeds: dict, names) -> np.ndarray:
    return relax.VirtualMachine(exe, tvm.cpu())["main"](
        *[tvm.runtime.tensor(feeds[n]) for n in names]
    ).numpy()


@pytest.mark.parametrize("calibrated", [True, False])
def test_embedding_of_int64_ids_runs_on_the_host_and_its_gemm_on_the_device(rng, calibrated):
    model = embedding_gemm()
    ids = np.array(
        [3, 19, 0, -1, 7, -20], np.int64
    )  # ONNX Gather takes negative indices from the end
    build = tvm_sparse.accel.compile(
        model, "sparse-accel", calibration={"ids": ids} if calibrated else None
    )
    assert [(p.name, p.target) for p in build.placements] == [("fc", "device")]
    (expected,) = run_onnxruntime(model, {"ids": ids})
    assert cosine(run_inputs(build.executable, {"ids": ids}, ["ids"]), expected) > 0.99
    exe = tvm_sparse.build(
        model,
        target="sparse-accel",
        calibration={"ids": ids.astype("float32")} if calibrated else None,
    )
    assert cosine(run_inputs(exe, {"ids": ids}, ["ids"]), expected) > 0.99


@pytest.mark.parametrize("calibrated", [True, False])
def test_bert_style_encoder_on_token_ids_and_attention_mask(rng, calibrated):
    model = token_encoder()
    names = ("input_ids", "token_type_ids", "attention_mask")
    feeds = {
        "input_ids": rng.integers(0, 50, (1, 16)),
        "token_type_ids": (np.arange(16) >= 8).astype(np.int64)[None],
        "attention_mask": (np.arange(16) < 12).astype(np.int64)[None],
    }  # the last 4 tokens are padding
    exe = tvm_sparse.build(model, target="sparse-accel", calibration=feeds if calibrated else None)
    (expected,) = run_onnxruntime(model, feeds)
    with tvm_sparse.accel.profile() as runs:
        got = run_inputs(exe, feeds, names)
    assert cosine(got, expected) > 0.99
    assert len(runs) == 6  # q, k, v, output, two FFN layers; the gathers ran on the host


@pytest.mark.parametrize(
    "calibration, message",
    [
        (
            {"ids": np.array([0.5, 1, 2, 3, 4, 5])},
            "calibration input ids: the input is int64, but the values given are not all whole numbers",
        ),
        ({"ids": np.arange(5)}, "calibration input ids: shape (5,), expected (6,)"),
        (
            {"ids": np.zeros((2, 1, 6))},
            "calibration input ids: shape (2, 1, 6), expected (6,) (or N samples stacked as (N, 6))",
        ),
        (
            {"ids": np.zeros((2, 5))},
            "calibration input ids: shape (5,), expected (6,)",
        ),  # two samples of 5
        (
            {"ids": np.array([0, 1, 2, 3, 4, 20])},
            "calibration input ids: values must lie in [-20, 20) (it indexes a table of 20 rows), got 0..20",
        ),
        ({"ids": np.array(["a"] * 6)}, "calibration input ids: dtype <U1 is not numeric"),
        (
            {"ids": np.arange(6), "mask": np.ones(6)},
            "calibration: no input named 'mask' (the model's inputs: ids)",
        ),
        ([np.arange(6)], "calibration sample 0 is a ndarray; expected a dict"),
        ([], "calibration: no samples given"),
    ],
)
def test_bad_calibration_samples_are_one_clear_error(calibration, message):
    with pytest.raises(tvm_sparse.ModelError) as err:
        tvm_sparse.accel.compile(embedding_gemm(), "sparse-accel", calibration=calibration)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_ids_that_become_indices_through_arithmetic_need_calibration_samples():
    model = embedding_gemm(index_op="Add")  # the table is indexed by ids + 1
    with pytest.raises(
        tvm_sparse.ModelError,
        match=r"input ids \(int64\) reaches an index through other computation.*--calibration ids=FILE.npy",
    ):
        tvm_sparse.accel.compile(model, "sparse-accel")
    ids = np.array([0, 4, 18, 2, 9, 1], np.int64)
    build = tvm_sparse.accel.compile(model, "sparse-accel", calibration={"ids": ids})
    (expected,) = run_onnxruntime(model, {"ids": ids})
    assert cosine(run_inputs(build.executable, {"ids": ids}, ["ids"]), expected) > 0.99


def test_calibration_statistics_belong_to_one_build(rng):
    """Each build records its calibration into its own scope: an enclosing one sees nothing, and a
    calibration layer run outside any scope says so."""
    from tvm_sparse.accel import runtime
    from tvm_sparse.errors import TVMSparseError

    model = mlp(batch=4, sizes=(32, 16), gemm=True)
    x = rng.standard_normal((4, 32)).astype("float32")
    with runtime.calibration_statistics() as outer:
        build = tvm_sparse.accel.compile(model, "sparse-accel", calibration={"x": x})
    assert outer == {} and build.placements[0].quantization_error < 0.05
    with pytest.raises(TVMSparseError, match="outside"):
        runtime.calibrate_layer(None, None, None, None, None)


def test_deprecated_last_run_still_reports_with_a_warning(rng):
    model = mlp(batch=4, sizes=(32, 16), gemm=True)
    x = rng.standard_normal((4, 32)).astype("float32")
    build = tvm_sparse.accel.compile(model, "sparse-accel", calibration={"x": x})
    with pytest.warns(DeprecationWarning, match="profile"):
        tvm_sparse.accel.reset_run()
    run(build, x)
    with pytest.warns(DeprecationWarning, match="profile"):
        assert [name for name, _, _ in tvm_sparse.accel.last_run()] == [name for name, _, _ in RUNS]


def test_run_report_serialises_as_dict_json_and_table(rng):
    model = mlp(batch=8, sizes=(64, 96, 40), gemm=True)
    x = rng.standard_normal((8, 64)).astype("float32")
    build = tvm_sparse.build(model, "sparse-accel", calibration={"x": x})
    run(build, x)
    report = run_report(RUNS, build.placements)
    assert json.loads(report.dumps()) == report.to_dict()
    assert report.to_dict()["total_cycles"] == sum(r.total.cycles for _, _, r in RUNS) > 0
    table = report.to_table().splitlines()
    assert table[0].startswith(f"device sparse-accel @ {build.device.clock_mhz:g} MHz: ")
    assert [row.split()[0] for row in table[2:]] == ["fc0", "fc1"]
    with pytest.warns(DeprecationWarning, match="to_table"):
        from tvm_sparse.accel.run_report import format_run_report

        assert format_run_report(report.to_dict()) == report.to_table()


def test_calibration_samples_for_the_host_cpu_are_refused(rng):
    x = rng.standard_normal((8, 64)).astype("float32")
    with pytest.raises(tvm_sparse.TVMSparseError, match="calibration applies to sparse-accel"):
        tvm_sparse.build(mlp(batch=8, sizes=(64, 40)), calibration={"x": x})
