"""tvm-sparse against the engines people pick for (pruned) models on CPUs, one table of medians.

Peers: DeepSparse 1.8 (the engine for pruned models; in its own venv, see :mod:`engines`),
onnxruntime and OpenVINO (fp32) for dense ones, and torch for the single-layer rows (a dense
``F.linear``, and on pruned weights also a CSR ``addmm``: the column shows the faster, ``csr``
marking the sparse one). Every engine runs the same ONNX file; tvm-sparse runs the library that
``tvm-sparse compile`` (cost model on, in its own process) writes from it, and DeepSparse the
file with its LayerNorms and GELUs written in the ops it compiles (``engines.deepsparse_form``;
as written, it runs them outside its engine and a pruned BERT took up to 2.4x longer).

Fair timing (:mod:`engines`): each engine in its own process with ``--threads`` (2) threads, fp32,
the engines alternating over ``--rounds`` rounds (order reversed every other round), ``--runs``
timed runs after ``--warmup`` untimed ones; a cell is the median of the rounds' medians, in ms.
The last column is the best peer's time / tvm-sparse's (above 1: tvm-sparse is faster). Outputs
are checked against onnxruntime (run once in this process, one thread, as the reference): a cell
whose max relative error (max |out - ref| / max |ref|) exceeds ``TOLERANCE`` is marked ``!``. An
engine that cannot run (its package cannot be installed, it refuses the CPU or the model) gets
``n/a`` and a note, and the run goes on.

Workloads (``--rows``): the BERT-base FFN layer ``[1,128,768] @ 768x3072 + bias`` dense and
pruned (16x1 and 8x8 blocks at density 0.1, unstructured 90%, 2:4); a BERT-base encoder (4
layers, hidden 768, 128 tokens, batch 1) dense, 16x1 at 0.1 and unstructured 90%; a
MiniLM-size encoder (6 layers, hidden 384) dense; a half-width ResNet-50 (width 32, 112x112,
batch 1) dense, unstructured 90% and 16x16 channel blocks at 0.1. Pruning is magnitude pruning
of every weight (:func:`tvm_sparse.prune.prune_onnx`) on generated weights.

Run: ``python benchmarks/peers.py [--quick] [--rows NAME,...] [--engines NAME,...]
[--rounds 3] [--runs 20] [--warmup 3] [--threads 2] [--json OUT]``. The machine's load average
is printed before and after: on a shared machine, quote it with the table.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

sys.path.insert(0, os.path.dirname(__file__))

import engines  # noqa: E402
from engines import load_outputs, machine, measure, tail  # noqa: E402

from tvm_sparse.prune import prune_onnx  # noqa: E402
from tvm_sparse.testing import GraphBuilder, bert_encoder, resnet  # noqa: E402

TOLERANCE = 1e-3
#: table columns: label -> engine kinds timed for it (the cell shows the fastest)
COLUMNS = {
    "tvm-sparse": ("tvm",),
    "DeepSparse": ("deepsparse",),
    "onnxruntime": ("ort",),
    "OpenVINO": ("openvino",),
    "torch": ("torch", "torch-csr"),
}
ENGINES = ("tvm", "deepsparse", "ort", "openvino", "torch")


def ffn() -> onnx.ModelProto:
    """BERT-base's first FFN layer: ``[1,128,768] @ 768x3072 + bias`` (MatMul + Add)."""
    g = GraphBuilder(seed=0)
    y = g.node("Identity", [g.linear("x", "ffn", 768, 3072)], name="y")
    return g.model(
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 128, 768])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, 128, 3072])],
    )


@functools.cache
def dense_model(family: str) -> onnx.ModelProto:
    if family == "ffn":
        return ffn()
    if family == "bert":
        return bert_encoder(hidden=768, heads=12, ffn=3072, seq=128, layers=4)
    if family == "minilm":
        return bert_encoder(hidden=384, heads=12, ffn=1536, seq=128, layers=6)
    if family == "resnet":
        return resnet(image=112, width=32)
    raise ValueError(family)


@dataclass(frozen=True)
class Row:
    label: str
    family: str
    pattern: str | None = None  # prune_onnx's pattern; None: dense
    density: float | None = None

    def model(self) -> onnx.ModelProto:
        model = dense_model(self.family)
        if self.pattern is None:
            return model
        with warnings.catch_warnings():  # activations x activations MatMuls are not weights
            warnings.simplefilter("ignore")
            return prune_onnx(model, self.pattern, self.density)[0]


ROWS = {
    "ffn-dense": Row("FFN dense", "ffn"),
    "ffn-16x1": Row("FFN 16x1 blocks at 0.1", "ffn", "block:16x1", 0.1),
    "ffn-8x8": Row("FFN 8x8 blocks at 0.1", "ffn", "block:8x8", 0.1),
    "ffn-unstructured": Row("FFN unstructured 90%", "ffn", "unstructured", 0.1),
    "ffn-2:4": Row("FFN 2:4", "ffn", "nm:2:4"),
    "bert-dense": Row("BERT-base 4 layers dense", "bert"),
    "bert-16x1": Row("  same, 16x1 at 0.1", "bert", "block:16x1", 0.1),
    "bert-unstructured": Row("  same, unstructured 90%", "bert", "unstructured", 0.1),
    "minilm-dense": Row("MiniLM-size (6 x 384) dense", "minilm"),
    "resnet-dense": Row("ResNet-50 half-width 112px dense", "resnet"),
    "resnet-unstructured": Row("  same, unstructured 90%", "resnet", "unstructured", 0.1),
    "resnet-16x16": Row("  same, 16x16 blocks at 0.1", "resnet", "block:16x16", 0.1),
}
QUICK_ROWS = ("ffn-dense", "ffn-16x1")


def feeds_for(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard-normal float32 inputs of the model's (static) input shapes."""
    rng = np.random.default_rng(seed)
    return {
        i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(
            "float32"
        )
        for i in model.graph.input
    }


def reference(path: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime's outputs, one thread (the session and its pool are gone before any timing)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    outputs = session.run(None, feeds)
    del session
    return outputs


def rel_error(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    if len(got) != len(want):
        return float("inf")
    worst = 0.0
    for g, w in zip(got, want):
        if g.shape != w.shape:
            return float("inf")
        scale = max(float(np.abs(w).max()), 1e-6)
        worst = max(worst, float(np.abs(g.astype(np.float64) - w).max()) / scale)
    return worst


def run_row(
    name: str, row: Row, kinds: list[str], rounds: int, runs: int, warmup: int, workdir: str
) -> dict:
    """Compile, time and check one workload; the result as a JSON-able dict."""
    model = row.model()
    onnx_path, lib = os.path.join(workdir, f"{name}.onnx"), os.path.join(workdir, f"{name}.so")
    onnx.save(model, onnx_path)
    feeds = feeds_for(model)
    inputs = os.path.join(workdir, f"{name}.inputs.npz")
    np.savez(inputs, **feeds)
    result: dict = {"row": name, "label": row.label, "failed": {}, "ms": {}, "error": {}}
    engines = {}
    for kind in kinds:
        if kind == "tvm":
            # `tvm-sparse compile` in its own process: a long-lived one would keep the kernels'
            # TVMScript sources it first read (and fail once they are edited under it)
            start = time.perf_counter()
            command = [sys.executable, "-m", "tvm_sparse.cli", "compile", onnx_path, "-o", lib]
            done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
            if done.returncode != 0:
                result["failed"]["tvm"] = "compile: " + tail(done.stderr + done.stdout)
                continue
            result["compile_s"] = round(time.perf_counter() - start, 1)
            engines["tvm"] = f"tvm:{lib}"
        elif kind == "torch":
            if row.family != "ffn":
                continue  # torch runs the single-layer rows only
            engines["torch"] = f"torch:{onnx_path}"
            if row.pattern is not None:
                engines["torch-csr"] = f"torch-csr:{onnx_path}"
        else:
            engines[kind] = f"{kind}:{onnx_path}"
    want = reference(onnx_path, feeds)
    found = measure(engines, inputs, rounds, runs, warmup, outputs_dir=workdir, keep_going=True)
    result["failed"].update(found.failed)
    result["versions"] = found.versions
    result["notes"] = found.notes
    result["rounds_ms"] = {k: [v * 1e3 for v in vs] for k, vs in found.rounds.items()}
    for label, seconds in found.medians.items():
        result["ms"][label] = seconds * 1e3
        outputs = os.path.join(workdir, f"{label}.npz")
        if os.path.exists(outputs):
            result["error"][label] = rel_error(load_outputs(outputs), want)
            os.remove(outputs)
    return result


def cell(result: dict, column: str) -> tuple[str, float | None, str | None]:
    """The column's text, its time (ms) or None, and the engine label behind it."""
    timed = [(result["ms"][k], k) for k in COLUMNS[column] if k in result["ms"]]
    if not timed:
        failed = [k for k in COLUMNS[column] if k in result["failed"]]
        return ("n/a" if failed else "", None, None)
    ms, label = min(timed)
    text = f"{ms:.2f}" + (" csr" if label == "torch-csr" else "")
    if result["error"].get(label, 0.0) > TOLERANCE:
        text += " !"
    return text, ms, label


def best_peer(result: dict) -> str:
    tvm_ms = result["ms"].get("tvm")
    peers = [(ms, column) for column in COLUMNS if column != "tvm-sparse"
             for _, ms, _ in [cell(result, column)] if ms is not None]  # fmt: skip
    if tvm_ms is None or not peers:
        return ""
    ms, column = min(peers)
    return f"{ms / tvm_ms:.2f} ({column})"


def table(results: list[dict]) -> str:
    columns = [c for c in COLUMNS if any(cell(r, c)[0] for r in results)]
    header = ["workload", *[f"{c} ms" for c in columns], "best peer / tvm-sparse"]
    rows = [[r["label"], *[cell(r, c)[0] for c in columns], best_peer(r)] for r in results]
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]

    def fmt(line):
        return "| " + " | ".join(
            s.ljust(w) if i == 0 else s.rjust(w) for i, (s, w) in enumerate(zip(line, widths))
        ) + " |"  # fmt: skip

    lines = [fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join(lines + [fmt(line) for line in rows])


def notes(results: list[dict]) -> list[str]:
    out, seen = [], set()
    for r in results:
        for label, note in r.get("notes", {}).items():
            out.append(f"{label} on {r['row']}: {note}")
        for label, reason in r["failed"].items():
            key = (label, reason)
            if key not in seen:
                seen.add(key)
                rows = [x["row"] for x in results if x["failed"].get(label) == reason]
                out.append(f"n/a: {label} ({', '.join(rows)}): {reason}")
        for label, error in r["error"].items():
            if error > TOLERANCE:
                out.append(
                    f"!: {label} on {r['row']}: max rel. error {error:.1e} against onnxruntime"
                )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", help=f"comma-separated, from: {', '.join(ROWS)} (default all)")
    parser.add_argument(
        "--engines",
        default=",".join(ENGINES),
        help=f"comma-separated, from: {', '.join(ENGINES)} (torch: single-layer rows only)",
    )
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--runs", type=int)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=engines.THREADS,
        help="threads per engine (default %(default)s)",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"rows {', '.join(QUICK_ROWS)}, 2 rounds of 5 runs"
    )
    parser.add_argument("--json", metavar="OUT", help="write the results here as JSON")
    args = parser.parse_args()
    names = args.rows.split(",") if args.rows else list(QUICK_ROWS if args.quick else ROWS)
    kinds = [k for k in args.engines.split(",") if k]
    for bad, known, what in ((names, ROWS, "row"), (kinds, ENGINES, "engine")):
        unknown = [n for n in bad if n not in known]
        if unknown:
            parser.error(f"unknown {what}(s) {', '.join(unknown)}; known: {', '.join(known)}")
    rounds = args.rounds or (2 if args.quick else 3)
    runs = args.runs or (5 if args.quick else 20)

    engines.set_threads(args.threads)
    load_before = os.getloadavg()
    print(machine(), flush=True)
    print(
        f"load average {load_before[0]:.2f}; {rounds} rounds x {runs} runs (+{args.warmup} warm-up) "
        f"per engine, one process each",
        flush=True,
    )
    if load_before[0] > 0.5:
        print(
            "warning: the machine is busy (load average above 0.5): every engine's thread pool "
            "competes with the load, each slows down differently, and the ratios move with it",
            flush=True,
        )
    results = []
    report = {"machine": machine(), "threads": args.threads, "rounds": rounds, "runs": runs}
    with tempfile.TemporaryDirectory(prefix="peers-") as workdir:
        for name in names:
            start = time.perf_counter()
            result = run_row(name, ROWS[name], kinds, rounds, runs, args.warmup, workdir)
            result["load"] = os.getloadavg()[0]
            results.append(result)
            times = ", ".join(f"{k} {v:.2f}" for k, v in result["ms"].items())
            print(
                f"  {name}: {times} ms; failed: {', '.join(result['failed']) or 'none'} "
                f"(compile {result.get('compile_s', '-')} s, row {time.perf_counter() - start:.0f} s, "
                f"load {result['load']:.2f})",
                flush=True,
            )
            if args.json:
                report["rows"] = results
                with open(args.json, "w") as f:
                    json.dump(report, f, indent=1)
    load_after = os.getloadavg()
    versions = {}
    for r in results:
        versions.update((k, v) for k, v in r["versions"].items() if k != "torch-csr")
    print()
    print(
        f"machine: {machine()}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    print(table(results))
    for line in notes(results):
        print(line)
    if args.json:
        report.update(rows=results, versions=versions, load=[load_before[0], load_after[0]])
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
