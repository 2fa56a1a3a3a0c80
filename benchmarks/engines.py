"""Timing inference engines fairly: each in its own process, engines alternating, medians.

TVM's thread pool and onnxruntime's intra-op pool both spin after a parallel
region; two engines in one process steal each other's cores, so which one a
same-process comparison favours depends on order and load. Here every timing
runs in a fresh worker process that loads one engine, runs the model
``warmup + runs`` times and prints the per-run wall times as JSON; the parent
alternates engines over several rounds and reports, per engine, the median of
the rounds' medians.

Engines (``kind:path``), each with ``THREADS`` threads, fp32, otherwise as users run it:

* ``tvm:LIB.so``: a library written by ``tvm-sparse compile`` / ``export_library``
  (``import tvm_sparse`` registers its runtime functions; ``TVM_NUM_THREADS``
  sets the pool);
* ``ort:MODEL.onnx``: onnxruntime's CPU provider with ``threads`` intra-op
  threads (its defaults otherwise, spinning included, as users run it);
* ``openvino:MODEL.onnx``: OpenVINO's CPU plugin, ``INFERENCE_PRECISION_HINT=f32``,
  ``INFERENCE_NUM_THREADS``, ``PERFORMANCE_HINT=LATENCY`` with one stream (one
  request at a time, as the others run);
* ``deepsparse:MODEL.onnx``: DeepSparse 1.8 (``compile_model(num_cores=THREADS)``) on the
  model with LayerNorm and GELU written as it compiles them (:func:`deepsparse_form`; same
  arithmetic), which needs numpy<2 and Python 3.11: its worker runs under its own venv,
  ``benchmarks/.venv-deepsparse``, made on first use (:func:`deepsparse_python`); this file's
  worker part needs only numpy, onnx and the standard library for that;
* ``torch:MODEL.onnx`` / ``torch-csr:MODEL.onnx``: one linear layer (``MatMul`` by
  an initializer, then ``Add`` of one) read from the ONNX file and run by torch as
  ``F.linear`` (dense GEMM, zeros included) or as a CSR sparse ``addmm``.

Worker, by hand: ``python benchmarks/engines.py tvm:lib.so inputs.npz --runs 20``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: threads per engine; workers inherit ``ENGINES_THREADS`` from the parent (:func:`set_threads`)
THREADS = int(os.environ.get("ENGINES_THREADS", "2"))
KINDS = ("tvm", "ort", "openvino", "deepsparse", "torch", "torch-csr")

#: DeepSparse's own interpreter: its 1.8 wheels stop at Python 3.11 and it needs numpy<2 (the
#: project pins numpy 2); onnx<1.15 is its own pin (these versions are what pip resolved for it).
DEEPSPARSE_VENV = Path(__file__).resolve().parent / ".venv-deepsparse"
DEEPSPARSE_REQUIREMENTS = ("deepsparse==1.8.0", "numpy==1.26.4", "onnx==1.14.1")
#: the environment of every worker: the thread counts, and no usage reports from DeepSparse
WORKER_ENV = {
    "ENGINES_THREADS": str(THREADS),
    "TVM_NUM_THREADS": str(THREADS),
    "NM_DISABLE_ANALYTICS": "1",
}


def set_threads(n: int) -> None:
    """Give every engine timed from now on ``n`` threads."""
    global THREADS
    THREADS = n
    WORKER_ENV.update(ENGINES_THREADS=str(n), TVM_NUM_THREADS=str(n))


class EngineUnavailable(RuntimeError):
    """An engine that cannot run here (its package cannot be installed, or refuses this CPU)."""


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


def _outputs(values) -> list[np.ndarray]:
    return [np.array(v, copy=True) for v in values]


def _linear_layer(path: str):
    """``(weight [in, out], bias [out] or None)`` of a one-layer ONNX model: ``MatMul`` by an
    initializer, optionally followed by ``Add`` of an initializer (Identity nodes aside)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(path).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    ops = [n for n in graph.node if n.op_type != "Identity"]
    if not ops or ops[0].op_type != "MatMul" or ops[0].input[1] not in inits or len(ops) > 2:
        raise ValueError(f"{path}: torch runs only one MatMul (+ Add) layer, not this graph")
    bias = None
    if len(ops) == 2:
        if ops[1].op_type != "Add":
            raise ValueError(f"{path}: torch runs only one MatMul (+ Add) layer, not this graph")
        bias = next(inits[name] for name in ops[1].input if name in inits)
    return inits[ops[0].input[1]], bias


def _scalar(inits: dict, name: str) -> float | None:
    value = inits.get(name)
    return float(value) if value is not None and value.size == 1 else None


def deepsparse_form(path: str) -> str:
    """``path``, or a copy with the same arithmetic written the way DeepSparse 1.8 compiles it whole.

    DeepSparse runs the ops it does not know outside its engine, splitting the graph where they
    sit (``fraction_of_supported_ops`` below 1). Two forms in the generated encoders are such ops
    (measured: a 90%-unstructured BERT-base 4-layer encoder 39.7 ms as written, 26.1 ms with the
    LayerNorms written out): ``LayerNormalization`` (opset 17), written out as the ReduceMean /
    Sub / Mul / Sqrt / Div ops of exporters before it, and GELU as ``x * 0.5 * (1 + erf(x *
    (1/sqrt 2)))``, rewritten as HuggingFace's exports have it, ``x * (1 + erf(x / sqrt 2)) *
    0.5``. The copy is ``PATH.deepsparse.onnx``."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(path)
    graph = model.graph
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def const(name: str, value: float) -> str:
        if name not in inits:
            graph.initializer.append(numpy_helper.from_array(np.array(value, "float32"), name))
            inits[name] = np.array(value, "float32")
        return name

    replace: dict[int, list] = {}  # id(node) -> the nodes in its place ([] drops it)
    for index, node in enumerate(graph.node):
        p = f"_ds{index}"
        if node.op_type == "LayerNormalization" and opset < 18:  # ReduceMean's axes: attribute
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if attrs.get("axis", -1) != -1 or len(node.output) != 1:
                continue
            x, scale, *bias = node.input
            eps = const(f"{p}.eps", attrs.get("epsilon", 1e-5))
            last = node.output[0] if not (bias and bias[0]) else f"{p}.scaled"
            replace[id(node)] = [
                helper.make_node("ReduceMean", [x], [f"{p}.mean"], axes=[-1]),
                helper.make_node("Sub", [x, f"{p}.mean"], [f"{p}.centred"]),
                helper.make_node("Mul", [f"{p}.centred", f"{p}.centred"], [f"{p}.square"]),
                helper.make_node("ReduceMean", [f"{p}.square"], [f"{p}.var"], axes=[-1]),
                helper.make_node("Add", [f"{p}.var", eps], [f"{p}.vareps"]),
                helper.make_node("Sqrt", [f"{p}.vareps"], [f"{p}.std"]),
                helper.make_node("Div", [f"{p}.centred", f"{p}.std"], [f"{p}.normed"]),
                helper.make_node("Mul", [f"{p}.normed", scale], [last]),
            ]
            if last != node.output[0]:
                replace[id(node)].append(helper.make_node("Add", [last, bias[0]], node.output))
        elif node.op_type == "Erf":  # Mul(x, 1/sqrt2) -> Erf -> Add(1) -> Mul(., Mul(x, 0.5))
            scaled = producer.get(node.input[0])
            add = consumers.get(node.output[0], [None])[0]
            mul = consumers.get(add.output[0], [None])[0] if add is not None else None
            if scaled is None or scaled.op_type != "Mul" or add is None or add.op_type != "Add":
                continue
            if mul is None or mul.op_type != "Mul":
                continue
            x, c = scaled.input
            half = producer.get(next((i for i in mul.input if i != add.output[0]), ""))
            one = next((i for i in add.input if i != node.output[0]), "")
            scale = _scalar(inits, c)
            if not (
                scale is not None
                and abs(scale - 2**-0.5) < 1e-6
                and _scalar(inits, one) == 1.0
                and half is not None
                and half.op_type == "Mul"
                and half.input[0] == x
                and _scalar(inits, half.input[1]) == 0.5
                and all(len(consumers[n.output[0]]) == 1 for n in (scaled, node, add, half))
            ):
                continue
            for gone in (scaled, add, half):
                replace[id(gone)] = []
            replace[id(mul)] = []
            replace[id(node)] = [
                helper.make_node("Div", [x, const("_ds.sqrt2", 2**0.5)], [f"{p}.div"]),
                helper.make_node("Erf", [f"{p}.div"], [f"{p}.erf"]),
                helper.make_node("Add", [f"{p}.erf", const("_ds.one", 1.0)], [f"{p}.add"]),
                helper.make_node("Mul", [x, f"{p}.add"], [f"{p}.mul"]),
                helper.make_node("Mul", [f"{p}.mul", const("_ds.half", 0.5)], mul.output),
            ]
    if not replace:
        return path
    nodes = [m for n in graph.node for m in replace.get(id(n), [n])]
    del graph.node[:]
    graph.node.extend(nodes)
    out = path + ".deepsparse.onnx"
    onnx.save(model, out)
    return out


def _session(kind: str, path: str, feeds: dict[str, np.ndarray]):
    """``(run, version, note)``: a callable running the engine on a feed dict (like ``feeds``) and
    returning the outputs as numpy arrays, the engine's version, and what else to know (or "")."""
    if kind == "ort":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        return (lambda feeds: session.run(None, feeds)), ort.__version__, ""
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

        return run, f"{tvm_sparse.__version__} (TVM {tvm.__version__})", ""
    if kind == "openvino":
        import openvino as ov

        core = ov.Core()
        compiled = core.compile_model(
            path,
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": "f32",
                "INFERENCE_NUM_THREADS": THREADS,
                "PERFORMANCE_HINT": "LATENCY",
                "NUM_STREAMS": 1,
            },
        )
        request = compiled.create_infer_request()
        names = [port.any_name for port in compiled.inputs]

        def run(feeds):
            # by input name; ``infer`` copies the inputs and outputs, as the other engines do
            result = request.infer({name: feeds[name] for name in names})
            return _outputs(result[port] for port in compiled.outputs)

        return run, ov.get_version().split("-")[0], ""
    if kind == "deepsparse":
        import deepsparse

        # the batch size is the inputs' leading dimension (DeepSparse overrides the model's)
        engine = deepsparse.compile_model(
            deepsparse_form(path), batch_size=next(iter(feeds.values())).shape[0], num_cores=THREADS
        )
        fraction = engine.fraction_of_supported_ops
        note = (
            f"{fraction:.1%} of the ops in its engine (the rest outside it)" if fraction < 1 else ""
        )
        return (lambda feeds: engine.run(list(feeds.values()))), deepsparse.__version__, note
    if kind in ("torch", "torch-csr"):
        import torch

        torch.set_num_threads(THREADS)
        weight, bias = _linear_layer(path)
        w = torch.from_numpy(np.ascontiguousarray(weight.T))  # [out, in], as F.linear takes it
        b = torch.from_numpy(np.array(bias)) if bias is not None else None
        if kind == "torch":

            def run(feeds):
                with torch.inference_mode():
                    (x,) = feeds.values()
                    return [torch.nn.functional.linear(torch.from_numpy(x), w, b).numpy()]

        else:
            csr = w.to_sparse_csr()
            column = (b if b is not None else torch.zeros(w.shape[0]))[:, None]

            def run(feeds):
                with torch.inference_mode():
                    (x,) = feeds.values()
                    flat = torch.from_numpy(x).reshape(-1, x.shape[-1])
                    y = torch.addmm(column, csr, flat.T).T  # [tokens, out]
                    return [y.reshape(*x.shape[:-1], -1).numpy()]

        return run, torch.__version__.split("+")[0], ""
    raise ValueError(f"unknown engine kind {kind!r} ({', '.join(KINDS)})")


def worker(engine: str, inputs: str, runs: int, warmup: int, outputs: str | None) -> None:
    kind, _, path = engine.partition(":")
    with np.load(inputs) as data:
        feeds = {name: data[name] for name in data.files}
    run, version, note = _session(kind, path, feeds)
    for _ in range(max(warmup, 1)):
        result = run(feeds)
    if outputs:
        np.savez(outputs, *result)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run(feeds)
        times.append(time.perf_counter() - start)
    print(json.dumps({"times": times, "version": version, "note": note}))


_deepsparse: str | EngineUnavailable | None = None


def tail(text: str) -> str:
    """The last non-empty line of a process's output (300 characters at most)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def deepsparse_python() -> str:
    """The interpreter of DeepSparse's venv (``DEEPSPARSE_VENV``), made on first use with
    ``python -m venv`` and pip (``DEEPSPARSE_REQUIREMENTS``), and checked to import DeepSparse
    and accept this CPU. Raises :class:`EngineUnavailable` with the reason otherwise (once per
    process: the answer is kept)."""
    global _deepsparse
    if _deepsparse is None:
        try:
            _deepsparse = _make_deepsparse_venv()
        except EngineUnavailable as err:
            _deepsparse = err
    if isinstance(_deepsparse, EngineUnavailable):
        raise _deepsparse
    return _deepsparse


def _make_deepsparse_venv() -> str:
    python = DEEPSPARSE_VENV / "bin" / "python"
    check = [
        str(python),
        "-c",
        "import deepsparse, deepsparse.cpu as c; print(deepsparse.__version__, c.cpu_architecture().isa)",
    ]
    env = dict(os.environ, **WORKER_ENV)

    def usable() -> subprocess.CompletedProcess:
        return subprocess.run(check, capture_output=True, text=True, env=env, timeout=600)

    if python.exists() and usable().returncode == 0:
        return str(python)
    base = sys._base_executable if sys.version_info[:2] == (3, 11) else shutil.which("python3.11")
    if not base:
        raise EngineUnavailable("DeepSparse 1.8 needs Python <= 3.11; no python3.11 found")
    print(
        f"making {DEEPSPARSE_VENV} for DeepSparse ({' '.join(DEEPSPARSE_REQUIREMENTS)})", flush=True
    )
    steps = [
        [base, "-m", "venv", "--clear", str(DEEPSPARSE_VENV)],
        [str(python), "-m", "pip", "install", "--quiet", *DEEPSPARSE_REQUIREMENTS],
    ]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise EngineUnavailable(f"{' '.join(step[:4])}: {err}") from None
        if done.returncode != 0:
            raise EngineUnavailable(f"{' '.join(step[1:4])}: {tail(done.stderr + done.stdout)}")
    done = usable()
    if done.returncode != 0:
        raise EngineUnavailable(f"import deepsparse: {tail(done.stderr + done.stdout)}")
    return str(python)


def interpreter(kind: str) -> str:
    """The Python that runs an engine's worker: DeepSparse's venv for ``deepsparse``, else this one."""
    if kind not in KINDS:
        raise ValueError(f"unknown engine kind {kind!r} ({', '.join(KINDS)})")
    return deepsparse_python() if kind == "deepsparse" else sys.executable


@dataclass
class Timings:
    """What :func:`measure` found: seconds per run (median of the rounds' medians), each round's
    median, each engine's version and note, and the engines that failed (label -> reason)."""

    medians: dict[str, float] = field(default_factory=dict)
    rounds: dict[str, list[float]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


def measure(
    engines: dict[str, str],
    inputs: str,
    rounds: int = 3,
    runs: int = 20,
    warmup: int = 3,
    outputs_dir: str | None = None,
    keep_going: bool = False,
) -> Timings:
    """Time each engine (label -> ``kind:path``) over ``rounds`` rounds of one process per engine,
    the order reversed every other round. With ``outputs_dir``, each engine's first round saves its
    outputs as ``<label>.npz`` there. An engine that cannot run raises, or with ``keep_going`` is
    recorded in ``failed`` (one line) and left out of the later rounds."""
    found = Timings(rounds={label: [] for label in engines})
    env = dict(os.environ, **WORKER_ENV)
    for r in range(rounds):
        order = [(label, engine) for label, engine in engines.items() if label not in found.failed]
        for label, engine in order if r % 2 == 0 else order[::-1]:
            kind = engine.partition(":")[0]
            command = [__file__, engine, inputs, "--runs", str(runs), "--warmup", str(warmup)]
            if outputs_dir and r == 0:
                command += ["--outputs", os.path.join(outputs_dir, f"{label}.npz")]
            try:
                command.insert(0, interpreter(kind))
                done = subprocess.run(
                    command, capture_output=True, text=True, env=env, timeout=3600
                )
            except (EngineUnavailable, subprocess.TimeoutExpired) as err:
                if not keep_going:
                    raise
                found.failed[label] = str(err)
                continue
            if done.returncode != 0:
                if not keep_going:
                    raise RuntimeError(f"{label} ({engine}) failed:\n{done.stderr[-2000:]}")
                found.failed[label] = tail(done.stderr)
                continue
            report = json.loads(done.stdout.strip().splitlines()[-1])
            found.rounds[label].append(statistics.median(report["times"]))
            found.versions[label] = report.get("version", "")
            if report.get("note"):
                found.notes[label] = report["note"]
    for label, values in found.rounds.items():
        if values and label not in found.failed:
            found.medians[label] = statistics.median(values)
    return found


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
    return measure(engines, inputs, rounds, runs, warmup, outputs_dir).medians


def load_outputs(path: str) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description="time one engine in this process (the worker of time_engines)"
    )
    parser.add_argument("engine", help=f"KIND:PATH, KIND one of {', '.join(KINDS)}")
    parser.add_argument("inputs", help=".npz of the inputs, by input name, in the model's order")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--outputs", help="save the outputs to this .npz")
    args = parser.parse_args()
    worker(args.engine, args.inputs, args.runs, args.warmup, args.outputs)


if __name__ == "__main__":
    main()
