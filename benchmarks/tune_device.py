"""Device tuning: the XGBoost-guided search against exhaustive enumeration and random search.

For one GEMM layer and one convolution (as its im2col GEMM), every valid
point of the device design space (tile sizes that divide the layer, both loop
orders, single/double buffering; tilings that do not fit the buffers are
rejected) is simulated to find the optimum. Then MetaSchedule searches the
same space with a budget of 15% of its size, over several seeds, and the
script prints how many trials each search needed to come within 5% of the
optimum:

* ``xgb``: the XGBoost cost model, trained from scratch on this layer alone;
* ``xgb+transfer``: the same search, with the cost model first trained by
  tuning two other layers (as ``tvm_sparse.tune`` shares one model across a
  model's layers); only the trials on this layer count;
* ``random``: random replay of the design space.

The simulator is deterministic, so measurements are memoised across the
searches (the exhaustive pass measured every point already).

    python benchmarks/tune_device.py [--seeds 5] [--budget 0.15]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import tempfile
import time

import numpy as np
from tvm.s_tir import meta_schedule as ms

import tvm_sparse
from tvm_sparse.accel import load_device
from tvm_sparse.codegen.gemm_program import Tiling
from tvm_sparse.codegen.gemm_task import DeviceGemmTask
from tvm_sparse.tune.search import SharedCostModel, search


class MemoisedTask(DeviceGemmTask):
    """The layer with its simulated time memoised per tiling (the simulator is deterministic)."""

    cache: dict

    def measure(self, tiling, target=None):
        if tiling not in self.cache:
            self.cache[tiling] = super().measure(tiling, target)
        return self.cache[tiling]

    def candidate(self, tiling):
        """What the search measures: the memoised time of ``tiling``."""
        return _Memoised(self, tiling)


@dataclasses.dataclass
class _Memoised:
    task: MemoisedTask
    tiling: Tiling

    def measure(self, target=None) -> float:
        return self.task.measure(self.tiling, target)


def divisors(size: int, step: int = 1, least: int = 1) -> list[int]:
    return [d for d in range(least, size + 1) if size % d == 0 and d % step == 0]


def space(task: DeviceGemmTask) -> list[Tiling]:
    """Every tiling of the design space that passes the fit check."""
    k, n = task.weight.shape
    points = [
        Tiling(tm, tk, tn, bool(db), bool(order))
        for tm, tk, tn, db, order in itertools.product(
            divisors(task.rows), divisors(k, 16), divisors(n, 16), (0, 1), (0, 1)
        )
    ]
    return [t for t in points if task.check(t) is None]


def trials_to_reach(history: list[float], goal: float) -> int | None:
    for i, seconds in enumerate(history, 1):
        if seconds <= goal:
            return i
    return None


def layer(name: str, m: int, k: int, n: int, mode: str, density: float, rng) -> MemoisedTask:
    device = load_device("sparse-accel")
    w = rng.integers(-128, 128, size=(k, n)).astype(np.int8)
    if mode == "block":
        keep = rng.random((k // 16, n // 16)) < density
        w *= np.kron(keep, np.ones((16, 16), np.int8)).astype(np.int8)
    task = MemoisedTask(m, w, mode, device, shift=16)
    object.__setattr__(task, "cache", {})
    print(f"\n{name}: {task.describe()}")
    return task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--budget", type=float, default=0.15, help="trials as a fraction of the space size"
    )
    parser.add_argument(
        "--transfer-trials",
        type=int,
        default=24,
        help="trials on each of the other layers before the transferred search",
    )
    parser.add_argument(
        "--round",
        type=int,
        default=4,
        help="candidates measured per search round (the cost model retrains between rounds)",
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    target = tvm_sparse.accel.target("sparse-accel")
    layers = [
        layer("GEMM (BERT-style projection, 30% of 16x16 blocks)", 64, 512, 256, "block", 0.3, rng),
        layer("conv 3x3 32->32 on 14x14 (im2col GEMM)", 196, 288, 32, "dense", 1.0, rng),
    ]
    # the layers the transferred cost model learns on first (other shapes, other modes)
    others = [
        layer("transfer: GEMM 128x256x512, 50% of 16x16 blocks", 128, 256, 512, "block", 0.5, rng),
        layer("transfer: conv 3x3 16->64 on 28x28 (im2col GEMM)", 784, 144, 64, "dense", 1.0, rng),
    ]
    for task in layers:
        start = time.perf_counter()
        points = space(task)
        costs = {
            t: task.measure(t, target) for t in points
        }  # also fills the task's memo for the searches
        best = min(costs, key=costs.get)
        default = task.default()
        print(
            f"  space: {len(points)} valid tilings, enumerated in {time.perf_counter() - start:.0f} s",
            flush=True,
        )
        print(f"  optimum {costs[best] * 1e6:.2f} us at {best}")
        print(
            f"  default (roofline choice) {task.measure(default, target) * 1e6:.2f} us: {task.measure(default, target) / costs[best]:.3f}x the optimum"
        )
        budget = max(8, int(args.budget * len(points)))
        goal = costs[best] * 1.05
        near = sum(c <= goal for c in costs.values())
        print(
            f"  budget {budget} trials ({args.budget:.0%} of the space); goal: within 5% of the optimum ({goal * 1e6:.2f} us), "
            f"which {near} tilings ({near / len(points):.1%}) reach",
            flush=True,
        )
        summary = {}
        for strategy in ("xgb", "xgb+transfer", "random"):
            reached = []
            for seed in range(args.seeds):
                shared = None
                if strategy == "xgb+transfer":
                    shared = SharedCostModel(args.round)
                    for other in others:
                        with tempfile.TemporaryDirectory() as work:
                            search(
                                other,
                                target,
                                ms.database.MemoryDatabase(),
                                args.transfer_trials,
                                work,
                                seed=seed,
                                trials_per_round=args.round,
                                shared=shared,
                            )
                with tempfile.TemporaryDirectory() as work:
                    stats = search(
                        task,
                        target,
                        ms.database.MemoryDatabase(),
                        budget,
                        work,
                        strategy=strategy.split("+")[0],
                        seed=seed,
                        trials_per_round=args.round,
                        shared=shared,
                    )
                hit = trials_to_reach(stats.history, goal)
                reached.append(hit)
                best_found = min(stats.history) if stats.history else float("inf")
                print(
                    f"    {strategy:12s} seed {seed}: best {best_found / costs[best]:.3f}x the optimum, within 5% after {hit if hit else 'never'} trials",
                    flush=True,
                )
            summary[strategy] = reached
        means = {
            strategy: np.mean([h or budget for h in reached])
            for strategy, reached in summary.items()
        }
        for strategy, reached in summary.items():
            hits = sum(h is not None for h in reached)
            print(
                f"  {strategy:12s}: reached the goal in {hits}/{len(reached)} seeds, mean trials {means[strategy]:.1f} (misses count as the budget)"
            )
        for strategy in ("xgb", "xgb+transfer"):
            print(
                f"  {strategy} needs {means['random'] / means[strategy]:.2f}x fewer trials than random on average"
            )


if __name__ == "__main__":
    main()
