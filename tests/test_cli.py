import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import run_onnxruntime
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
    assert _cli("run", lib, "--input", f"x={tmp_path / 'x.npy'}", "--output-dir", tmp_path / "out", "--repeat", 3, "--json") == 0
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
np.save({str(tmp_path / 'y.npy')!r}, vm["main"](tvm.runtime.tensor(np.load({str(tmp_path / 'x.npy')!r}))).numpy())
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
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]
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
    assert _cli("prune", path, "-o", tmp_path / "p.onnx", "--pattern", "block:16x1", "--density", "2") == 1
    assert "density must be in (0, 1]" in capsys.readouterr().err


def test_float16_weights_stay_dense(tmp_path, rng):
    from tvm_sparse import analyze

    w = rng.standard_normal((16, 8)).astype("float16")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"], name="half")]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [4, 8])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    (row,) = analyze(model).layers
    assert row.choice.format == "dense" and "float16" in row.note


def test_sparse_accel_compile_and_run_report(tmp_path, capsys, rng):
    model_path, pruned, lib = tmp_path / "m.onnx", tmp_path / "p.onnx", tmp_path / "p.so"
    onnx.save(mlp(batch=8, sizes=(64, 128, 32)), model_path)
    x = rng.standard_normal((8, 64)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    assert _cli("prune", str(model_path), "-o", str(pruned), "--pattern", "nm:2:4") == 0
    assert _cli("compile", str(pruned), "-o", str(lib), "--target", "sparse-accel", "--calibration", f"x={tmp_path / 'x.npy'}") == 0
    assert "nm" in capsys.readouterr().out
    assert _cli("run", str(lib), "--input", f"x={tmp_path / 'x.npy'}", "--report", "--json", "--repeat", "1", "--output-dir", str(tmp_path)) == 0
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
    assert _cli("compile", str(model_path), "-o", str(tmp_path / "a.so"), "--target", "sparse-accel", "--calibration", "x") == 1
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
    assert _cli("prune", model_path, "-o", out, "--pattern", "decompose:rank=4,coef-density=0.5") == 0
    printed = capsys.readouterr().out
    assert "rank 4 of 9" in printed and "output error" in printed
    assert sum(n.op_type == "Conv" for n in onnx.load(out).graph.node) > sum(n.op_type == "Conv" for n in onnx.load(model_path).graph.node)
    assert _cli("prune", model_path, "-o", out, "--pattern", "decompose:rank=x") == 1
    assert "decompose:rank=x" in capsys.readouterr().err


def _tvm_sparse(cwd, *args) -> subprocess.CompletedProcess:
    """The ``tvm-sparse`` command as a user runs it, in ``cwd``."""
    command = str(Path(sys.executable).with_name("tvm-sparse"))
    return subprocess.run([command, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_prune_command_prunes_quantized_and_tied_weights_in_place(tmp_path):
    """An int8 weight behind DequantizeLinear and a weight shared by three layers, through the installed command."""
    rng = np.random.default_rng(6)
    w = rng.standard_normal((64, 32)).astype("float32")
    w += np.sign(w)  # no value quantizes to zero
    scale = (np.abs(w).max(axis=0) / 100).astype("float32")
    q = np.clip(np.rint(w / scale) + 3, -128, 127).astype("int8")
    e = rng.standard_normal((48, 32)).astype("float32")
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=1), helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
             helper.make_node("Gemm", ["h", "E"], ["s"], transB=1, name="enc"), helper.make_node("MatMul", ["s", "E"], ["c"], name="readout"),
             helper.make_node("Gemm", ["c", "E"], ["y"], transB=1, name="head")]
    inits = [numpy_helper.from_array(q, "w_q"), numpy_helper.from_array(scale, "w_scale"), numpy_helper.from_array(np.full(32, 3, "int8"), "w_zero"),
             numpy_helper.from_array(e, "E")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 48])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "m.onnx")
    done = _tvm_sparse(tmp_path, "prune", "m.onnx", "-o", "p.onnx", "--pattern", "block:8x1", "--density", "0.25")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["proj: 32x64 density 1.000 -> 0.250", "enc: 48x32 density 1.000 -> 0.250 (shared with readout, head)",
                                        "wrote p.onnx (2 weights pruned to block:8x1)"]
    pruned = onnx.load(tmp_path / "p.onnx")
    onnx.checker.check_model(pruned)
    stored = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    assert stored["w_q"].dtype == np.int8 and np.mean(stored["w_q"] != 3) == 0.25  # pruned to the zero point
    done = _tvm_sparse(tmp_path, "analyze", "p.onnx", "--json")
    assert done.returncode == 0, done.stderr
    layers = json.loads(done.stdout)["layers"]
    assert [(row["name"], row["density"]) for row in layers] == [("proj", 0.25), ("enc", 0.25), ("readout", 0.25), ("head", 0.25)]


def test_prune_command_names_the_layers_it_cannot_prune(tmp_path):
    model = mlp(batch=2, sizes=(16, 8))
    model.graph.input.append(helper.make_tensor_value_info("w_in", TensorProto.FLOAT, [8, 4]))
    model.graph.node.append(helper.make_node("MatMul", [model.graph.output[0].name, "w_in"], ["z"], name="late"))
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 4]))
    onnx.save(model, tmp_path / "some.onnx")
    done = _tvm_sparse(tmp_path, "prune", "some.onnx", "-o", "p.onnx", "--pattern", "unstructured", "--density", "0.5")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["tvm-sparse prune: warning: left unpruned: late (MatMul): its weight 'w_in' is a graph input, not a constant"]
    assert done.stdout.splitlines()[-1] == "wrote p.onnx (1 weights pruned to unstructured; 1 layer(s) left unpruned, see the warnings)"

    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], "g",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4, 4]) for n in ("x", "w")], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])])
    onnx.save(helper.make_model(graph), tmp_path / "none.onnx")
    done = _tvm_sparse(tmp_path, "prune", "none.onnx", "-o", "q.onnx", "--pattern", "unstructured", "--density", "0.5")
    assert done.returncode == 1 and done.stdout == "" and not (tmp_path / "q.onnx").exists()
    assert done.stderr.splitlines() == ["tvm-sparse prune: error: nothing to prune: no layer's weight can be pruned "
                                        "(fc (MatMul): its weight 'w' is a graph input, not a constant)"]
