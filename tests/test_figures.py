"""PNG figures: written, readable, and showing what the report and the weights say."""

import json

import numpy as np
import onnx
import pytest

from tvm_sparse.accel import load_device
from tvm_sparse.cli import main
from tvm_sparse.figures import device_layers_figure, roofline_figure, sparsity_maps_figure
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
    assert (
        main(
            [
                "compile",
                str(tmp_path / "m.onnx"),
                "-o",
                str(tmp_path / "m.so"),
                "--target",
                "sparse-accel",
            ]
        )
        == 0
    )
    capsys.readouterr()
    figures = tmp_path / "figures"
    assert (
        main(
            [
                "run",
                str(tmp_path / "m.so"),
                "--input",
                f"x={tmp_path / 'x.npy'}",
                "--report",
                "--json",
                "--repeat",
                "1",
                "--figures",
                str(figures),
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    for name in ("device_layers.png", "roofline.png"):
        _png(figures / name)

    bars = device_layers_figure(report, tmp_path / "bars.png")
    by_cycles = sorted(report["layers"], key=lambda layer: -layer["cycles"])
    assert bars["layers"] == [layer["name"] for layer in by_cycles] and bars["cycles"] == [
        layer["cycles"] for layer in by_cycles
    ]
    roof = roofline_figure(report, load_device("sparse-accel"), tmp_path / "roof.png")
    for _, intensity, throughput in roof["points"]:
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
    assert (
        main(
            [
                "analyze",
                str(tmp_path / "m.onnx"),
                "--figures",
                str(tmp_path / "f"),
                "--layers",
                "fc0",
            ]
        )
        == 0
    )
    _png(tmp_path / "f" / "sparsity_maps.png")
    assert (
        main(
            [
                "analyze",
                str(tmp_path / "m.onnx"),
                "--figures",
                str(tmp_path / "f"),
                "--layers",
                "nope",
            ]
        )
        == 1
    )
    assert "no weight-carrying layer named nope" in capsys.readouterr().err


def _many_layers_report(count=54, seed=0):
    """A run report of ``count`` device layers on sparse-accel (256 MACs/cycle, 32 B/cycle), some of them alike."""
    rng = np.random.default_rng(seed)
    layers = []
    for i in range(count):
        macs, traffic = int(rng.integers(10_000, 2_000_000)), int(rng.integers(2_000, 100_000))
        cycles = int(max(macs / 256, traffic / 32) * rng.uniform(1.1, 3))
        if i % 9 == 1:  # the same layer again: the same point on the roofline
            macs, traffic, cycles = (
                layers[-1]["macs_issued"],
                layers[-1]["dram_read_bytes"],
                layers[-1]["cycles"],
            )
        layers.append(
            {
                "name": f"stage{i // 12}.block{i % 12 // 3}.conv{i % 3 + 1}.a_long_layer_name",
                "runs_on": "device",
                "mode": ("block", "dense", "nm")[i % 3],
                "cycles": cycles,
                "macs_issued": macs,
                "dram_read_bytes": traffic,
                "dram_read_metadata_bytes": 0,
                "dram_write_bytes": 0,
                "energy_pj": cycles * 50.0,
            }
        )
    total = sum(layer["cycles"] for layer in layers)
    return {
        "device": "sparse-accel",
        "clock_mhz": 1000.0,
        "total_cycles": total,
        "total_device_time_ms": total / 1e6,
        "total_energy_pj": sum(layer["energy_pj"] for layer in layers),
        "layers": layers,
    }


def _overlaps(boxes) -> list:
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :] if a.overlaps(b)]


def _renderer(fig):
    fig.draw_without_rendering()
    return fig.canvas.get_renderer()


def _tick_boxes(axis, renderer) -> list:
    return [
        label.get_window_extent(renderer)
        for label in axis.get_ticklabels()
        if label.get_visible() and label.get_text()
    ]


def test_device_layers_figure_names_the_top_layers_and_sums_the_rest(tmp_path):
    report = _many_layers_report()
    bars = device_layers_figure(report, tmp_path / "bars.png", top=20)
    _png(tmp_path / "bars.png")
    assert (
        len(bars["layers"]) == 21
        and bars["layers"][-1] == "other 34 layers"
        and bars["other_layers"] == 34
    )
    assert (
        bars["cycles"][:20]
        == sorted((layer["cycles"] for layer in report["layers"]), reverse=True)[:20]
    )
    assert sum(bars["cycles"]) == report["total_cycles"] and sum(
        bars["energy_uj"]
    ) == pytest.approx(report["total_energy_pj"] / 1e6)
    fig = bars["figure"]
    renderer = _renderer(fig)
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            assert not _overlaps(_tick_boxes(axis, renderer))
    names = [label.get_text() for label in fig.axes[0].get_yticklabels()]
    assert names == bars["layers"]  # whole names, top first
    assert "us simulated device time" in fig.get_suptitle()
    assert device_layers_figure(report, tmp_path / "b.png", top=53)["layers"] == [
        layer["name"] for layer in sorted(report["layers"], key=lambda layer: -layer["cycles"])
    ]


def test_roofline_numbers_the_top_layers_without_overlap(tmp_path):
    from matplotlib.text import Text

    report = _many_layers_report()
    roof = roofline_figure(report, load_device("sparse-accel"), tmp_path / "roof.png", top=8)
    _png(tmp_path / "roof.png")
    fig = roof["figure"]
    (ax,) = fig.axes
    renderer = _renderer(fig)
    numbers = [text.get_text() for text in ax.texts]
    assert 5 <= len(roof["labels"]) <= 8 and numbers == [
        str(i + 1) for i in range(len(roof["labels"]))
    ]
    assert any(
        label.endswith("alike") for label in roof["labels"]
    )  # coincident layers share one number
    boxes = [Text.get_window_extent(text, renderer) for text in ax.texts]
    assert not _overlaps(boxes)
    frame = ax.get_window_extent(renderer)
    assert all(
        frame.x0 <= b.x0 and b.x1 <= frame.x1 and frame.y0 <= b.y0 and b.y1 <= frame.y1
        for b in boxes
    )
    (legend,) = fig.legends  # the legend explains the roof, the colours (modes) and the numbers
    entries = [text.get_text() for text in legend.get_texts()]
    assert entries[0].startswith("roof: 256 MACs/cycle") and {
        e.split(":")[0] for e in entries[1:4]
    } == {"block", "dense", "nm"}
    assert [e.split(": ")[0] for e in entries[4:]] == roof["labels"] and all(
        e.endswith("of cycles") for e in entries[4:]
    )
    for axis in (ax.xaxis, ax.yaxis):
        labels = [
            label.get_text()
            for label in axis.get_ticklabels()
            if label.get_visible() and label.get_text()
        ]
        assert len(labels) >= 2 and all(
            float(label) > 0 for label in labels
        )  # plain numbers, not 10^k
        assert not _overlaps(_tick_boxes(axis, renderer))


def test_sparsity_maps_have_integer_ticks_and_separate_panels(tmp_path, rng):
    weights = {
        "tiny": np.ones((10, 20), "float32"),
        "one_block": rng.standard_normal((16, 16)),
        "fc": rng.standard_normal((100, 512)),
        "wide": rng.standard_normal((128, 1152)),
    }
    maps = sparsity_maps_figure(weights, tmp_path / "maps.png")
    _png(tmp_path / "maps.png")
    assert maps["block_density"]["tiny"] == 1.0  # a block cut by the edge counts the entries it has
    fig = maps["figure"]
    renderer = _renderer(fig)
    panels = fig.axes[: len(weights)]
    for ax, w in zip(panels, weights.values()):
        for axis, blocks in ((ax.xaxis, -(-w.shape[1] // 16)), (ax.yaxis, -(-w.shape[0] // 16))):
            ticks = list(axis.get_majorticklocs())
            assert (
                ticks
                and all(float(t).is_integer() and 0 <= t < blocks for t in ticks)
                and len(ticks) <= 9
            )
            assert not _overlaps(_tick_boxes(axis, renderer))
    assert not _overlaps(
        [ax.get_tightbbox(renderer) for ax in panels]
    )  # titles and axis labels stay in their panel
    assert (
        fig.axes[-1].get_ylabel() == "nonzero fraction of each 16x16 block"
    )  # the colour bar says what grey means
