"""CPU tuning: tuned against default kernel schedules on the BERT-base FFN shapes (128 tokens).

Kernels: 90% block-sparse (16x1 and 8x8 blocks) and 2:4. For each, the
MetaSchedule search (XGBoost cost model) measures ``--trials`` candidates of
the kernel's design space; then the default and the best tuned schedule are
timed again side by side, alternating, and the script prints the ratio and
which of the issue's two outcomes holds: tuned at least 1.3x faster than the
default, or the default already within 10% of the best tuned.

    python benchmarks/tune_cpu.py [--trials 24]
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
from tvm.s_tir import meta_schedule as ms

from tvm_sparse.formats import BSRMatrix, NMMatrix
from tvm_sparse.kernels.tasks import BlockMatmulTask, NMMatmulTask
from tvm_sparse.prune.magnitude import prune_weight
from tvm_sparse.target import host_target
from tvm_sparse.tune.search import search

TOKENS = 128
SHAPES = [(768, 3072), (3072, 768)]  # (in, out)


def tasks(rng):
    for k, n in SHAPES:
        dense = rng.standard_normal((n, k)).astype("float32")
        for block in ((16, 1), (8, 8)):
            pruned = prune_weight(dense, f"block:{block[0]}x{block[1]}", 0.1)
            yield BlockMatmulTask(TOKENS, BSRMatrix.from_dense(pruned, block))
        yield NMMatmulTask(TOKENS, NMMatrix.from_dense(prune_weight(dense, "nm:2:4"), 2, 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating re-timings of default and tuned"
    )
    args = parser.parse_args()
    target = host_target()
    rng = np.random.default_rng(0)
    print(f"{'kernel':42s} {'default ms':>10s} {'tuned ms':>9s} {'speedup':>8s}  tuned knobs")
    for task in tasks(rng):
        with tempfile.TemporaryDirectory() as work:
            stats = search(task, target, ms.database.MemoryDatabase(), args.trials, work)
        default, tuned = task.default(), stats.best
        times = {"default": [], "tuned": []}
        for _ in range(args.rounds):
            times["default"].append(task.measure(default, target))
            times["tuned"].append(task.measure(tuned, target))
        d, t = np.median(times["default"]), np.median(times["tuned"])
        verdict = (
            "tuned >= 1.3x"
            if d / t >= 1.3
            else (
                "default within 10% of tuned" if d <= 1.1 * t else "tuned < 1.3x, default > 10% off"
            )
        )
        print(
            f"{task.describe():42s} {d * 1e3:10.3f} {t * 1e3:9.3f} {d / t:7.2f}x  {tuned}  [{verdict}; {stats.wrong} wrong candidates]"
        )


if __name__ == "__main__":
    main()
