import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import block_sparse, run_executable, run_onnxruntime
from onnx import TensorProto, helper, numpy_helper

from tvm_sparse.cli import main
from tvm_sparse.testing import mlp


def _cli(*args) -> int:
    return main([str(a) for a in args])


def test_prune_analyze_compile_run(tmp_path, capsys, rng):
    model, pruned, lib = tmp_path / "m.onnx", tmp_path / "p.onnx", tmp_path / "p.so"
    onnx.save(mlp(batch=4, sizes=(64, 256, 32)), model)
    x = rng.standard_normal((4, 64)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    assert _cli("prune", model, "-o", pruned, "--pattern", "block:16x1", "--density", "0.1") == 0
    capsys.readouterr()
    assert _cli("analyze", pruned, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert [row["format"] for row in report["layers"]] == ["bsr 16x1", "bsr 16x1"]
    assert _cli("compile", pruned, "-o", lib) == 0
    capsys.readouterr()
    assert (
        _cli(
            "run",
            lib,
            "--input",
            f"x={tmp_path / 'x.npy'}",
            "--output-dir",
            tmp_path / "out",
            "--repeat",
            3,
            "--json",
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["outputs"]["y"]["shape"] == [4, 32] and summary["median_latency_ms"] > 0
    got = np.load(tmp_path / "out" / "y.npy")
    expected = run_onnxruntime(onnx.load(pruned), {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_exported_library_runs_in_a_fresh_process(tmp_path, rng):
    from tvm_sparse import build
    from tvm_sparse.prune import prune_onnx

    model, _ = prune_onnx(mlp(batch=2, sizes=(32, 64, 16)), "block:16x1", 0.2)
    path = tmp_path / "lib.so"
    build(model).export_library(str(path))
    x = rng.standard_normal((2, 32)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    script = f"""
import numpy as np, tvm, tvm_sparse
from tvm import relax
vm = relax.VirtualMachine(tvm.runtime.load_module({str(path)!r}), tvm.cpu())
np.save({str(tmp_path / "y.npy")!r}, vm["main"](tvm.runtime.tensor(np.load({str(tmp_path / "x.npy")!r}))).numpy())
"""
    subprocess.run([sys.executable, "-c", script], check=True)
    expected = run_onnxruntime(model, {"x": x})[0]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-4, atol=1e-4)


@pytest.fixture
def compiled(tmp_path):
    model, lib = tmp_path / "m.onnx", tmp_path / "m.so"
    onnx.save(mlp(batch=4, sizes=(16, 8)), model)
    assert _cli("compile", model, "-o", lib) == 0
    return lib


@pytest.mark.parametrize(
    "make_input, message",
    [
        (lambda d: [f"y={d / 'x.npy'}"], "unknown input"),
        (lambda d: [], "missing input"),
        (lambda d: [f"x={d / 'wrong_shape.npy'}"], "shape"),
        (lambda d: [f"x={d / 'wrong_dtype.npy'}"], "dtype"),
        (lambda d: [f"x={d / 'absent.npy'}"], "cannot read"),
        (lambda d: ["x"], "NAME=FILE"),
    ],
)
def test_run_rejects_bad_inputs(tmp_path, compiled, capsys, make_input, message):
    np.save(tmp_path / "x.npy", np.zeros((4, 16), "float32"))
    np.save(tmp_path / "wrong_shape.npy", np.zeros((4, 15), "float32"))
    np.save(tmp_path / "wrong_dtype.npy", np.zeros((4, 16), "float64"))
    args = [a for item in make_input(tmp_path) for a in ("--input", item)]
    assert _cli("run", compiled, *args) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def _unsupported_op_model():
    node = helper.make_node("NoSuchOp", ["x"], ["y"], name="mystery")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    "content, message",
    [
        (b"this is not a protobuf", "not a valid ONNX model"),
        (None, "no such model file"),
        ("unsupported", "NoSuchOp"),
    ],
)
def test_bad_models_give_one_line_errors(tmp_path, capsys, content, message):
    path = tmp_path / "bad.onnx"
    if content == "unsupported":
        onnx.save(_unsupported_op_model(), path)
    elif content is not None:
        path.write_bytes(content)
    for command in (["analyze", path], ["compile", path, "-o", tmp_path / "o.so"]):
        assert _cli(*command) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_truncated_model(tmp_path, capsys):
    data = mlp().SerializeToString()
    path = tmp_path / "t.onnx"
    path.write_bytes(data[: len(data) // 2])
    assert _cli("analyze", path) == 1
    assert "not a valid ONNX model" in capsys.readouterr().err


def test_run_rejects_non_library(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(mlp(), path)
    assert _cli("run", path) == 1
    assert "not a compiled tvm-sparse library" in capsys.readouterr().err


def test_unknown_target_and_bad_prune_arguments(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(mlp(), path)
    assert _cli("compile", path, "-o", tmp_path / "o.so", "--target", "cuda") == 1
    assert "unsupported target" in capsys.readouterr().err
    assert _cli("prune", path, "-o", tmp_path / "p.onnx", "--pattern", "block:16x1") == 1
    assert "--density is required" in capsys.readouterr().err
    assert (
        _cli("prune", path, "-o", tmp_path / "p.onnx", "--pattern", "block:16x1", "--density", "2")
        == 1
    )
    assert "density must be in (0, 1]" in capsys.readouterr().err


def test_float16_weights_are_analyzed_and_run_in_float32(tmp_path, rng):
    """A half-precision model computes in float32: its pruned weight gets the block-sparse kernel."""
    from tvm_sparse import analyze, build

    w = (block_sparse(rng, (16, 64), (16, 1), 0.1)).astype("float16")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="half")]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [4, 64])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (row,) = analyze(model).layers
    assert row.name == "half" and row.choice.format == "bsr" and not row.note
    x = rng.standard_normal((4, 16)).astype("float16")
    y = run_executable(build(model), x)
    assert y.dtype == np.float16
    np.testing.assert_allclose(
        y.astype("float32"), x.astype("float32") @ w.astype("float32"), rtol=2e-3, atol=2e-3
    )


def test_sparse_accel_compile_and_run_report(tmp_path, capsys, rng):
    model_path, pruned, lib = tmp_path / "m.onnx", tmp_path / "p.onnx", tmp_path / "p.so"
    onnx.save(mlp(batch=8, sizes=(64, 128, 32)), model_path)
    x = rng.standard_normal((8, 64)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    assert _cli("prune", str(model_path), "-o", str(pruned), "--pattern", "nm:2:4") == 0
    assert (
        _cli(
            "compile",
            str(pruned),
            "-o",
            str(lib),
            "--target",
            "sparse-accel",
            "--calibration",
            f"x={tmp_path / 'x.npy'}",
        )
        == 0
    )
    assert "nm" in capsys.readouterr().out
    assert (
        _cli(
            "run",
            str(lib),
            "--input",
            f"x={tmp_path / 'x.npy'}",
            "--report",
            "--json",
            "--repeat",
            "1",
            "--output-dir",
            str(tmp_path),
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    layers = doc["layers"]
    assert doc["total_cycles"] == sum(layer["cycles"] for layer in layers) > 0
    assert [layer["mode"] for layer in layers] == ["nm", "nm"]
    assert all(layer["macs_skipped"] == layer["macs_issued"] for layer in layers)  # 2:4 issues half
    (expected,) = run_onnxruntime(onnx.load(pruned), {"x": x})
    y = np.load(tmp_path / "y.npy")
    assert (y * expected).sum() / np.linalg.norm(y) / np.linalg.norm(expected) > 0.99


def test_sparse_accel_cli_errors(tmp_path, capsys):
    model_path = tmp_path / "m.onnx"
    onnx.save(mlp(batch=2, sizes=(16, 8)), model_path)
    assert _cli("compile", str(model_path), "-o", str(tmp_path / "a.so"), "--calibration", "x") == 1
    assert "--calibration applies to sparse-accel" in capsys.readouterr().err
    assert (
        _cli(
            "compile",
            str(model_path),
            "-o",
            str(tmp_path / "a.so"),
            "--target",
            "sparse-accel",
            "--calibration",
            "x",
        )
        == 1
    )
    assert "--calibration expects NAME=FILE.npy" in capsys.readouterr().err
    bad = tmp_path / "dev.json"
    bad.write_text('{"name": "d"}')
    assert _cli("compile", str(model_path), "-o", str(tmp_path / "a.so"), "--device", str(bad)) == 1
    assert "pe_array: missing" in capsys.readouterr().err
    assert _cli("compile", str(model_path), "-o", str(tmp_path / "a.so"), "--target", "tpu-v9") == 1
    assert "sparse-accel" in capsys.readouterr().err  # the error lists the known targets


def test_prune_decompose_from_the_cli(tmp_path, capsys):
    from tvm_sparse.testing import resnet

    model_path, out = tmp_path / "r.onnx", tmp_path / "d.onnx"
    onnx.save(resnet(image=16, width=8, blocks=(1,), classes=4), model_path)
    assert (
        _cli("prune", model_path, "-o", out, "--pattern", "decompose:rank=4,coef-density=0.5") == 0
    )
    printed = capsys.readouterr().out
    assert "rank 4 of 9" in printed and "output error" in printed
    assert sum(n.op_type == "Conv" for n in onnx.load(out).graph.node) > sum(
        n.op_type == "Conv" for n in onnx.load(model_path).graph.node
    )
    assert _cli("prune", model_path, "-o", out, "--pattern", "decompose:rank=x") == 1
    assert "decompose:rank=x" in capsys.readouterr().err


def _token_model(vocab: int = 12, dim: int = 16, out: int = 8, tokens: int = 5):
    """``Gemm(Gather(table, ids))`` on int64 token ids."""
    from tvm_sparse.testing import GraphBuilder

    g = GraphBuilder(seed=21)
    e = g.node("Gather", [g.const("emb", g.weight((vocab, dim), 1.0)), "ids"], axis=0)
    y = g.node("Identity", [g.linear(e, "fc", dim, out, gemm=True)], name="y")
    return g.model(
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [tokens])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [tokens, out])],
    )


@pytest.mark.parametrize("calibrated", [True, False])
def test_token_ids_compile_and_run_for_sparse_accel(tmp_path, capsys, calibrated):
    model, lib = tmp_path / "tokens.onnx", tmp_path / "tokens.so"
    onnx.save(_token_model(), model)
    ids = np.array([0, 11, 4, -3, 7], np.int64)
    np.save(tmp_path / "ids.npy", ids)
    calibration = ["--calibration", f"ids={tmp_path / 'ids.npy'}"] if calibrated else []
    assert _cli("compile", model, "-o", lib, "--target", "sparse-accel", *calibration) == 0
    assert "fc                               matmul  device" in capsys.readouterr().out
    assert json.loads((tmp_path / "tokens.so.json").read_text())["inputs"] == [
        {"name": "ids", "shape": [5], "dtype": "int64", "index_range": [-12, 12]}
    ]
    assert (
        _cli(
            "run",
            lib,
            "--input",
            f"ids={tmp_path / 'ids.npy'}",
            "--output-dir",
            tmp_path / "out",
            "--repeat",
            1,
            "--json",
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["outputs"]["y"]["file"] == str(
        tmp_path / "out" / "y.npy"
    )
    (expected,) = run_onnxruntime(onnx.load(model), {"ids": ids})
    got = np.load(tmp_path / "out" / "y.npy")
    assert (got * expected).sum() / np.linalg.norm(got) / np.linalg.norm(expected) > 0.99
    np.save(
        tmp_path / "far.npy", np.array([0, 1, 2, 3, 12], np.int64)
    )  # past the table: out-of-bounds reads if run
    assert _cli("run", lib, "--input", f"ids={tmp_path / 'far.npy'}") == 1
    err = capsys.readouterr().err
    assert (
        "input ids: values must lie in [-12, 12) (it indexes a table of 12 rows), got 0..12" in err
        and len(err.strip().splitlines()) == 1
    )


def test_bad_token_id_calibration_is_one_line(tmp_path, capsys):
    model = tmp_path / "tokens.onnx"
    onnx.save(_token_model(), model)
    np.save(tmp_path / "ids.npy", np.array([0.5, 1, 2, 3, 4]))
    assert (
        _cli(
            "compile",
            model,
            "-o",
            tmp_path / "t.so",
            "--target",
            "sparse-accel",
            "--calibration",
            f"ids={tmp_path / 'ids.npy'}",
        )
        == 1
    )
    err = capsys.readouterr().err
    assert (
        "calibration input ids: the input is int64, but the values given are not all whole numbers"
        in err
        and len(err.strip().splitlines()) == 1
    )


def test_outputs_with_unsafe_names_go_to_distinct_files(tmp_path, capsys):
    """tf2onnx names (``dense/BiasAdd:0``), a name that would leave the directory, and two that collide once made safe."""
    w = np.arange(32, dtype="float32").reshape(4, 8) / 32
    names = ["dense/BiasAdd:0", "dense_BiasAdd_0", "../escape", "Dense_BiasAdd_0"]
    nodes = [helper.make_node("Gemm", ["input_1:0", "dense/kernel:0"], [names[0]], transB=1)]
    nodes += [
        helper.make_node("Relu", [names[0]], [names[1]]),
        helper.make_node("Neg", [names[0]], [names[2]]),
        helper.make_node("Abs", [names[2]], [names[3]]),
    ]
    graph = helper.make_graph(
        nodes,
        "tf",
        [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in names],
        [numpy_helper.from_array(w, "dense/kernel:0")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, tmp_path / "tf.onnx")
    x = np.linspace(-1, 1, 8, dtype="float32")[None]
    np.save(tmp_path / "x.npy", x)
    assert _cli("compile", tmp_path / "tf.onnx", "-o", tmp_path / "tf.so") == 0
    capsys.readouterr()
    out = tmp_path / "out"
    assert (
        _cli(
            "run",
            tmp_path / "tf.so",
            "--input",
            f"input_1:0={tmp_path / 'x.npy'}",
            "--output-dir",
            out,
            "--repeat",
            1,
            "--json",
        )
        == 0
    )
    files = {
        name: entry["file"]
        for name, entry in json.loads(capsys.readouterr().out)["outputs"].items()
    }
    assert files == {
        name: str(out / file)
        for name, file in zip(
            names,
            [
                "dense_BiasAdd_0.npy",
                "dense_BiasAdd_0_1.npy",
                "_escape.npy",
                "Dense_BiasAdd_0_2.npy",
            ],
        )
    }
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".npy") == [
        "x.npy"
    ]  # nothing written outside DIR
    for name, expected in zip(names, run_onnxruntime(model, {"input_1:0": x})):
        np.testing.assert_allclose(np.load(files[name]), expected, rtol=1e-5, atol=1e-6)
    assert (
        _cli(
            "run",
            tmp_path / "tf.so",
            "--input",
            f"input_1:0={tmp_path / 'x.npy'}",
            "--output-dir",
            out,
            "--repeat",
            1,
        )
        == 0
    )
    assert (
        f"dense/BiasAdd:0: shape (1, 4) float32 -> {out / 'dense_BiasAdd_0.npy'}"
        in capsys.readouterr().out
    )


def test_input_names_holding_equals_signs(tmp_path, capsys):
    nodes = [helper.make_node("Sub", ["a=b", "a"], ["d"])]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in ("a=b", "a")]
    graph = helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info("d", TensorProto.FLOAT, [2, 3])]
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "eq.onnx"
    )
    np.save(tmp_path / "five.npy", np.full((2, 3), 5, "float32"))
    np.save(tmp_path / "two.npy", np.full((2, 3), 2, "float32"))
    assert _cli("compile", tmp_path / "eq.onnx", "-o", tmp_path / "eq.so") == 0
    for order in (1, -1):
        items = [f"a={tmp_path / 'two.npy'}", f"a=b={tmp_path / 'five.npy'}"][::order]
        assert (
            _cli(
                "run",
                tmp_path / "eq.so",
                *[a for item in items for a in ("--input", item)],
                "--output-dir",
                tmp_path,
                "--repeat",
                1,
            )
            == 0
        )
        np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), np.full((2, 3), 3, "float32"))
    capsys.readouterr()
    assert (
        _cli(
            "run",
            tmp_path / "eq.so",
            "--input",
            f"a={tmp_path / 'two.npy'}",
            "--input",
            f"a={tmp_path / 'five.npy'}",
        )
        == 1
    )
    assert "input a given twice" in capsys.readouterr().err


def _batch_model(path):
    """``Gemm(x, W) + z`` with a symbolic ``batch`` dimension shared by both inputs."""
    w = np.linspace(-1, 1, 16 * 8, dtype="float32").reshape(8, 16)
    nodes = [
        helper.make_node("Gemm", ["x", "W"], ["h"], transB=1),
        helper.make_node("Add", ["h", "z"], ["y"]),
    ]
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16]),
        helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 8]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return model


def test_symbolic_dimensions_are_recorded_and_run_at_any_size(tmp_path, capsys, rng):
    model = _batch_model(tmp_path / "b.onnx")
    lib = tmp_path / "b.so"
    assert _cli("compile", tmp_path / "b.onnx", "-o", lib) == 0
    assert [
        spec["shape"] for spec in json.loads((tmp_path / "b.so.json").read_text())["inputs"]
    ] == [["batch", 16], ["batch", 8]]
    for batch in (1, 5):
        feeds = {
            "x": rng.standard_normal((batch, 16)).astype("float32"),
            "z": rng.standard_normal((batch, 8)).astype("float32"),
        }
        for name, value in feeds.items():
            np.save(tmp_path / f"{name}.npy", value)
        assert (
            _cli(
                "run",
                lib,
                "--input",
                f"x={tmp_path / 'x.npy'}",
                "--input",
                f"z={tmp_path / 'z.npy'}",
                "--output-dir",
                tmp_path,
                "--repeat",
                1,
            )
            == 0
        )
        np.testing.assert_allclose(
            np.load(tmp_path / "y.npy"), run_onnxruntime(model, feeds)[0], rtol=1e-5, atol=1e-5
        )
    np.save(tmp_path / "z3.npy", np.zeros((3, 8), "float32"))
    np.save(tmp_path / "x15.npy", np.zeros((5, 15), "float32"))
    np.save(tmp_path / "x64.npy", np.zeros((5, 16), "float64"))
    for x, z, message in [
        ("x15", "z", "input x: shape (5, 15), expected (batch, 16)"),
        ("x64", "z", "input x: dtype float64, expected float32"),
        ("x", "z3", "input z: dimension batch is 3, but 5 in input x"),
    ]:
        assert (
            _cli("run", lib, "--input", f"x={tmp_path / x}.npy", "--input", f"z={tmp_path / z}.npy")
            == 1
        )
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "items, message",
    [
        (["q=2,16"], "--input-shape: no input named 'q' (the model's inputs: x, z)"),
        (["x=0,16"], "--input-shape x=0,16: dimensions must be positive integers"),
        (["x=2,a"], "--input-shape x=2,a: dimensions must be positive integers"),
        (["x"], "--input-shape expects NAME=D1,D2,..."),
        (["x=2"], "--input-shape: x has 2 dimensions (batch, 16), got 1"),
        (["x=2,15"], "--input-shape: dimension 1 of x is static (16), got 15"),
        (["x=2,16", "z=3,8"], "--input-shape: dimension batch is 2 in x but 3 in z"),
        (["x=2,16", "x=3,16"], "--input-shape: input x given twice"),
    ],
)
def test_input_shape_is_checked(tmp_path, capsys, items, message):
    _batch_model(tmp_path / "b.onnx")
    options = [a for item in items for a in ("--input-shape", item)]
    for command in (
        ["compile", tmp_path / "b.onnx", "-o", tmp_path / "b.so"],
        ["analyze", tmp_path / "b.onnx"],
        ["tune", tmp_path / "b.onnx", "--db", tmp_path / "db"],
    ):
        assert _cli(*command, *options) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_input_shape_specialises_a_sparse_accel_compile(tmp_path, capsys, rng):
    model = _batch_model(tmp_path / "b.onnx")
    lib = tmp_path / "b.so"
    assert (
        _cli(
            "compile",
            tmp_path / "b.onnx",
            "-o",
            lib,
            "--target",
            "sparse-accel",
            "--input-shape",
            "x=4,16",
        )
        == 0
    )
    assert "device" in capsys.readouterr().out
    assert [
        spec["shape"] for spec in json.loads((tmp_path / "b.so.json").read_text())["inputs"]
    ] == [[4, 16], [4, 8]]  # batch is shared
    feeds = {
        "x": rng.standard_normal((4, 16)).astype("float32"),
        "z": rng.standard_normal((4, 8)).astype("float32"),
    }
    for name, value in feeds.items():
        np.save(tmp_path / f"{name}.npy", value)
    assert (
        _cli(
            "run",
            lib,
            "--input",
            f"x={tmp_path / 'x.npy'}",
            "--input",
            f"z={tmp_path / 'z.npy'}",
            "--output-dir",
            tmp_path,
            "--repeat",
            1,
        )
        == 0
    )
    got, (expected,) = np.load(tmp_path / "y.npy"), run_onnxruntime(model, feeds)
    assert (got * expected).sum() / np.linalg.norm(got) / np.linalg.norm(expected) > 0.99


def test_input_shape_specialises_a_host_compile(tmp_path, capsys, rng):
    model = _batch_model(tmp_path / "b.onnx")
    lib = tmp_path / "b.so"
    assert _cli("compile", tmp_path / "b.onnx", "-o", lib, "--input-shape", "x=3,16") == 0
    assert [
        spec["shape"] for spec in json.loads((tmp_path / "b.so.json").read_text())["inputs"]
    ] == [[3, 16], [3, 8]]
    feeds = {
        "x": rng.standard_normal((3, 16)).astype("float32"),
        "z": rng.standard_normal((3, 8)).astype("float32"),
    }
    for name, value in feeds.items():
        np.save(tmp_path / f"{name}.npy", value)
    assert (
        _cli(
            "run",
            lib,
            "--input",
            f"x={tmp_path / 'x.npy'}",
            "--input",
            f"z={tmp_path / 'z.npy'}",
            "--output-dir",
            tmp_path,
            "--repeat",
            1,
        )
        == 0
    )
    np.testing.assert_allclose(
        np.load(tmp_path / "y.npy"), run_onnxruntime(model, feeds)[0], rtol=1e-5, atol=1e-5
    )
    np.save(tmp_path / "x.npy", np.zeros((4, 16), "float32"))
    assert (
        _cli("run", lib, "--input", f"x={tmp_path / 'x.npy'}", "--input", f"z={tmp_path / 'z.npy'}")
        == 1
    )
    assert "input x: shape (4, 16), expected (3, 16)" in capsys.readouterr().err


def test_input_shape_reaches_analyze(tmp_path, capsys):
    _batch_model(tmp_path / "b.onnx")
    assert _cli("analyze", tmp_path / "b.onnx", "--json", "--input-shape", "x=3,16") == 0
    assert len(json.loads(capsys.readouterr().out)["layers"]) == 1


def _tvm_sparse(cwd, *args) -> subprocess.CompletedProcess:
    """The ``tvm-sparse`` command as a user runs it, in ``cwd``."""
    command = str(Path(sys.executable).with_name("tvm-sparse"))
    return subprocess.run(
        [command, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_prune_command_prunes_quantized_and_tied_weights_in_place(tmp_path):
    """An int8 weight behind DequantizeLinear and a weight shared by three layers, through the installed command."""
    rng = np.random.default_rng(6)
    w = rng.standard_normal((64, 32)).astype("float32")
    w += np.sign(w)  # no value quantizes to zero
    scale = (np.abs(w).max(axis=0) / 100).astype("float32")
    q = np.clip(np.rint(w / scale) + 3, -128, 127).astype("int8")
    e = rng.standard_normal((48, 32)).astype("float32")
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=1),
        helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
        helper.make_node("Gemm", ["h", "E"], ["s"], transB=1, name="enc"),
        helper.make_node("MatMul", ["s", "E"], ["c"], name="readout"),
        helper.make_node("Gemm", ["c", "E"], ["y"], transB=1, name="head"),
    ]
    inits = [
        numpy_helper.from_array(q, "w_q"),
        numpy_helper.from_array(scale, "w_scale"),
        numpy_helper.from_array(np.full(32, 3, "int8"), "w_zero"),
        numpy_helper.from_array(e, "E"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 48])],
        inits,
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "m.onnx"
    )
    done = _tvm_sparse(
        tmp_path, "prune", "m.onnx", "-o", "p.onnx", "--pattern", "block:8x1", "--density", "0.25"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "proj: 32x64 density 1.000 -> 0.250",
        "enc: 48x32 density 1.000 -> 0.250 (shared with readout, head)",
        "wrote p.onnx (2 weights pruned to block:8x1)",
    ]
    pruned = onnx.load(tmp_path / "p.onnx")
    onnx.checker.check_model(pruned)
    stored = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    assert (
        stored["w_q"].dtype == np.int8 and np.mean(stored["w_q"] != 3) == 0.25
    )  # pruned to the zero point
    done = _tvm_sparse(tmp_path, "analyze", "p.onnx", "--json")
    assert done.returncode == 0, done.stderr
    layers = json.loads(done.stdout)["layers"]
    assert [(row["name"], row["density"]) for row in layers] == [
        ("proj", 0.25),
        ("enc", 0.25),
        ("readout", 0.25),
        ("head", 0.25),
    ]


def test_prune_command_names_the_layers_it_cannot_prune(tmp_path):
    model = mlp(batch=2, sizes=(16, 8))
    model.graph.input.append(helper.make_tensor_value_info("w_in", TensorProto.FLOAT, [8, 4]))
    model.graph.node.append(
        helper.make_node("MatMul", [model.graph.output[0].name, "w_in"], ["z"], name="late")
    )
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 4]))
    onnx.save(model, tmp_path / "some.onnx")
    done = _tvm_sparse(
        tmp_path,
        "prune",
        "some.onnx",
        "-o",
        "p.onnx",
        "--pattern",
        "unstructured",
        "--density",
        "0.5",
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "tvm-sparse prune: warning: left unpruned: late (MatMul): its weight 'w_in' is a graph input, not a constant"
    ]
    assert (
        done.stdout.splitlines()[-1]
        == "wrote p.onnx (1 weights pruned to unstructured; 1 layer(s) left unpruned, see the warnings)"
    )

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")],
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 4]) for n in ("x", "w")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
    )
    onnx.save(helper.make_model(graph), tmp_path / "none.onnx")
    done = _tvm_sparse(
        tmp_path,
        "prune",
        "none.onnx",
        "-o",
        "q.onnx",
        "--pattern",
        "unstructured",
        "--density",
        "0.5",
    )
    assert done.returncode == 1 and done.stdout == "" and not (tmp_path / "q.onnx").exists()
    assert done.stderr.splitlines() == [
        "tvm-sparse prune: error: nothing to prune: no layer's weight can be pruned "
        "(fc (MatMul): its weight 'w' is a graph input, not a constant)"
    ]


def _one_line_error(capsys, message):
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_outputs_that_would_destroy_inputs_or_waste_work_are_refused_first(
    tmp_path, compiled, capsys
):
    """An output that is an input, or that cannot be written, fails before any loading or compiling."""
    import time

    model = tmp_path / "copy.onnx"
    onnx.save(mlp(batch=2, sizes=(16, 8)), model)
    original = model.read_bytes()
    (tmp_path / "sub").mkdir()
    (tmp_path / "file.txt").write_text("x")
    np.save(tmp_path / "x.npy", np.zeros((4, 16), "float32"))
    cases = [
        (["compile", model, "-o", model], f"-o {model} is also an input ({model})"),
        (["compile", model, "-o", tmp_path / "sub" / ".." / "copy.onnx"], "is also an input"),
        (
            ["prune", model, "-o", model, "--pattern", "unstructured", "--density", "0.5"],
            "is also an input",
        ),
        (
            ["compile", model, "-o", tmp_path / "missing_dir" / "x.so"],
            f"no such directory: {tmp_path / 'missing_dir'}",
        ),
        (["compile", model, "-o", tmp_path / "file.txt" / "x.so"], "not a directory"),
        (["compile", model, "-o", tmp_path / "sub"], "is a directory"),
        (
            [
                "prune",
                model,
                "-o",
                tmp_path / "missing_dir" / "p.onnx",
                "--pattern",
                "unstructured",
                "--density",
                "0.5",
            ],
            "no such directory",
        ),
        (["tune", model, "--db", tmp_path / "missing_dir" / "db"], "--db"),
        (["tune", model, "--db", tmp_path / "file.txt"], "not a directory"),
        (["analyze", model, "--figures", tmp_path / "file.txt"], "--figures"),
        (
            [
                "run",
                compiled,
                "--input",
                f"x={tmp_path / 'x.npy'}",
                "--output-dir",
                tmp_path / "file.txt",
            ],
            "--output-dir",
        ),
    ]
    for command, message in cases:
        start = time.perf_counter()
        assert _cli(*command) == 1
        assert time.perf_counter() - start < 0.5, command
        _one_line_error(capsys, message)
    assert model.read_bytes() == original and not (tmp_path / "missing_dir").exists()


def test_run_prints_its_result_when_an_output_cannot_be_saved(tmp_path, compiled, capsys):
    np.save(tmp_path / "x.npy", np.zeros((4, 16), "float32"))
    (tmp_path / "out" / "y.npy").mkdir(parents=True)  # np.save cannot replace a directory
    assert (
        _cli(
            "run",
            compiled,
            "--input",
            f"x={tmp_path / 'x.npy'}",
            "--output-dir",
            tmp_path / "out",
            "--repeat",
            1,
            "--json",
        )
        == 1
    )
    captured = capsys.readouterr()
    assert json.loads(captured.out)["outputs"]["y"] == {"shape": [4, 8], "dtype": "float32"}
    assert (
        f"cannot write {tmp_path / 'out' / 'y.npy'}" in captured.err
        and len(captured.err.strip().splitlines()) == 1
    )


def test_calibration_takes_stacked_samples_and_several_files(tmp_path, capsys, rng):
    """A stacked array and one file per sample calibrate alike, using every sample; bad ones are one line."""
    model, lib = tmp_path / "m.onnx", tmp_path / "m.so"
    onnx.save(mlp(batch=4, sizes=(16, 32, 8)), model)
    samples = (
        rng.standard_normal((2, 4, 16)).astype("float32")
        * np.array([1, 8], "float32")[:, None, None]
    )
    np.save(tmp_path / "stack.npy", samples)
    np.save(tmp_path / "a.npy", samples[0])
    np.save(tmp_path / "b.npy", samples[1])

    def table(*files):
        assert (
            _cli(
                "compile",
                model,
                "-o",
                lib,
                "--target",
                "sparse-accel",
                *[a for f in files for a in ("--calibration", f"x={tmp_path / f}")],
            )
            == 0
        )
        return capsys.readouterr().out.splitlines()[:-1]  # the last line has the time

    stacked = table("stack.npy")
    assert stacked == table("a.npy", "b.npy") != table("a.npy")  # the second sample's range counts
    np.save(tmp_path / "narrow.npy", np.zeros((4, 15), "float32"))
    for files, message in [
        (
            ["narrow.npy"],
            "calibration input x: shape (4, 15), expected (4, 16) (or N samples stacked as (N, 4, 16))",
        ),
        (["a.npy", "narrow.npy"], "calibration input x: shape (4, 15)"),
    ]:
        assert (
            _cli(
                "compile",
                model,
                "-o",
                lib,
                "--target",
                "sparse-accel",
                *[a for f in files for a in ("--calibration", f"x={tmp_path / f}")],
            )
            == 1
        )
        _one_line_error(capsys, message)
    assert (
        _cli(
            "compile",
            model,
            "-o",
            lib,
            "--target",
            "sparse-accel",
            "--calibration",
            f"q={tmp_path / 'a.npy'}",
        )
        == 1
    )
    _one_line_error(capsys, "--calibration: no input named 'q' (the model's inputs: x)")

    _batch_model(tmp_path / "b.onnx")
    np.save(tmp_path / "z.npy", np.zeros((4, 8), "float32"))
    np.save(tmp_path / "z3.npy", np.zeros((3, 4, 8), "float32"))
    for items, message in [
        (
            ["x=a.npy", "x=b.npy", "z=z.npy"],
            "--calibration: give every input the same number of files",
        ),
        (
            ["x=stack.npy", "z=z3.npy"],
            "calibration: the inputs of one dict must hold the same number of stacked samples, got x 2 stacked, z 3 stacked",
        ),
        (["x=a.npy"], "calibration: no values for input(s) z"),
    ]:
        options = [
            a for item in items for a in ("--calibration", item.replace("=", f"={tmp_path}/", 1))
        ]
        assert (
            _cli(
                "compile",
                tmp_path / "b.onnx",
                "-o",
                lib,
                "--target",
                "sparse-accel",
                "--input-shape",
                "x=4,16",
                *options,
            )
            == 1
        )
        _one_line_error(capsys, message)


def test_sparse_accel_compile_names_the_prune_pattern_the_device_needs(tmp_path, capsys):
    model, pruned, lib = tmp_path / "m.onnx", tmp_path / "p.onnx", tmp_path / "p.so"
    onnx.save(mlp(batch=8, sizes=(64, 128, 32)), model)
    assert _cli("prune", model, "-o", pruned, "--pattern", "nm:2:4", "--density", "0.1") == 1
    _one_line_error(
        capsys,
        "--density does not apply to nm:2:4: N:M keeps N of every M weights, so its density is 2/4",
    )
    assert not pruned.exists()
    hint = "device blocks are 16x16: prune with --pattern block:16x16"
    for pattern, hinted in (("block:16x1", True), ("block:16x16", False)):
        assert _cli("prune", model, "-o", pruned, "--pattern", pattern, "--density", "0.1") == 0
        capsys.readouterr()
        assert _cli("compile", pruned, "-o", lib, "--target", "sparse-accel") == 0
        out = capsys.readouterr().out
        assert (out.count(hint) == 2) == hinted, out  # both layers


def test_small_cli_gaps(tmp_path, compiled, capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        _cli("--version")
    assert (
        exit_.value.code == 0 and capsys.readouterr().out == f"tvm-sparse {version('tvm-sparse')}\n"
    )
    for command in (
        ["analyze", tmp_path],
        ["compile", tmp_path, "-o", tmp_path / "o.so"],
        ["run", tmp_path],
    ):
        assert _cli(*command) == 1
        _one_line_error(capsys, f"{tmp_path}: is a directory")
    (tmp_path / "text.npy").write_text("1 2 3\n")
    np.save(tmp_path / "x.npy", np.zeros((4, 16), "float32"))
    for options, message in [
        (
            ["--input", f"x={tmp_path / 'text.npy'}"],
            f"input x: {tmp_path / 'text.npy'} is not a .npy array file",
        ),
        (
            ["--input", f"x={tmp_path / 'x.npy'}", "--input", f"x={tmp_path / 'x.npy'}"],
            "--input: input x given twice",
        ),
        (
            ["--input", f"x={tmp_path / 'x.npy'}", "--repeat", "0"],
            "--repeat must be at least 1, got 0",
        ),
        (
            ["--input", f"x={tmp_path / 'x.npy'}", "--repeat", "-2"],
            "--repeat must be at least 1, got -2",
        ),
    ]:
        assert _cli("run", compiled, *options) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "allow_pickle" not in err


def test_warnings_are_one_line_and_a_closed_pipe_is_quiet(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(mlp(batch=2, sizes=(16, 8)), model)
    assert _cli("compile", model, "-o", tmp_path / "m.so", "--db", tmp_path / "nodb") == 0
    assert capsys.readouterr().err.splitlines() == [
        f"tvm-sparse compile: warning: ignoring tuning database: {tmp_path / 'nodb'}: not a tuning database "
        "(no tvm_sparse.json; create one with `tvm-sparse tune`)"
    ]
    command = str(Path(sys.executable).with_name("tvm-sparse"))
    reader = subprocess.Popen(
        [command, "analyze", "m.onnx"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    reader.stdout.close()  # as `| head` does once it has its lines
    stderr = reader.communicate(timeout=120)[1]
    assert reader.returncode == 141 and stderr == b""


def test_run_reports_simulated_device_time_and_writes_a_whole_model_trace(
    tmp_path, capsys, compiled, rng
):
    from tvm_sparse.testing import GraphBuilder

    long_name = (
        "encoder.layer.11.attention.output.dense_projection"  # longer than any fixed name column
    )
    g = GraphBuilder(seed=3)
    h = g.node("Relu", [g.linear("x", long_name, 64, 128, gemm=True)])
    y = g.node("Identity", [g.linear(h, "head", 128, 32, gemm=True)], name="y")
    onnx.save(
        g.model(
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 64])],
            [helper.make_tensor_value_info(y, TensorProto.FLOAT, [8, 32])],
        ),
        tmp_path / "dev.onnx",
    )
    np.save(tmp_path / "x.npy", rng.standard_normal((8, 64)).astype("float32"))
    lib, x = tmp_path / "dev.so", f"x={tmp_path / 'x.npy'}"
    assert (
        _cli(
            "compile",
            tmp_path / "dev.onnx",
            "-o",
            lib,
            "--target",
            "sparse-accel",
            "--calibration",
            x,
        )
        == 0
    )
    assert f"\n{long_name} " in capsys.readouterr().out  # tables show whole names
    assert _cli("analyze", tmp_path / "dev.onnx", "--compression") == 0
    assert f"\n{long_name} " in capsys.readouterr().out
    assert _cli("run", lib, "--input", x, "--repeat", 1, "--report") == 0
    text = capsys.readouterr().out
    assert "(host wall time of the simulation)" in text and "simulated device time: " in text
    assert f"\n{long_name} device " in text  # the whole name, in a column sized to it

    assert (
        _cli(
            "run",
            lib,
            "--input",
            x,
            "--repeat",
            1,
            "--report",
            "--json",
            "--trace",
            tmp_path / "trace.json",
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    layers = [layer for layer in doc["layers"] if layer["runs_on"] == "device"]
    assert [layer["name"] for layer in layers] == [long_name, "head"]
    assert (
        doc["total_device_time_ms"] == pytest.approx(doc["total_cycles"] / doc["clock_mhz"] / 1e3)
        and doc["total_device_time_ms"] > 0
    )
    assert all(
        layer["device_time_us"] == pytest.approx(layer["cycles"] / doc["clock_mhz"])
        for layer in layers
    )
    events = json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    tracks = {
        e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"
    }
    assert {"load queue", "compute queue", "store queue", "layers"} == set(tracks.values())
    spans = [e for e in events if e["ph"] == "X" and tracks[e["tid"]] == "layers"]
    assert [e["name"] for e in spans] == [long_name, "head"] and spans[0]["ts"] == 0
    assert all(
        a["ts"] + a["dur"] <= b["ts"] + 1e-9 for a, b in zip(spans, spans[1:])
    )  # in order, no overlap
    assert spans[-1]["ts"] + spans[-1]["dur"] == pytest.approx(
        doc["total_device_time_ms"] * 1e3
    )  # microseconds
    assert max(e["ts"] + e["dur"] for e in events if e["ph"] == "X") == pytest.approx(
        doc["total_device_time_ms"] * 1e3
    )

    assert (
        _cli("run", lib, "--input", x, "--trace", tmp_path / "missing" / "trace.json") == 1
    )  # refused before the run
    err = capsys.readouterr().err
    assert "--trace" in err and "no such directory" in err and len(err.strip().splitlines()) == 1
    np.save(tmp_path / "host_x.npy", np.zeros((4, 16), "float32"))
    assert (
        _cli(
            "run",
            compiled,
            "--input",
            f"x={tmp_path / 'host_x.npy'}",
            "--repeat",
            1,
            "--trace",
            tmp_path / "host.json",
        )
        == 1
    )
    err = capsys.readouterr().err
    assert (
        "--trace shows device layers, and this library ran none" in err
        and len(err.strip().splitlines()) == 1
    )


def _on_a_terminal(cwd, *args) -> str:
    """What ``tvm-sparse ARGS`` writes to stderr when stderr is a terminal (a pseudo-terminal)."""
    import os
    import pty

    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "TVM_SPARSE_QUIET"}
    process = subprocess.Popen(
        [sys.executable, "-m", "tvm_sparse.cli", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=follower,
        env=env,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=300) == 0
    return b"".join(chunks).decode(errors="replace")


def test_compile_shows_progress_on_a_terminal_only(tmp_path):
    onnx.save(mlp(), tmp_path / "m.onnx")
    shown = _on_a_terminal(tmp_path, "compile", "m.onnx", "-o", "m.so")
    assert "Relax pass" in shown and "compiling for" in shown
    assert "Relax pass" not in _on_a_terminal(
        tmp_path, "compile", "m.onnx", "-o", "m.so", "--quiet"
    )
    piped = subprocess.run(
        [sys.executable, "-m", "tvm_sparse.cli", "compile", "m.onnx", "-o", "m.so"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert piped.returncode == 0 and piped.stderr == ""
