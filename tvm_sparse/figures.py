"""PNG figures: a device run's per-layer cycles and energy, the device roofline, weight sparsity maps.

Needs matplotlib (``pip install tvm-sparse[plot]``). Each function writes one
PNG and returns what it plotted (so callers and tests can check the content
without reading pixels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .accel.device import Device
from .errors import TVMSparseError


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise TVMSparseError("figures need matplotlib: pip install 'tvm-sparse[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _device_layers(report: dict) -> list[dict]:
    layers = [layer for layer in report["layers"] if layer["runs_on"] == "device"]
    if not layers:
        raise TVMSparseError("the run has no device layers to plot")
    return layers


def device_layers_figure(report: dict, path) -> dict:
    """Bars of each device layer's cycles and energy (from :func:`~tvm_sparse.accel.run_report.run_report`)."""
    plt = _pyplot()
    layers = _device_layers(report)
    names = [layer["name"] for layer in layers]
    cycles = [layer["cycles"] for layer in layers]
    energy = [layer["energy_pj"] / 1e6 for layer in layers]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6, 0.5 * len(names) + 2), 6), sharex=True)
    top.bar(names, cycles, color="tab:blue")
    top.set_ylabel("cycles")
    top.set_title(f"{report['device']}: {report['total_cycles']} cycles, {report['total_energy_pj'] / 1e6:.3f} uJ")
    bottom.bar(names, energy, color="tab:orange")
    bottom.set_ylabel("energy (uJ)")
    bottom.tick_params(axis="x", labelrotation=60)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {"path": str(path), "layers": names, "cycles": cycles, "energy_uj": energy}


def roofline_figure(report: dict, device: Device, path) -> dict:
    """The device's roofline (MACs per cycle against MACs per DRAM byte) with each device layer on it."""
    plt = _pyplot()
    layers = _device_layers(report)
    peak, bandwidth = device.pe_array.macs_per_cycle, device.dram_bytes_per_cycle
    points = []
    for layer in layers:
        traffic = layer["dram_read_bytes"] + layer["dram_read_metadata_bytes"] + layer["dram_write_bytes"]
        points.append((layer["name"], layer["macs_issued"] / max(traffic, 1), layer["macs_issued"] / max(layer["cycles"], 1)))
    intensities = np.array([p[1] for p in points])
    x = np.logspace(np.log10(max(min(intensities.min(), peak / bandwidth) / 4, 1e-3)), np.log10(max(intensities.max(), peak / bandwidth) * 4), 200)
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.loglog(x, np.minimum(peak, bandwidth * x), color="black", label=f"roofline: {peak} MACs/cycle, {bandwidth} B/cycle")
    for name, intensity, throughput in points:
        ax.scatter(intensity, throughput, zorder=3)
        ax.annotate(name, (intensity, throughput), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("arithmetic intensity (MACs issued per DRAM byte)")
    ax.set_ylabel("MACs issued per cycle")
    ax.set_title(f"{device.name} roofline")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {"path": str(path), "peak_macs_per_cycle": peak, "bytes_per_cycle": bandwidth, "points": points}


def sparsity_maps_figure(weights: dict[str, np.ndarray], path, block: tuple[int, int] = (16, 16)) -> dict:
    """One image per ``(out, in)`` weight: the fraction of nonzeros in each ``block`` (white: empty)."""
    plt = _pyplot()
    if not weights:
        raise TVMSparseError("no weights to draw")
    r, c = block
    maps = {}
    for name, w in weights.items():
        rows, cols = -(-w.shape[0] // r), -(-w.shape[1] // c)
        padded = np.zeros((rows * r, cols * c), bool)
        padded[: w.shape[0], : w.shape[1]] = w != 0
        maps[name] = padded.reshape(rows, r, cols, c).mean(axis=(1, 3))
    fig, axes = plt.subplots(1, len(maps), figsize=(4 * len(maps), 4), squeeze=False)
    for ax, (name, occupancy) in zip(axes[0], maps.items()):
        image = ax.imshow(occupancy, cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_title(f"{name}\n{weights[name].shape[0]}x{weights[name].shape[1]}, {np.count_nonzero(weights[name]) / weights[name].size:.1%} nonzero", fontsize=8)
        ax.set_xlabel(f"input blocks of {c}")
        ax.set_ylabel(f"output blocks of {r}")
    fig.colorbar(image, ax=axes[0].tolist(), label="nonzero fraction per block")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {"path": str(path), "layers": list(maps), "block_density": {name: float(m.mean()) for name, m in maps.items()}}


def write_run_figures(report: dict, device: Device, directory) -> list[dict]:
    """``device_layers.png`` and ``roofline.png`` of a run in ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    return [device_layers_figure(report, out / "device_layers.png"), roofline_figure(report, device, out / "roofline.png")]
