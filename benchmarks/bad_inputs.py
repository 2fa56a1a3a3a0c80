"""Bad inputs, by category, and what the project does with each: a tally for the reliability report.

Every case is run through the user-facing entry point (the ``tvm-sparse``
command, or the Python API where there is no command) and classified:

* ``clear error``: a one-line error naming the problem and exit status 1 (or
  the project's exception type from the API);
* ``works``: by a documented fallback (dense kernels, host execution), or
  because the input is still valid (a flipped byte inside weight data, the
  oldest opset);
* ``internal error`` / ``crash``: anything else (a defect).

    python benchmarks/bad_inputs.py
"""

from __future__ import annotations

import collections
import contextlib
import copy
import io
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tvm_sparse.accel import load_device
from tvm_sparse.cli import main
from tvm_sparse.codegen.builder import ProgramBuilder
from tvm_sparse.errors import TVMSparseError
from tvm_sparse.hw.device import Device
from tvm_sparse.hw.isa import Buffer, Flag, Program, Queue
from tvm_sparse.schedule.database import open_database
from tvm_sparse.sim import run
from tvm_sparse.target import host_target
from tvm_sparse.testing import mlp
from tvm_sparse.tune import TunedSchedules

OUTCOMES = ("clear error", "works", "internal error", "crash")


def cli(*args) -> str:
    """Run the command; classify by exit status and the shape of stderr."""
    err = io.StringIO()
    with (
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        try:
            code = main([str(a) for a in args])
        except Exception:
            return "crash"
    lines = err.getvalue().strip().splitlines()
    if code == 0:
        return "works"
    if code == 1 and len([line for line in lines if "error" in line]) == 1:
        return "clear error"
    return "internal error"


def api(fn) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            fn()
        except TVMSparseError:
            return "clear error"
        except Exception:
            return "crash"
    return "crash"  # bad input that silently worked counts as a defect


def _save(model, path: Path) -> Path:
    onnx.save(model, path)
    return path


def _model_with(d: Path, name: str, edit) -> Path:
    model = copy.deepcopy(mlp(batch=4, sizes=(16, 32, 8)))
    edit(model)
    return _save(model, d / f"{name}.onnx")


def _single_node(op: str, opset: int = 17) -> onnx.ModelProto:
    node = helper.make_node(op, ["x"], ["y"], name="n0")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def model_cases(d: Path) -> dict:
    good = _save(mlp(batch=4, sizes=(16, 32, 8)), d / "good.onnx")
    data = good.read_bytes()
    rng = np.random.default_rng(0)
    cases = {
        "not a protobuf": d / "text.onnx",
        "empty file": d / "empty.onnx",
        "missing file": d / "absent.onnx",
        "unsupported op": _save(_single_node("NoSuchOp"), d / "op.onnx"),
        "oldest opset (1)": _save(_single_node("Relu", opset=1), d / "opset1.onnx"),
        "opset from the future (99)": _save(_single_node("Relu", opset=99), d / "opset99.onnx"),
    }
    (d / "text.onnx").write_text("definitely not onnx")
    (d / "empty.onnx").write_bytes(b"")
    for i, cut in enumerate((0.1, 0.5, 0.9)):
        cases[f"truncated at {cut:.0%}"] = d / f"trunc{i}.onnx"
        cases[f"truncated at {cut:.0%}"].write_bytes(data[: int(len(data) * cut)])
    for i in range(5):
        flipped = bytearray(data)
        flipped[rng.integers(len(flipped))] ^= 0xFF
        cases[f"corrupted byte #{i}"] = d / f"flip{i}.onnx"
        cases[f"corrupted byte #{i}"].write_bytes(bytes(flipped))
    return cases


def fallback_models(d: Path) -> dict:
    def symbolic_batch(m):
        m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
        m.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"

    def weight_as_input(m):
        w = m.graph.initializer[0]
        m.graph.input.append(helper.make_tensor_value_info(w.name, w.data_type, list(w.dims)))
        del m.graph.initializer[0]

    def float16_weights(m):
        for node in list(m.graph.node):
            if node.op_type == "Gemm":
                tensor = next(t for t in m.graph.initializer if t.name == node.input[1])
                half = numpy_helper.from_array(
                    numpy_helper.to_array(tensor).astype(np.float16), tensor.name + ".h"
                )
                m.graph.initializer.append(half)
                cast = helper.make_node(
                    "Cast", [half.name], [tensor.name + ".c"], to=TensorProto.FLOAT
                )
                m.graph.node.insert(0, cast)
                node.input[1] = cast.output[0]

    return {
        "symbolic batch dimension": _model_with(d, "symbolic", symbolic_batch),
        "weights that are graph inputs": _model_with(d, "winput", weight_as_input),
        "float16 weights (Cast)": _model_with(d, "fp16", float16_weights),
    }


def device_cases() -> dict:
    doc = load_device("sparse-accel").to_dict()

    def edited(path: str, value):
        out = copy.deepcopy(doc)
        node, *keys = path.split(".")
        target = out
        for key in [node, *keys][:-1]:
            target = target[key]
        if value is KeyError:
            del target[[node, *keys][-1]]
        else:
            target[[node, *keys][-1]] = value
        return lambda: Device.from_dict(out)

    return {
        "missing pe_array.reduction_lanes": edited("pe_array.reduction_lanes", KeyError),
        "missing clock_mhz": edited("clock_mhz", KeyError),
        "zero output lanes": edited("pe_array.output_lanes", 0),
        "negative buffer": edited("buffers.weight_bytes", -4),
        "buffer too small for any tile": edited("buffers.weight_bytes", 100),
        "unknown datatype": edited("datatypes.weight", "int4"),
        "non-numeric bandwidth": edited("dram_bytes_per_cycle", "fast"),
        "N:M with n >= m": edited("sparse_modes.nm", {"n": 4, "m": 4}),
        "block not dividing the output lanes": edited(
            "sparse_modes.block", {"block_rows": 16, "block_cols": 5, "index_bits": 16}
        ),
        "block index wider than its count": edited(
            "sparse_modes.block", {"block_rows": 16, "block_cols": 16, "index_bits": 17}
        ),
        "unknown mode": edited("sparse_modes.bitmap", {}),
        "unknown buffer field": edited("buffers.extra_bytes", 4),
        "empty name": edited("name", ""),
        "not a JSON object": lambda: Device.from_dict([1, 2, 3]),
    }


def program_cases() -> dict:
    device = load_device("sparse-accel")

    def out_of_bounds_sram():
        b = ProgramBuilder("sparse-accel")
        addr = b.place(np.zeros(16, np.int8))
        b.load(Buffer.INP, device.buffers.input_bytes - 8, addr, 1, 16)
        run(b.build())

    def out_of_bounds_dram():
        b = ProgramBuilder("sparse-accel")
        b.place(np.zeros(16, np.int8))
        b.load(Buffer.INP, 0, 8, 2, 16)
        run(b.build())

    def deadlock():
        b = ProgramBuilder("sparse-accel")
        b.nop(Queue.COMPUTE, Flag.POP_PREV)
        b.nop(Queue.LOAD, Flag.POP_NEXT)
        run(b.build())

    def token_never_pushed():
        b = ProgramBuilder("sparse-accel")
        b.nop(Queue.STORE, Flag.POP_PREV)
        run(b.build())

    b = ProgramBuilder("sparse-accel")
    b.nop(Queue.COMPUTE, Flag(0))
    good = b.build().to_bytes()
    cases = {
        "out-of-bounds buffer access": out_of_bounds_sram,
        "out-of-bounds DRAM access": out_of_bounds_dram,
        "dependency deadlock": deadlock,
        "token never pushed": token_never_pushed,
        "stream shorter than its header": lambda: Program.from_bytes(good[:10]),
        "bad magic": lambda: Program.from_bytes(b"XXXX" + good[4:]),
        "truncated instruction": lambda: Program.from_bytes(good[:-1]),
    }
    for opcode in (99, 200, 255):
        data = bytearray(good)
        meta_len = int.from_bytes(data[6:10], "little")
        data[22 + meta_len] = opcode
        cases[f"unknown opcode {opcode}"] = lambda data=bytes(data): run(Program.from_bytes(data))
    return cases


def database_cases(d: Path) -> dict:
    def database(name: str, damage) -> Path:
        path = d / name
        open_database(path, create=True)
        damage(path)
        return path

    def open_records(path: Path):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            records = TunedSchedules.open(path, host_target())
        if records.database is None and caught:
            raise TVMSparseError(
                str(caught[0].message)
            )  # skipped with a warning: the documented behaviour
        return records

    paths = {
        "corrupt record file": database(
            "corrupt", lambda p: (p / "database_tuning_record.json").write_text("{oops\n")
        ),
        "corrupt workload file": database(
            "corrupt_wl", lambda p: (p / "database_workload.json").write_text("[1, 2\n")
        ),
        "another TVM version": database(
            "version",
            lambda p: (p / "tvm_sparse.json").write_text(
                json.dumps({"format": 1, "tvm": "0.20.0"})
            ),
        ),
        "not a tuning database": d / "no_such_db",
        "unreadable metadata": database(
            "meta", lambda p: (p / "tvm_sparse.json").write_text("\x00\x01")
        ),
    }
    return {name: (lambda path=path: open_records(path)) for name, path in paths.items()}


def main_(verbose: bool = False) -> None:
    tally: dict = collections.defaultdict(collections.Counter)
    details = []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for name, path in model_cases(d).items():
            for command in (["analyze", path], ["compile", path, "-o", d / "o.so"]):
                outcome = cli(*command)
                tally["ONNX files"][outcome] += 1
                details.append(("ONNX files", f"{command[0]}: {name}", outcome))
        for name, path in fallback_models(d).items():
            outcome = cli("compile", path, "-o", d / "f.so")
            tally["models needing a fallback"][outcome] += 1
            details.append(("models needing a fallback", name, outcome))
        for name, fn in device_cases().items():
            outcome = api(fn)
            tally["device descriptions"][outcome] += 1
            details.append(("device descriptions", name, outcome))
        (d / "bad_device.json").write_text("{not json")
        outcome = cli(
            "compile", d / "good.onnx", "-o", d / "o.so", "--device", d / "bad_device.json"
        )
        tally["device descriptions"][outcome] += 1
        details.append(("device descriptions", "unparsable --device file", outcome))
        for name, fn in program_cases().items():
            outcome = api(fn)
            tally["instruction streams"][outcome] += 1
            details.append(("instruction streams", name, outcome))
        for name, fn in database_cases(d).items():
            outcome = api(fn)
            tally["tuning databases"][outcome] += 1
            details.append(("tuning databases", name, outcome))

        good = d / "good.onnx"
        lib = d / "good.so"
        assert main(["compile", str(good), "-o", str(lib)]) == 0
        np.save(d / "x.npy", np.zeros((4, 16), "float32"))
        np.save(d / "x_shape.npy", np.zeros((4, 15), "float32"))
        np.save(d / "x_dtype.npy", np.zeros((4, 16), "float64"))
        run_cases = {
            "missing input": [],
            "unknown input name": ["--input", f"y={d / 'x.npy'}"],
            "wrong shape": ["--input", f"x={d / 'x_shape.npy'}"],
            "wrong dtype": ["--input", f"x={d / 'x_dtype.npy'}"],
            "unreadable .npy": ["--input", f"x={d / 'absent.npy'}"],
            "malformed --input": ["--input", "x"],
        }
        for name, args in run_cases.items():
            outcome = cli("run", lib, *args)
            tally["tvm-sparse run"][outcome] += 1
            details.append(("tvm-sparse run", name, outcome))
        for name, path in {
            "an ONNX model": good,
            "a text file": d / "text.onnx",
            "a missing file": d / "absent.so",
        }.items():
            outcome = cli("run", path, "--input", f"x={d / 'x.npy'}")
            tally["tvm-sparse run"][outcome] += 1
            details.append(("tvm-sparse run", f"library that is {name}", outcome))
        prune_cases = {
            "unknown pattern": ["--pattern", "diagonal", "--density", "0.5"],
            "density 0": ["--pattern", "unstructured", "--density", "0"],
            "density 1.5": ["--pattern", "block:16x1", "--density", "1.5"],
            "block 0x4": ["--pattern", "block:0x4", "--density", "0.5"],
            "N:M with N >= M": ["--pattern", "nm:4:4"],
            "missing density": ["--pattern", "block:16x1"],
            "decompose rank 0": ["--pattern", "decompose:rank=0"],
            "decompose unknown option": ["--pattern", "decompose:rank=2,colour=blue"],
        }
        for name, args in prune_cases.items():
            outcome = cli("prune", good, "-o", d / "p.onnx", *args)
            tally["tvm-sparse prune"][outcome] += 1
            details.append(("tvm-sparse prune", name, outcome))
        for target in ("cuda", "sparse-accel-imaginary", "llvm -mcpu=foo", ""):
            outcome = cli("compile", good, "-o", d / "o.so", "--target", target)
            tally["targets"][outcome] += 1
            details.append(("targets", f"--target {target!r}", outcome))
        outcome = cli("tune", good, "--db", d / "db", "--trials", "0")
        tally["tvm-sparse tune"][outcome] += 1
        details.append(("tvm-sparse tune", "--trials 0", outcome))

    for category, outcome_counts in tally.items():
        print(
            f"{category:28s} "
            + ", ".join(f"{o} {outcome_counts[o]}" for o in OUTCOMES if outcome_counts[o])
        )
    total = collections.Counter()
    for counts in tally.values():
        total.update(counts)
    print(f"{'all':28s} " + ", ".join(f"{o} {total[o]}" for o in OUTCOMES if total[o]))
    defects = [(c, n, o) for c, n, o in details if o in ("internal error", "crash")]
    for category, name, outcome in details if verbose else defects:
        print(f"{category}: {name}: {outcome}")


if __name__ == "__main__":
    main_(verbose="-v" in sys.argv)
