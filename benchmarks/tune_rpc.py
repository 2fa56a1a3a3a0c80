"""Tuning over TVM's RPC tracker: wall time of one tuning budget measured on 1 and on 2 servers.

Starts a tracker and tvm-sparse RPC servers on 127.0.0.1 (each server with
one TVM thread), tunes the same pruned model for ``--target`` with the same
budget and a fresh database per run, and prints the wall time, measurements
per server and the speedup of 2 servers over 1. Configurations alternate
over ``--rounds``; medians are reported. On loopback the servers share this
machine's cores, so the figure is about overlapping measurements with each
other and with candidate generation, not about more hardware.

    python benchmarks/tune_rpc.py [--target sparse-accel] [--trials 16] [--rounds 2]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time

from tvm.rpc.tracker import Tracker

from tvm_sparse.prune import prune_onnx
from tvm_sparse.testing import mlp
from tvm_sparse.tune import tune
from tvm_sparse.tune.rpc import RPCSpec, count_servers, serve
from tvm_sparse.tune.search import MEASUREMENT_LOG

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engines import cpu_model  # noqa: E402


def start_servers(tracker: Tracker, key: str, count: int) -> list:
    os.environ["TVM_NUM_THREADS"] = "1"  # inherited by the server processes
    servers = [
        serve(f"127.0.0.1:{tracker.port}", key, host="127.0.0.1", port=19500, port_end=19900)
        for _ in range(count)
    ]
    spec = RPCSpec("127.0.0.1", tracker.port, key)
    deadline = time.monotonic() + 60
    while count_servers(spec, 5) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"{count} servers did not register with the tracker within 60 s")
        time.sleep(0.2)
    return servers


def tuned_once(
    model, target: str, trials: int, spec: RPCSpec
) -> tuple[float, collections.Counter, int]:
    """Seconds to tune ``model`` in a fresh database, the measurements per server, and the number of tasks."""
    with tempfile.TemporaryDirectory() as db:
        start = time.perf_counter()
        tasks = len(tune(model, target, trials=trials, work_dir=db, rpc=spec, progress=False))
        seconds = time.perf_counter() - start
        with open(os.path.join(db, MEASUREMENT_LOG)) as log:
            hosts = collections.Counter(json.loads(line)["host"] for line in log)
    return seconds, hosts, tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--target",
        default="sparse-accel",
        help="llvm (host kernels) or a sparse-accel variant (simulated layers)",
    )
    parser.add_argument("--trials", type=int, default=16, help="measurements per task")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    model, _ = prune_onnx(mlp(batch=64, sizes=(512, 1024, 1024, 256)), "block:16x1", 0.25)
    tracker = Tracker(host="127.0.0.1", port=19190, port_end=19990, silent=True)
    pools = {count: start_servers(tracker, f"bench{count}", count) for count in (1, 2)}
    try:
        times: dict[int, list[float]] = {1: [], 2: []}
        spread: dict[int, collections.Counter] = {}
        for _ in range(args.rounds):
            for count in (1, 2):
                seconds, spread[count], tasks = tuned_once(
                    model,
                    args.target,
                    args.trials,
                    RPCSpec("127.0.0.1", tracker.port, f"bench{count}"),
                )
                times[count].append(seconds)
    finally:
        for servers in pools.values():
            for server in servers:
                server.terminate()
        tracker.terminate()

    print(
        f"machine: {cpu_model()}, {os.cpu_count()} CPUs, one TVM thread per server; target {args.target}, "
        f"{tasks} tasks x {args.trials} trials, median of {args.rounds} rounds"
    )
    print(f"{'servers':>8} {'wall s':>8} {'measurements per server':>26}")
    for count in (1, 2):
        per_server = " / ".join(str(n) for n in sorted(spread[count].values(), reverse=True))
        print(f"{count:>8} {statistics.median(times[count]):>8.1f} {per_server:>26}")
    print(
        f"2 servers: {statistics.median(times[1]) / statistics.median(times[2]):.2f}x the tuning throughput of 1"
    )


if __name__ == "__main__":
    main()
