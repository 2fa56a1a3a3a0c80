"""Bounded-time fuzzing of the two untrusted inputs: ONNX models and device instruction streams.

* ONNX: a small pruned MLP, serialized, with 1-3 random bit flips, goes
  through import, analysis and (every tenth input) the sparse build;
* programs: compiled dense / 2:4 / block GEMM layers, with 1-3 bit flips in
  the instruction stream, go through the decoder and the simulator.

Every input must either work or fail with the project's error types
(``TVMSparseError``: ``ModelError``, ``ProgramError``, ``DeviceFault``, ...).
Anything else is a crash; the script prints the first traceback of each kind
and a table of outcomes. Run: ``python benchmarks/fuzz.py [--seconds 60]``.
"""

from __future__ import annotations

import argparse
import collections
import time
import traceback
import warnings

import numpy as np

import tvm_sparse
from tvm_sparse.accel import load_device
from tvm_sparse.codegen.gemm_program import gemm_program
from tvm_sparse.errors import TVMSparseError
from tvm_sparse.hw.isa import INSTRUCTION_BYTES, Program
from tvm_sparse.prune import prune_onnx
from tvm_sparse.sim import run
from tvm_sparse.testing import mlp


def flip(data: bytes, rng, start: int = 0, end: int | None = None) -> bytes:
    out = bytearray(data)
    end = len(out) if end is None else end
    for _ in range(rng.integers(1, 4)):
        out[rng.integers(start, end)] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def fuzz(label: str, seconds: float, make_input, consume) -> collections.Counter:
    outcomes: collections.Counter = collections.Counter()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        data = make_input()
        try:
            consume(data, outcomes["tried"])
            outcomes["worked"] += 1
        except TVMSparseError as err:
            outcomes[f"rejected: {type(err).__name__}"] += 1
        except Exception as err:  # a crash: the point of fuzzing is to find these
            key = f"CRASH: {type(err).__name__}"
            if outcomes[key] == 0:
                traceback.print_exc(limit=4)
            outcomes[key] += 1
        outcomes["tried"] += 1
    print(f"{label}: " + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()), flush=True)
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    opts = parser.parse_args()
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)

    model = prune_onnx(mlp(batch=4, sizes=(32, 16, 8)), "block:16x1", 0.5)[0].SerializeToString()

    def compile_model(data: bytes, index: int) -> None:
        tvm_sparse.analyze(data)
        if index % 10 == 0:
            tvm_sparse.build(data)

    onnx = fuzz(
        "ONNX import + analysis + sparsify", opts.seconds, lambda: flip(model, rng), compile_model
    )

    device = load_device("sparse-accel")
    x = rng.integers(-128, 128, size=(8, 32)).astype(np.int8)
    w = rng.integers(-128, 128, size=(32, 16)).astype(np.int8)
    w24, wb = w.copy(), w.copy()
    w24.reshape(8, 4, 16)[:, 2:, :] = 0
    wb[16:] = 0
    programs = [
        gemm_program(
            x, weight, np.zeros(16, np.int64), np.ones(16, np.int64), 4, device, mode, relu=True
        )[0].to_bytes()
        for weight, mode in ((w, "dense"), (w24, "nm"), (wb, "block"))
    ]

    def corrupt_program() -> bytes:
        data = programs[rng.integers(0, len(programs))]
        code = 22 + int.from_bytes(data[6:10], "little")
        count = int.from_bytes(data[10:14], "little")
        return flip(data, rng, code, code + count * INSTRUCTION_BYTES)

    streams = fuzz(
        "instruction streams (decode + simulate)",
        opts.seconds,
        corrupt_program,
        lambda data, _: run(Program.from_bytes(data), device),
    )
    crashes = sum(v for k, v in (onnx + streams).items() if k.startswith("CRASH"))
    print(f"crashes: {crashes}")


if __name__ == "__main__":
    main()
