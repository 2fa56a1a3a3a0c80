"""The package's layering: its units (top-level subpackages and modules) import one another one way, and the
hardware contract (``tvm_sparse.hw``) and the simulator (``tvm_sparse.sim``) stand below the compiler and run
without TVM."""

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np

import tvm_sparse
from tvm_sparse.codegen.gemm_program import gemm_program
from tvm_sparse.hw.device import load_device
from tvm_sparse.sim import run

PACKAGE = Path(tvm_sparse.__file__).parent
#: What each low layer may import: units of the package, and modules outside it (besides the standard library).
ALLOWED = {"hw": ({"errors", "data"}, {"numpy"}), "sim": ({"hw"}, {"numpy"})}


def units() -> list[str]:
    return sorted(
        p.stem if p.suffix == ".py" else p.name
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()
    )


def imports_of(unit: str) -> tuple[set, set]:
    """``(units of the package, outside top-level modules)`` that ``unit``'s files import, at any level
    (function-level imports included)."""
    units, outside = set(), set()
    files = (
        (PACKAGE / unit).rglob("*.py") if (PACKAGE / unit).is_dir() else [PACKAGE / f"{unit}.py"]
    )
    for path in files:
        package = list(path.relative_to(PACKAGE).parts[:-1])
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[: len(package) - node.level + 1]
                target = base + (node.module.split(".") if node.module else [node.names[0].name])
                units.add(target[0])
            elif isinstance(node, ast.ImportFrom) and node.module:
                outside.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                outside.update(alias.name.split(".")[0] for alias in node.names)
    return units - {unit}, outside - set(sys.stdlib_module_names) - {"__future__"}


def test_units_import_each_other_one_way():
    graph = {unit: imports_of(unit)[0] for unit in units()}
    state: dict = {}

    def visit(unit, path):
        if state.get(unit) == "done":
            return
        assert state.get(unit) != "open", "import cycle: " + " -> ".join(
            path[path.index(unit) :] + [unit]
        )
        state[unit] = "open"
        for other in sorted(graph.get(unit, ())):
            visit(other, path + [unit])
        state[unit] = "done"

    for unit in graph:
        visit(unit, [])


def test_contract_and_simulator_import_only_what_lies_below():
    for unit, (units, outside) in ALLOWED.items():
        got_units, got_outside = imports_of(unit)
        assert got_units <= units, f"{unit} imports {sorted(got_units - units)} of the package"
        assert got_outside <= outside, f"{unit} imports {sorted(got_outside - outside)}"


def test_simulator_runs_without_tvm(tmp_path):
    """A program compiled here runs in a process where importing tvm fails, with the same results."""
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (32, 64), dtype=np.int8)
    w = rng.integers(-128, 128, (64, 32), dtype=np.int8)
    program, out = gemm_program(
        x,
        w,
        np.zeros(32, np.int64),
        np.full(32, 3, np.int64),
        shift=12,
        device=load_device("sparse-accel"),
        relu=True,
    )
    (tmp_path / "program.bin").write_bytes(program.to_bytes())
    script = f"""
import sys, types
sys.modules["tvm"] = sys.modules["tvm_ffi"] = None  # any import of TVM fails
package = types.ModuleType("tvm_sparse")
package.__path__ = [{str(PACKAGE)!r}]
sys.modules["tvm_sparse"] = package  # the package's modules without its TVM-importing __init__
from tvm_sparse.hw.isa import Program
from tvm_sparse.sim import run
result = run(Program.from_bytes(open("program.bin", "rb").read()), "sparse-accel")
open("out.bin", "wb").write(result.read({out}, (32, 32), "int8").tobytes())
print(result.report.total.cycles)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    here = run(program, "sparse-accel")
    assert (tmp_path / "out.bin").read_bytes() == here.read(out, (32, 32), np.int8).tobytes()
    assert int(done.stdout) == here.report.total.cycles
