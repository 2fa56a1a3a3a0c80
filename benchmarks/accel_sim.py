"""The sparse-accel device on dense-equivalent workloads: speedup and energy of its sparse modes, and the simulator's speed.

Each workload runs the same layer (same M, K, N, same int8 operands) on the
dense baseline (``sparse-accel-dense``) and on a sparse variant, and prints
the ratio of simulated cycles and of energy (each device with the best of a
few tilings):

* a compute-bound GEMM (256 x 4096 x 256) with 2:4 weights;
* the same GEMM with 16x16-block-sparse weights at density 0.1;
* ReLU-like activations (half zeros) on the variant that skips them;

then ResNet-50's convolutions at 224x224 as im2col GEMMs (about 4 GMACs) on
the dense baseline, timing the simulator itself (simulated MACs per second of
wall time). Run: ``python benchmarks/accel_sim.py [--skip-resnet]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tvm_sparse.accel import load_device
from tvm_sparse.codegen.gemm_program import Tiling, gemm_program
from tvm_sparse.hw.isa import ProgramError
from tvm_sparse.sim import run

RNG = np.random.default_rng(0)
RESNET50 = [  # (output pixels, kernel taps x input channels, output channels, count) at 224x224
    (112 * 112, 7 * 7 * 3, 64, 1),
    (56 * 56, 64, 64, 1),
    (56 * 56, 9 * 64, 64, 3),
    (56 * 56, 64, 256, 4),
    (56 * 56, 256, 64, 2),
    (28 * 28, 256, 128, 1),
    (28 * 28, 9 * 128, 128, 4),
    (28 * 28, 128, 512, 4),
    (28 * 28, 256, 512, 1),
    (28 * 28, 512, 128, 3),
    (14 * 14, 512, 256, 1),
    (14 * 14, 9 * 256, 256, 6),
    (14 * 14, 256, 1024, 6),
    (14 * 14, 512, 1024, 1),
    (14 * 14, 1024, 256, 5),
    (7 * 7, 1024, 512, 1),
    (7 * 7, 9 * 512, 512, 3),
    (7 * 7, 512, 2048, 3),
    (7 * 7, 1024, 2048, 1),
    (7 * 7, 2048, 512, 2),
]


def int8(*shape) -> np.ndarray:
    return RNG.integers(-128, 128, size=shape).astype(np.int8)


#: Tilings each device may pick from (its best is used: both sides get their best schedule).
TILINGS = [Tiling(64, 256, 64), Tiling(32, 256, 128), Tiling(16, 256, 256), Tiling(16, 512, 256)]


def simulate(x, w, device_name, mode, tilings=TILINGS):
    """The run with the fewest cycles among ``tilings`` that fit the device."""
    device = load_device(device_name)
    n = w.shape[1]
    best = None
    for tiling in tilings:
        try:
            program, _ = gemm_program(
                x, w, np.zeros(n, np.int64), np.ones(n, np.int64), 8, device, mode, tiling=tiling
            )
        except ProgramError:  # does not fit this device's buffers
            continue
        total = run(program, device).report.total
        if best is None or total.cycles < best.cycles:
            best = total
    return best


def compare(label: str, x, w, variant: str, mode: str) -> None:
    dense, sparse = simulate(x, w, "sparse-accel-dense", "dense"), simulate(x, w, variant, mode)
    e_dense, e_sparse = sum(dense.energy_pj.values()), sum(sparse.energy_pj.values())
    print(
        f"{label:44s} dense {dense.cycles:9d} cycles {e_dense / 1e6:8.1f} uJ | {variant} {sparse.cycles:9d} cycles "
        f"{e_sparse / 1e6:8.1f} uJ | speedup {dense.cycles / sparse.cycles:5.2f}x energy {e_dense / e_sparse:5.2f}x",
        flush=True,
    )


def two_of_four(k, n):
    keep = np.argsort(RNG.random((k // 4, 4, n)), axis=1)[:, :2, :]
    mask = np.zeros((k // 4, 4, n), bool)
    np.put_along_axis(mask, keep, True, axis=1)
    return (int8(k, n).reshape(k // 4, 4, n) * mask).reshape(k, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-resnet", action="store_true")
    opts = parser.parse_args()
    m, k, n = 256, 4096, 256
    x = int8(m, k)
    compare(f"GEMM {m}x{k}x{n}, 2:4 weights", x, two_of_four(k, n), "sparse-accel", "nm")
    mask = RNG.random((k // 16, n // 16)) < 0.1
    compare(
        f"GEMM {m}x{k}x{n}, 16x16 blocks, density 0.1",
        x,
        (int8(k, n) * np.kron(mask, np.ones((16, 16), np.int8))).astype(np.int8),
        "sparse-accel",
        "block",
    )
    relu_x = np.maximum(x, 0)
    compare(f"GEMM {m}x{k}x{n}, half-zero activations", relu_x, int8(k, n), "sparse-accel", "dense")
    if opts.skip_resnet:
        return
    device = load_device("sparse-accel-dense")
    total_macs = wall = cycles = 0
    for rows, red, cols, count in RESNET50:
        x, w = int8(rows, red), int8(red, cols)
        program, _ = gemm_program(
            x, w, np.zeros(cols, np.int64), np.ones(cols, np.int64), 8, device
        )
        start = time.perf_counter()
        report = run(program, device).report.total
        wall += (time.perf_counter() - start) * count
        total_macs += report.macs_dense * count
        cycles += report.cycles * count
    print(
        f"ResNet-50 convolutions (224x224, im2col GEMMs): {total_macs / 1e9:.2f} GMACs, {cycles} cycles "
        f"({cycles / device.clock_mhz / 1e3:.1f} ms at {device.clock_mhz:g} MHz); simulated in {wall:.1f} s "
        f"= {total_macs / wall / 1e9:.1f} GMAC/s of simulation",
        flush=True,
    )


if __name__ == "__main__":
    main()
