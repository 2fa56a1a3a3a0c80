"""PNG figures: a device run's per-layer cycles and energy, the device roofline, weight sparsity maps.

Needs matplotlib (``pip install tvm-sparse[plot]``). Each function writes one
PNG and returns what it plotted and the matplotlib ``figure`` (so callers and
tests can check the content without reading pixels). Many layers are
aggregated or only partly named, so every figure stays readable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import TVMSparseError
from .hw.device import Device


def _figure(**kwargs):
    """A matplotlib figure laid out without overlaps (constrained layout), outside pyplot's global state."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise TVMSparseError("figures need matplotlib: pip install 'tvm-sparse[plot]'") from None
    fig = Figure(layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def _device_layers(report: dict) -> list[dict]:
    layers = [layer for layer in report["layers"] if layer["runs_on"] == "device"]
    if not layers:
        raise TVMSparseError("the run has no device layers to plot")
    return layers


def device_layers_figure(report: dict, path, top: int = 20) -> dict:
    """Horizontal bars of the device layers' cycles and energy (uJ), most cycles first.

    ``report`` comes from :func:`~tvm_sparse.accel.run_report.run_report`. The ``top`` layers with the most
    cycles get a bar each and the rest share one "other N layers" bar; each bar is labelled with its share
    of the total. Returns the bars (``layers``, ``cycles``, ``energy_uj``, top first), ``other_layers``
    (how many the last bar sums, 0 when none) and the ``figure``.
    """
    layers = sorted(_device_layers(report), key=lambda layer: -layer["cycles"])
    if len(layers) == top + 1:  # an "other 1 layers" bar would hide a name for nothing
        top += 1
    shown, rest = layers[:top], layers[top:]
    names = [layer["name"] for layer in shown]
    cycles = [layer["cycles"] for layer in shown]
    energy = [layer["energy_pj"] / 1e6 for layer in shown]
    if rest:
        names.append(f"other {len(rest)} layers")
        cycles.append(sum(layer["cycles"] for layer in rest))
        energy.append(sum(layer["energy_pj"] for layer in rest) / 1e6)
    fig = _figure(figsize=(11, 1.4 + 0.28 * len(names)))
    left, right = fig.subplots(1, 2, sharey=True)
    rows = np.arange(len(names))
    for ax, values, color, label in (
        (left, cycles, "tab:blue", "cycles"),
        (right, energy, "tab:orange", "energy (uJ)"),
    ):
        colors = [color] * len(shown) + ["tab:gray"] * bool(rest)
        bars = ax.barh(rows, values, color=colors)
        ax.bar_label(bars, labels=[f"{v / sum(values):.0%}" for v in values], padding=2, fontsize=8)
        ax.margins(x=0.12)
        ax.set_xlabel(label)
    left.set_yticks(rows, names, fontsize=8)
    left.invert_yaxis()
    fig.suptitle(
        f"{report['device']} @ {report['clock_mhz']:g} MHz: {len(layers)} device layers, {report['total_cycles']} cycles "
        f"= {report['total_device_time_ms'] * 1e3:.1f} us simulated device time, {report['total_energy_pj'] / 1e6:.3f} uJ",
        fontsize=10,
    )
    fig.savefig(path, dpi=100)
    return {
        "path": str(path),
        "layers": names,
        "cycles": cycles,
        "energy_uj": energy,
        "other_layers": len(rest),
        "figure": fig,
    }


#: Where a label may go, nearest first: (dx, dy) from its point, in typographic points.
_LABEL_OFFSETS = [
    (dx * r, dy * r)
    for r in (6, 12, 20)
    for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))
]


def _place_label(ax, renderer, label: str, x: float, y: float, dots: np.ndarray, placed: list):
    """Annotate ``(x, y)`` with ``label`` and a leader line at the first offset where the text stays inside
    ``ax``, covers none of the ``dots`` (``[n, 2]`` display coordinates) and neither it nor its line crosses
    a label or line in ``placed`` (``(box, line)`` pairs, appended to). Returns the Annotation, or None
    (nothing drawn) when no offset fits."""
    from matplotlib.path import Path as Line
    from matplotlib.text import Text

    frame, start = ax.get_window_extent(renderer), ax.transData.transform((x, y))
    for dx, dy in _LABEL_OFFSETS:
        text = ax.annotate(
            label,
            (x, y),
            xytext=(dx, dy),
            textcoords="offset points",
            fontsize=8,
            fontweight="bold",
            ha=("right", "center", "left")[np.sign(dx) + 1],
            va=("top", "center", "bottom")[np.sign(dy) + 1],
            arrowprops={"arrowstyle": "-", "color": "0.4", "lw": 0.6, "shrinkA": 0, "shrinkB": 3},
        )
        text.set_in_layout(False)  # placed after the layout: it must not move the axes
        text.get_window_extent(renderer)  # positions the text
        box = Text.get_window_extent(text, renderer).padded(2)  # the text alone, without its line
        line = Line([start, start + np.array([dx, dy]) * ax.figure.dpi / 72])
        if (
            frame.x0 <= box.x0
            and box.x1 <= frame.x1
            and frame.y0 <= box.y0
            and box.y1 <= frame.y1
            and not box.count_contains(dots)
            and not any(
                box.overlaps(b)
                or line.intersects_bbox(b, filled=False)
                or line.intersects_path(other)
                or other.intersects_bbox(box, filled=False)
                for b, other in placed
            )
        ):
            placed.append((box, line))
            return text
        text.remove()
    return None


def roofline_figure(report: dict, device: Device, path, top: int = 8) -> dict:
    """The device's roofline (MACs per cycle against MACs per DRAM byte) with each device layer on it.

    Points are coloured by the layer's mode. The ``top`` points with the most cycles (summed over the layers
    on a point) are numbered (where
    the number fits clear of the other points and numbers), and the legend names them with their share
    of the cycles; layers at the same point share a number (``"first +N alike"``). Returns the roof, the
    ``points`` ``(name, MACs/byte, MACs/cycle)``, the numbered ``labels`` in order and the ``figure``.
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    layers = _device_layers(report)
    peak, bandwidth = device.pe_array.macs_per_cycle, device.dram_bytes_per_cycle
    points, modes = [], {}
    for layer in layers:
        traffic = (
            layer["dram_read_bytes"] + layer["dram_read_metadata_bytes"] + layer["dram_write_bytes"]
        )
        points.append(
            (
                layer["name"],
                layer["macs_issued"] / max(traffic, 1),
                layer["macs_issued"] / max(layer["cycles"], 1),
            )
        )
        modes.setdefault(layer["mode"], []).append(points[-1])
    intensities = np.array([p[1] for p in points])
    ridge = peak / bandwidth
    x = np.logspace(
        np.log10(max(min(intensities.min(), ridge) / 2, 1e-3)),
        np.log10(max(intensities.max(), ridge) * 2),
        200,
    )
    fig = _figure(figsize=(10, 5.5))
    ax = fig.subplots()
    ax.loglog(
        x,
        np.minimum(peak, bandwidth * x),
        color="black",
        label=f"roof: {peak} MACs/cycle, {bandwidth:g} B/cycle",
    )
    for mode, group in modes.items():
        ax.scatter(
            [p[1] for p in group],
            [p[2] for p in group],
            zorder=3,
            label=f"{mode}: {len(group)} layer{'s' * (len(group) > 1)}",
        )
    ax.set_xlabel("arithmetic intensity (MACs issued per DRAM byte)")
    ax.set_ylabel("MACs issued per cycle")
    ax.set_title(
        f"{device.name} roofline: {len(layers)} device layers, those with the most cycles numbered",
        fontsize=10,
    )
    for axis in (ax.xaxis, ax.yaxis):  # plain numbers at 1, 2, 5 x 10^k
        axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_formatter(NullFormatter())
    cycles = {layer["name"]: layer["cycles"] for layer in layers}
    alike: dict = {}  # the layers at one point (rounded in log space), most cycles first
    for point in sorted(points, key=lambda p: -cycles[p[0]]):
        alike.setdefault(
            (round(np.log10(max(point[1], 1e-9)), 2), round(np.log10(max(point[2], 1e-9)), 2)), []
        ).append(point)
    handles, entries = ax.get_legend_handles_labels()
    fig.draw_without_rendering()  # settle the layout: the numbers are placed in final display coordinates
    renderer, dots, placed, labels = (
        fig.canvas.get_renderer(),
        ax.transData.transform([p[1:] for p in points]),
        [],
        [],
    )
    for share, group in sorted(
        (
            (sum(cycles[p[0]] for p in group) / report["total_cycles"], group)
            for group in alike.values()
        ),
        key=lambda g: -g[0],
    )[:top]:
        name, px, py = group[0]
        if _place_label(ax, renderer, str(len(labels) + 1), px, py, dots, placed):
            labels.append(name + (f" +{len(group) - 1} alike" if len(group) > 1 else ""))
            handles.append(
                Line2D([], [], linestyle="none", marker=f"${len(labels)}$", color="black")
            )
            entries.append(f"{labels[-1]}: {share:.1%} of cycles")
    fig.legend(handles, entries, loc="outside right upper", fontsize=8)
    fig.savefig(path, dpi=100)
    return {
        "path": str(path),
        "peak_macs_per_cycle": peak,
        "bytes_per_cycle": bandwidth,
        "points": points,
        "labels": labels,
        "figure": fig,
    }


def _block_ticks(count: int) -> range:
    """At most 9 block indices from 0 to ``count - 1``, a 1, 2 or 5 x 10^k step apart."""
    step = next(
        step for step in (m * 10**k for k in range(10) for m in (1, 2, 5)) if count <= 9 * step
    )
    return range(0, count, step)


def sparsity_maps_figure(
    weights: dict[str, np.ndarray], path, block: tuple[int, int] = (16, 16)
) -> dict:
    """One image per ``(out, in)`` weight: the fraction of nonzeros in each ``block`` (white: empty; a block
    cut by the weight's edge counts the entries it has).

    Axes count blocks (integer ticks). Returns the ``layers``, each one's mean ``block_density`` and the ``figure``.
    """
    if not weights:
        raise TVMSparseError("no weights to draw")
    r, c = block
    maps = {}
    for name, w in weights.items():
        rows, cols = -(-w.shape[0] // r), -(-w.shape[1] // c)
        nonzero, inside = np.zeros((2, rows * r, cols * c))
        nonzero[: w.shape[0], : w.shape[1]], inside[: w.shape[0], : w.shape[1]] = w != 0, 1
        maps[name] = nonzero.reshape(rows, r, cols, c).sum(axis=(1, 3)) / inside.reshape(
            rows, r, cols, c
        ).sum(axis=(1, 3))
    fig = _figure(figsize=(3.6 * len(maps) + 1, 4))
    axes = fig.subplots(1, len(maps), squeeze=False)[0]
    for ax, (name, occupancy) in zip(axes, maps.items()):
        image = ax.imshow(
            occupancy, cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest"
        )
        w = weights[name]
        ax.set_title(
            f"{name}\n{w.shape[0]}x{w.shape[1]}, {np.count_nonzero(w) / w.size:.1%} nonzero",
            fontsize=8,
        )
        ax.set_xticks(_block_ticks(occupancy.shape[1]))
        ax.set_yticks(_block_ticks(occupancy.shape[0]))
        ax.set_xlabel(f"input block ({c} columns each)", fontsize=8)
        ax.set_ylabel(f"output block ({r} rows each)", fontsize=8)
    fig.colorbar(image, ax=axes.tolist(), label=f"nonzero fraction of each {r}x{c} block")
    fig.savefig(path, dpi=100)
    return {
        "path": str(path),
        "layers": list(maps),
        "block_density": {name: float(m.mean()) for name, m in maps.items()},
        "figure": fig,
    }


def write_run_figures(report: dict, device: Device, directory) -> list[dict]:
    """``device_layers.png`` and ``roofline.png`` of a run in ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    return [
        device_layers_figure(report, out / "device_layers.png"),
        roofline_figure(report, device, out / "roofline.png"),
    ]
