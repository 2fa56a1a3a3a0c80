"""Timing inference engines fairly: each in its own process, engines alternating, medians.

TVM's thread pool and onnxruntime's intra-op pool both spin after a parallel
region; two engines in one process steal each other's cores, so which one a
same-process comparison favours depends on order and load. Here every timing
runs in a fresh worker process that loads one engine, runs the model
``warmup + runs`` times and prints the per-run wall times as JSON; the parent
alternates engines over several rounds and reports, per engine, the median of
the rounds' medians.

Engines (``kind:path``):

* ``tvm:LIB.so``: a library written by ``tvm-sparse compile`` / ``export_library``
  (``import tvm_sparse`` registers its runtime functions; ``TVM_NUM_THREADS``
  sets the pool);
* ``ort:MODEL.onnx``: onnxruntime's CPU provider with ``threads`` intra-op
  threads (its defaults otherwise, spinning included, as users run it).

Worker, by hand: ``python benchmarks/engines.py tvm:lib.so inputs.npz --runs 20``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

THREADS = 2


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """The CPU model and the threads each engine gets."""
    return f"{cpu_model()}, {os.cpu_count()} CPUs, {THREADS} threads per engine"


def _session(kind: str, path: str):
    """A callable running the engine on a feed dict, returning the outputs as numpy arrays."""
    if kind == "ort":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return lambda feeds: session.run(None, feeds)
    if kind == "tvm":
        import tvm
        from tvm import relax

        import tvm_sparse  # noqa: F401  (registers the runtime functions libraries call)

        vm = relax.VirtualMachine(tvm.runtime.load_module(path), tvm.cpu())

        def run(feeds):
            out = vm["main"](*[tvm.runtime.tensor(v) for v in feeds.values()])
            return (
                [o.numpy() for o in out]
                if isinstance(out, tvm.ir.Array | list | tuple)
                else [out.numpy()]
            )

        return run
    raise ValueError(f"unknown engine kind {kind!r} (tvm or ort)")


def worker(engine: str, inputs: str, runs: int, warmup: int, outputs: str | None) -> None:
    kind, _, path = engine.partition(":")
    with np.load(inputs) as data:
        feeds = {name: data[name] for name in data.files}
    run = _session(kind, path)
    for _ in range(warmup):
        result = run(feeds)
    if outputs:
        np.savez(outputs, *result)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(feeds)
        times.append(time.perf_counter() - start)
    print(json.dumps({"times": times}))


def time_engines(
    engines: dict[str, str],
    inputs: str,
    rounds: int = 3,
    runs: int = 20,
    warmup: int = 3,
    outputs_dir: str | None = None,
) -> dict[str, float]:
    """Median seconds per run of each engine (label -> ``kind:path``), over ``rounds`` alternating rounds
    of one process per engine. With ``outputs_dir``, each engine's first round saves its outputs as
    ``<label>.npz`` there."""
    medians: dict[str, list[float]] = {label: [] for label in engines}
    env = dict(os.environ, TVM_NUM_THREADS=str(THREADS))
    for r in range(rounds):
        order = list(engines.items())
        for label, engine in order if r % 2 == 0 else order[::-1]:
            command = [
                sys.executable,
                __file__,
                engine,
                inputs,
                "--runs",
                str(runs),
                "--warmup",
                str(warmup),
            ]
            if outputs_dir and r == 0:
                command += ["--outputs", os.path.join(outputs_dir, f"{label}.npz")]
            done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
            if done.returncode != 0:
                raise RuntimeError(f"{label} ({engine}) failed:\n{done.stderr[-2000:]}")
            times = json.loads(done.stdout.strip().splitlines()[-1])["times"]
            medians[label].append(statistics.median(times))
    return {label: statistics.median(values) for label, values in medians.items()}


def load_outputs(path: str) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description="time one engine in this process (the worker of time_engines)"
    )
    parser.add_argument("engine", help="tvm:LIB.so or ort:MODEL.onnx")
    parser.add_argument("inputs", help=".npz of the inputs, by input name, in the model's order")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--outputs", help="save the outputs to this .npz")
    args = parser.parse_args()
    worker(args.engine, args.inputs, args.runs, args.warmup, args.outputs)


if __name__ == "__main__":
    main()
