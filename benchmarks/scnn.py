"""SCNN's two-sided sparsity on sparse-accel: zero weights and zero activations skipped together.

SCNN (Parashar et al., ISCA 2017) multiplies only nonzero weights by nonzero
activations and keeps activations compressed; it reports 2.7x the
performance and 2.3x less energy than a comparably provisioned dense
accelerator. This benchmark runs convolutions of AlexNet and VGG-16 as im2col
GEMMs (int8, ReLU-sparse input activations, weights pruned to 16x16 blocks)
on four variants with the same PE array, buffers and DRAM bandwidth:

* dense: ``sparse-accel-dense``;
* weight-only: ``sparse-accel``, block-sparse weight tiles (which do not skip
  zero activations), activations loaded raw;
* activation-only: ``sparse-accel-scnn`` with the pruned weights stored dense:
  zero activations skipped, activations loaded run-length coded;
* both: ``sparse-accel-scnn``, block-sparse weight tiles that skip zero
  activations too, activations run-length coded.

Every output is checked bit-exactly against the numpy integer reference. It
prints per layer each sparse variant's speedup and energy saving over dense,
then over all layers each variant's cycles, DRAM bytes read (data and
metadata apart) and energy. All variants run the same
64x512x64 tiling: the best of a few for the skipping variants, within 1% of
the best for the others. Run: ``python benchmarks/scnn.py [--layers N]``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from tvm_sparse.accel import load_device
from tvm_sparse.codegen.gemm_program import Tiling, gemm_program
from tvm_sparse.sim import run

RNG = np.random.default_rng(0)
WEIGHT_DENSITY = 0.3  # of 16x16 blocks
SHIFT = 20
TILING = Tiling(64, 512, 64)
#: name: (device, weight mode, run-length coded activations)
VARIANTS = {
    "dense": ("sparse-accel-dense", "dense", False),
    "weight-only": ("sparse-accel", "block", False),
    "activation-only": ("sparse-accel-scnn", "dense", True),
    "both": ("sparse-accel-scnn", "block", True),
}


@dataclass(frozen=True)
class Conv:
    """A stride-1 convolution: ``size x size`` maps, ``kernel x kernel`` taps, ``density`` of nonzero input activations."""

    name: str
    size: int
    channels: int
    kernel: int
    outputs: int
    density: float


LAYERS = [  # AlexNet conv2-5 (ungrouped) and VGG-16 conv5_1 and conv5_3 at 224x224
    Conv("alexnet.conv2", 27, 96, 5, 256, 0.55),
    Conv("alexnet.conv3", 13, 256, 3, 384, 0.45),
    Conv("alexnet.conv4", 13, 384, 3, 384, 0.35),
    Conv("alexnet.conv5", 13, 384, 3, 256, 0.35),
    Conv("vgg16.conv5_1", 14, 512, 3, 512, 0.45),
    Conv("vgg16.conv5_3", 14, 512, 3, 512, 0.3),
]


def relu_maps(conv: Conv) -> np.ndarray:
    """int8 ``[size, size, channels]`` post-ReLU activations, ``density`` of them nonzero (1..127)."""
    shape = (conv.size, conv.size, conv.channels)
    return (RNG.integers(1, 128, shape) * (RNG.random(shape) < conv.density)).astype(np.int8)


def im2col(maps: np.ndarray, kernel: int) -> np.ndarray:
    """``[size * size, kernel * kernel * channels]`` rows of a same-padded stride-1 convolution (tap-major)."""
    size, _, channels = maps.shape
    pad = kernel // 2
    padded = np.pad(maps, ((pad, pad), (pad, pad), (0, 0)))
    taps = [padded[i : i + size, j : j + size] for i in range(kernel) for j in range(kernel)]
    return np.concatenate(taps, axis=2).reshape(size * size, kernel * kernel * channels)


def block_pruned(k: int, n: int) -> np.ndarray:
    """int8 ``[k, n]`` with ``WEIGHT_DENSITY`` of its 16x16 blocks kept."""
    mask = RNG.random((k // 16, n // 16)) < WEIGHT_DENSITY
    return (RNG.integers(-128, 128, (k, n)) * np.kron(mask, np.ones((16, 16), np.int64))).astype(
        np.int8
    )


def reference(x, w, bias, multiplier) -> np.ndarray:
    acc = x.astype(np.int64) @ w.astype(np.int64) + bias
    return np.clip((acc * multiplier + (1 << (SHIFT - 1))) >> SHIFT, 0, 127)


@dataclass(frozen=True)
class Cost:
    cycles: int
    data_bytes: int  # DRAM bytes read: values
    meta_bytes: int  # DRAM bytes read: sparse metadata (block indices, zero runs)
    energy_pj: float

    def __add__(self, other: Cost) -> Cost:
        return Cost(*(a + b for a, b in zip(vars(self).values(), vars(other).values())))


def simulate(x, w, bias, multiplier, variant: str) -> Cost:
    """Run the layer (ReLU, int8 out) on ``variant``; exit unless the output is the numpy reference's."""
    device_name, mode, compress = VARIANTS[variant]
    device = load_device(device_name)
    program, out = gemm_program(
        x, w, bias, multiplier, SHIFT, device, mode, True, TILING, compress_activations=compress
    )
    result = run(program, device)
    expected = reference(x, w, bias, multiplier)
    if not (result.read(out, expected.shape, np.int8) == expected).all():
        raise SystemExit(f"{variant}: output differs from the numpy integer reference")
    total = result.report.total
    return Cost(
        total.cycles,
        total.dram_read_bytes,
        total.dram_read_metadata_bytes,
        sum(total.energy_pj.values()),
    )


def ratios(costs: dict) -> str:
    """Each sparse variant's speedup and energy saving over dense."""
    dense = costs["dense"]
    return " | ".join(
        f"{dense.cycles / c.cycles:6.2f}x {dense.energy_pj / c.energy_pj:6.2f}x"
        for v, c in costs.items()
        if v != "dense"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=len(LAYERS), help="run the first N layers")
    opts = parser.parse_args()
    if not 1 <= opts.layers <= len(LAYERS):
        parser.error(f"--layers must be from 1 to {len(LAYERS)}, got {opts.layers}")
    sparse = [v for v in VARIANTS if v != "dense"]
    print(
        "cycles and energy of dense over each variant's, per layer (densities: nonzero im2col activations, weights)"
    )
    print(f"{'layer':14s} {'act':>4s} {'wgt':>5s} | " + " | ".join(f"{v:^15s}" for v in sparse))
    sums = dict.fromkeys(VARIANTS, Cost(0, 0, 0, 0.0))
    for conv in LAYERS[: opts.layers]:
        x = im2col(relu_maps(conv), conv.kernel)
        w = block_pruned(x.shape[1], conv.outputs)
        bias = RNG.integers(-(2**14), 2**14, conv.outputs)
        multiplier = RNG.integers(1, 2**8, conv.outputs)
        costs = {variant: simulate(x, w, bias, multiplier, variant) for variant in VARIANTS}
        print(
            f"{conv.name:14s} {np.count_nonzero(x) / x.size:4.2f} {np.count_nonzero(w) / w.size:5.2f} | {ratios(costs)}",
            flush=True,
        )
        sums = {variant: sums[variant] + cost for variant, cost in costs.items()}
    print(f"{'total':25s} | {ratios(sums)}")
    print(
        f"\n{'variant':16s} {'cycles':>11s} {'DRAM read: data':>16s} {'metadata':>9s} {'energy':>9s}"
    )
    for variant, c in sums.items():
        print(
            f"{variant:16s} {c.cycles:11,d} {c.data_bytes / 1e6:13.2f} MB {c.meta_bytes / 1e6:6.2f} MB {c.energy_pj / 1e6:6.0f} uJ"
        )
    print("every output bit-exact against the numpy integer reference")


if __name__ == "__main__":
    main()
