"""Pruning granularity vs memory references on sparse-accel, after Mao et al., "Exploring the Regularity of
Sparse Structure in Convolutional Neural Networks" (NIPS'17 workshop, arXiv 1705.08922).

The paper reports that on SCNN coarse-grained sparsity saves about 2x the memory references of fine-grained
sparsity at the same density, because a kept kernel row or kernel needs one index where fine-grained
sparsity needs one per weight. This repeats the experiment on the simulator:

* AlexNet (single-tower, torchvision shapes) and VGG-16 convolutions as im2col GEMMs, the reduction ordered
  ``(c, kh, kw)`` so that a kernel row and a whole kernel are contiguous;
* each weight magnitude-pruned to the same densities at three granularities (Mao et al.'s 0-D, 1-D, 2-D):
  fine-grained (single weights), vector-level (kernel rows, ``k x 1`` blocks) and kernel-level (whole
  ``k x k`` kernels, ``k*k x 1`` blocks), by ``tvm_sparse.prune``'s magnitude and block pruning;
* each run on a variant of ``sparse-accel-dense`` whose block mode indexes at that granularity with
  ``--index-bits``-bit relative indices (SCNN's 4 by default), all with the same tiling, and on the dense
  baseline; every output checked bit for bit against numpy's integer model.

It prints per granularity and density the weight and index bytes (the packed layer), DRAM reads (data,
metadata) and writes, SRAM bytes and cycles, summed over the layers, then fine/coarse ratios, and writes a
plot next to the paper's ~2x. Run: ``python benchmarks/granularity.py [--densities 0.1 0.3 0.5]
[--layers alexnet] [--index-bits 4] [--plot granularity.png]`` (about 5 minutes for all layers; on a busy
machine ``OPENBLAS_NUM_THREADS=1`` speeds the simulator up).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

import numpy as np

from tvm_sparse.accel import Device, load_device
from tvm_sparse.codegen.gemm_program import Tiling, gemm_program, reduction_granule
from tvm_sparse.hw.encoding import pack_blocks
from tvm_sparse.hw.isa import ProgramError
from tvm_sparse.prune import prune_blocks, prune_unstructured
from tvm_sparse.sim import run

#: name -> (output pixels, input channels, kernel size, output channels); stride/padding only set the pixels.
LAYERS = {
    "alexnet.conv2": (27 * 27, 64, 5, 192),
    "alexnet.conv3": (13 * 13, 192, 3, 384),
    "alexnet.conv4": (13 * 13, 384, 3, 256),
    "alexnet.conv5": (13 * 13, 256, 3, 256),
    "vgg16.conv3_2": (56 * 56, 256, 3, 256),
    "vgg16.conv4_2": (28 * 28, 512, 3, 512),
    "vgg16.conv5_2": (14 * 14, 512, 3, 512),
}
#: Mao et al.'s granularities: the block rows (along the reduction) of a ``k x k`` convolution's kept unit.
GRANULARITIES = {"fine": lambda k: 1, "vector": lambda k: k, "kernel": lambda k: k * k}
#: The paper's headline: fine-grained / coarse-grained memory references at equal density, on SCNN.
PAPER_RATIO = 2.0
SHIFT = 24


@dataclass
class Counts:
    """What a run moved and took (bytes; cycles), summed over layers."""

    weight_bytes: int = 0  # stored values of the packed layer (bridging zero blocks included)
    index_bytes: int = 0  # its block metadata
    dram_read: int = 0
    dram_read_meta: int = 0
    dram_write: int = 0
    sram: int = 0
    cycles: int = 0

    def __iadd__(self, other: Counts) -> Counts:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    @property
    def stored(self) -> int:
        return self.weight_bytes + self.index_bytes

    @property
    def reads(self) -> int:
        return self.dram_read + self.dram_read_meta

    @property
    def dram(self) -> int:
        return self.reads + self.dram_write


def variant(block_rows: int, index_bits: int) -> Device:
    """``sparse-accel-dense`` with a block mode of ``block_rows x 1`` blocks and ``index_bits``-bit indices."""
    doc = load_device("sparse-accel-dense").to_dict()
    doc["name"] = f"sparse-accel-{block_rows}x1-i{index_bits}"
    doc["sparse_modes"]["block"] = {
        "block_rows": block_rows,
        "block_cols": 1,
        "index_bits": index_bits,
    }
    return Device.from_dict(doc)


def tiling_for(kernel: int, cols: int) -> Tiling:
    """One tiling for every granularity of a ``kernel x kernel`` layer: the reduction tile a multiple of 16 and
    of ``kernel * kernel`` (288 = 2 * 144, 400 = 16 * 25)."""
    return Tiling(rows=64, reduction=400 if kernel == 5 else 288, cols=cols)


def int8_weight(weight: np.ndarray) -> np.ndarray:
    """Float ``weight`` as int8 with one scale, every kept value nonzero (so density is the pruned one)."""
    magnitude = np.clip(np.ceil(np.abs(weight) * 127 / np.abs(weight).max()), 1, 127)
    return np.where(weight == 0, 0, np.sign(weight) * magnitude).astype(np.int8)


def pruned(weight: np.ndarray, block_rows: int, density: float) -> np.ndarray:
    """Float ``weight [O, C*k*k]`` magnitude-pruned to ``density`` in units of ``block_rows`` contiguous weights."""
    return (
        prune_unstructured(weight, density)
        if block_rows == 1
        else prune_blocks(weight, (1, block_rows), density)
    )


def stored_bytes(weight_kn: np.ndarray, device: Device, tile: Tiling) -> tuple[int, int]:
    """``(value bytes, metadata bytes)`` of int8 ``weight [K, N]`` packed in ``tile``'s weight tiles."""
    block = device.modes.block
    if block is None:
        return weight_kn.size, 0
    values = meta = 0
    for k0 in range(0, weight_kn.shape[0], tile.reduction):
        for n0 in range(0, weight_kn.shape[1], tile.cols):
            blocks, metadata = pack_blocks(
                weight_kn[k0 : k0 + tile.reduction, n0 : n0 + tile.cols],
                block.block_rows,
                block.block_cols,
                block.index_bits,
            )
            values, meta = values + blocks.size, meta + len(metadata)
    return values, meta


def simulate(
    name: str, x: np.ndarray, weight_kn: np.ndarray, device: Device, mode: str, tiling: Tiling
) -> Counts:
    """Run the layer ``x [M, K] @ weight_kn [K, N]`` (int8, requantized per column) and check it bit for bit."""
    acc = x.astype(np.int64) @ weight_kn.astype(np.int64)
    multiplier = (127 << SHIFT) // np.maximum(
        np.abs(acc).max(axis=0), 1
    )  # the largest output maps to 127
    expected = np.clip((acc * multiplier + (1 << (SHIFT - 1))) >> SHIFT, -128, 127)
    program, out = gemm_program(
        x,
        weight_kn,
        np.zeros(acc.shape[1], np.int64),
        multiplier,
        SHIFT,
        device,
        mode,
        tiling=tiling,
        name=name,
    )
    result = run(program, device)
    if not np.array_equal(result.read(out, acc.shape, np.int8), expected):
        raise AssertionError(
            f"{name} on {device.name}: the device output differs from numpy's integer model"
        )
    total = result.report.total
    values, meta = stored_bytes(
        weight_kn,
        device,
        tiling.fitted(*x.shape, weight_kn.shape[1], reduction_granule(device, mode)),
    )
    return Counts(
        values,
        meta,
        total.dram_read_bytes,
        total.dram_read_metadata_bytes,
        total.dram_write_bytes,
        total.sram_bytes,
        total.cycles,
    )


def measure(
    layers: list[str], densities: list[float], index_bits: int, cols: int, seed: int
) -> tuple[Counts, dict]:
    """The dense baseline's counts and ``{(granularity, density): counts}``, each summed over ``layers``."""
    rng = np.random.default_rng(seed)
    dense, results = Counts(), {}
    for name in layers:
        pixels, channels, kernel, outputs = LAYERS[name]
        x = rng.integers(-128, 128, size=(pixels, channels * kernel * kernel)).astype(np.int8)
        weight = rng.standard_normal((outputs, channels * kernel * kernel))  # [O, (c, kh, kw)]
        tiling = tiling_for(kernel, cols)
        dense += simulate(
            name, x, int8_weight(weight).T, load_device("sparse-accel-dense"), "dense", tiling
        )
        for granularity, rows_of in GRANULARITIES.items():
            device = variant(rows_of(kernel), index_bits)
            for density in densities:
                w_kn = int8_weight(pruned(weight, rows_of(kernel), density)).T
                results.setdefault((granularity, density), Counts())
                results[granularity, density] += simulate(name, x, w_kn, device, "block", tiling)
        print(f"  {name}: done", flush=True)
    return dense, results


def table(dense: Counts, results: dict, densities: list[float]) -> str:
    head = f"{'granularity':11s} {'density':>7s} {'weight B':>10s} {'index B':>9s} {'DRAM rd':>11s} {'meta rd':>10s} {'DRAM wr':>9s} {'SRAM B':>12s} {'cycles':>10s}"
    rows = [head]

    def row(label: str, density: str, c: Counts) -> str:
        return (
            f"{label:11s} {density:>7s} {c.weight_bytes:10d} {c.index_bytes:9d} {c.dram_read:11d} {c.dram_read_meta:10d} "
            f"{c.dram_write:9d} {c.sram:12d} {c.cycles:10d}"
        )

    rows.append(row("dense", "1.0", dense))
    for density in densities:
        rows += [row(g, f"{density:g}", results[g, density]) for g in GRANULARITIES]
    rows += [
        "",
        f"{'fine / coarse':22s} {'weight+index':>14s} {'DRAM reads':>12s} {'SRAM':>8s} {'DRAM+SRAM':>10s} {'cycles':>8s}",
    ]
    for density in densities:
        fine = results["fine", density]
        for coarse in ("vector", "kernel"):
            c = results[coarse, density]
            ratios = [
                fine.stored / c.stored,
                fine.reads / c.reads,
                fine.sram / c.sram,
                (fine.dram + fine.sram) / (c.dram + c.sram),
                fine.cycles / c.cycles,
            ]
            rows.append(
                f"{'fine / ' + coarse:15s} {density:6g} "
                + " ".join(f"{r:{w}.2f}x" for r, w in zip(ratios, (13, 11, 7, 9, 7)))
            )
    return "\n".join(rows)


def plot(dense: Counts, results: dict, densities: list[float], path: str) -> None:
    """Weight+index bytes and DRAM reads (normalized to dense) per granularity, and the fine/coarse ratios
    against the paper's ~2x."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4), layout="constrained")
    FigureCanvasAgg(fig)
    stored, dram, ratio = fig.subplots(1, 3)
    colors = dict(zip(GRANULARITIES, ("C0", "C1", "C2")))
    for g, color in colors.items():
        stored.plot(
            densities,
            [results[g, d].stored / dense.weight_bytes for d in densities],
            "o-",
            color=color,
            label=g,
        )
        dram.plot(
            densities,
            [results[g, d].reads / dense.reads for d in densities],
            "o-",
            color=color,
            label=g,
        )
    top = PAPER_RATIO
    for coarse in ("vector", "kernel"):
        pairs = [(results["fine", d], results[coarse, d]) for d in densities]
        ratio.plot(
            densities,
            [f.stored / c.stored for f, c in pairs],
            "o-",
            color=colors[coarse],
            label=f"weight+index, fine/{coarse}",
        )
        ratio.plot(
            densities,
            [f.reads / c.reads for f, c in pairs],
            "s:",
            color=colors[coarse],
            label=f"DRAM reads, fine/{coarse}",
        )
        top = max(top, *(f.stored / c.stored for f, c in pairs))
    ratio.axhline(PAPER_RATIO, color="gray", linestyle="--", label="Mao et al. on SCNN: ~2x")
    stored.set(title="weight + index bytes / dense weight bytes", xlabel="density")
    dram.set(title="DRAM reads / dense DRAM reads", xlabel="density")
    ratio.set(title="fine-grained / coarse-grained", xlabel="density", ylim=(0.9, 1.1 * top))
    for axes in (stored, dram, ratio):
        axes.legend(fontsize=8)
        axes.grid(alpha=0.3)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--densities",
        type=float,
        nargs="+",
        default=[0.1, 0.2, 0.3, 0.4, 0.5],
        help="fractions of the weights kept, in (0, 1)",
    )
    parser.add_argument(
        "--layers",
        nargs="+",
        default=["alexnet", "vgg16"],
        help="layer names or prefixes (alexnet, vgg16)",
    )
    parser.add_argument(
        "--index-bits", type=int, default=4, help="bits per relative block index (SCNN: 4)"
    )
    parser.add_argument("--plot", metavar="PNG", help="also write the figure there")
    parser.add_argument(
        "--cols",
        type=int,
        default=64,
        help="output columns per tile (narrower with wider indices, "
        "whose fine-grained tiles outgrow the metadata buffer: 32 for 8 bits, 16 for 16)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="of the generated weights and activations"
    )
    opts = parser.parse_args()
    if not all(0 < d < 1 for d in opts.densities):
        parser.error(f"--densities must lie in (0, 1), got {opts.densities}")
    layers = [
        name for name in LAYERS if any(name == p or name.startswith(p + ".") for p in opts.layers)
    ]
    if not layers:
        parser.error(f"no layer matches {opts.layers} (layers: {', '.join(LAYERS)})")
    print(
        f"{len(layers)} layers ({', '.join(layers)}), {opts.index_bits}-bit relative indices",
        flush=True,
    )
    try:
        dense, results = measure(layers, opts.densities, opts.index_bits, opts.cols, opts.seed)
    except ProgramError as err:
        parser.error(f"{err}: try a narrower --cols")
    print(table(dense, results, opts.densities))
    if opts.plot:
        plot(dense, results, opts.densities, opts.plot)
        print(f"plot: {opts.plot}")


if __name__ == "__main__":
    main()
