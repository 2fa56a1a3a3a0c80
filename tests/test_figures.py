"""PNG figures: written, readable, and showing what the report and the weights say."""

import json

import numpy as np
import onnx
import pytest

from tvm_sparse.accel import load_device
from tvm_sparse.cli import main
from tvm_sparse.figures import sparsity_maps_figure
from tvm_sparse.prune import prune_onnx
from tvm_sparse.testing import mlp

image = pytest.importorskip("matplotlib.image")


def _png(path):
    pixels = image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 0  # not a blank canvas
    return pixels


def test_run_figures_show_each_device_layer(tmp_path, rng, capsys):
    model, _ = prune_onnx(mlp(batch=8, sizes=(64, 128, 32)), "block:16x1", 0.3)
    onnx.save(model, tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", rng.standard_normal((8, 64)).astype("float32"))
    assert main(["compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.so"), "--target", "sparse-accel"]) == 0
    capsys.readouterr()
    figures = tmp_path / "figures"
    assert main(["run", str(tmp_path / "m.so"), "--input", f"x={tmp_path / 'x.npy'}", "--report", "--json", "--repeat", "1", "--figures", str(figures)]) == 0
    report = json.loads(capsys.readouterr().out)
    for name in ("device_layers.png", "roofline.png"):
        _png(figures / name)

    from tvm_sparse.figures import device_layers_figure, roofline_figure

    bars = device_layers_figure(report, tmp_path / "bars.png")
    assert bars["layers"] == [layer["name"] for layer in report["layers"]] and bars["cycles"] == [layer["cycles"] for layer in report["layers"]]
    roof = roofline_figure(report, load_device("sparse-accel"), tmp_path / "roof.png")
    for (_, intensity, throughput), layer in zip(roof["points"], report["layers"]):
        assert throughput <= roof["peak_macs_per_cycle"]  # no layer above the roof
        assert throughput <= roof["bytes_per_cycle"] * intensity * 1.001


def test_sparsity_maps_show_the_pruned_blocks(tmp_path, rng, capsys):
    w = rng.standard_normal((64, 96)).astype("float32")
    w[:32] = 0  # the upper half of the output blocks is empty
    maps = sparsity_maps_figure({"fc": w}, tmp_path / "maps.png")
    _png(tmp_path / "maps.png")
    assert maps["block_density"]["fc"] == pytest.approx(0.5)

    model, _ = prune_onnx(mlp(batch=8, sizes=(64, 128, 32)), "block:16x1", 0.25)
    onnx.save(model, tmp_path / "m.onnx")
    assert main(["analyze", str(tmp_path / "m.onnx"), "--figures", str(tmp_path / "f"), "--layers", "fc0"]) == 0
    _png(tmp_path / "f" / "sparsity_maps.png")
    assert main(["analyze", str(tmp_path / "m.onnx"), "--figures", str(tmp_path / "f"), "--layers", "nope"]) == 1
    assert "no weight-carrying layer named nope" in capsys.readouterr().err
