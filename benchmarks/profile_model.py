"""Where a compiled model spends its time: wall time per VM call, summed by function.

The Relax VM calls one packed function per kernel (and per shape function,
allocation, reshape); an instrument records the wall time around each call.
Run: ``python benchmarks/profile_model.py LIB.so INPUTS.npz [--runs 10] [--top 25]``.
The per-call overhead of the instrument (a Python callback, a few
microseconds) is included in each time.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import tvm
from tvm import relax

import tvm_sparse  # noqa: F401  (registers the runtime functions libraries call)
from tvm_sparse.threads import use_available_cpus


def profile(lib: str, inputs: str, runs: int) -> dict[str, list[float]]:
    """Seconds per run of each called function (summed over its calls in a run), over ``runs`` runs."""
    vm = relax.VirtualMachine(tvm.runtime.load_module(lib), tvm.cpu())
    with np.load(inputs) as data:
        args = [tvm.runtime.tensor(data[name]) for name in data.files]
    vm["main"](*args)
    totals: dict[str, float] = defaultdict(float)
    started: list[float] = []

    def instrument(func, symbol, before, ret, *_args):
        if before:
            started.append(time.perf_counter())
        else:
            totals[str(symbol)] += time.perf_counter() - started.pop()
        return 0

    vm.set_instrument(
        tvm.register_global_func("tvm_sparse.profile_instrument", instrument, override=True)
        or tvm.get_global_func("tvm_sparse.profile_instrument")
    )
    per_run: dict[str, list[float]] = defaultdict(list)
    for _ in range(runs):
        totals.clear()
        vm["main"](*args)
        for name, seconds in totals.items():
            per_run[name].append(seconds)
    return per_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lib")
    parser.add_argument("inputs", help=".npz of the inputs in the model's order")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    per_run = profile(args.lib, args.inputs, args.runs)
    medians = sorted(((float(np.median(v)), name) for name, v in per_run.items()), reverse=True)
    total = sum(m for m, _ in medians)
    print(f"{'function':60s} {'ms/run':>9s} {'share':>6s}")
    for seconds, name in medians[: args.top]:
        print(f"{name[:60]:60s} {seconds * 1e3:9.3f} {seconds / total:6.1%}")
    print(f"{'total (sum of calls)':60s} {total * 1e3:9.3f}")


if __name__ == "__main__":
    use_available_cpus()  # TVM's thread pool on every CPU, as tvm_sparse.build() sets it
    main()
