"""The ``tvm-sparse`` command: prune, analyze, compile and run models."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
import warnings
from importlib.metadata import version
from typing import get_args

import numpy as np

from . import progress
from .errors import ModelError, TVMSparseError
from .threads import use_available_cpus
from .tune.search import SearchStrategy


class CLIError(TVMSparseError):
    """A usage problem reported as one line."""


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # either is missing
        return False


def _refuse_input_as_output(path: str, option: str, inputs) -> None:
    for source in filter(None, inputs):
        if _same_file(path, source):
            raise CLIError(
                f"{option} {path} is also an input ({source}): writing it would destroy that input; choose another output"
            )


def _check_output(path: str, option: str, inputs=()) -> None:
    """Fail before any work when the output file ``path`` is one of ``inputs`` or its directory cannot take it."""
    _refuse_input_as_output(path, option, inputs)
    if os.path.isdir(path):
        raise CLIError(f"{option} {path}: is a directory")
    _check_directory(os.path.dirname(os.path.abspath(path)), f"{option} {path}")


def _check_directory(directory: str, what: str) -> None:
    if not os.path.isdir(directory):
        raise CLIError(
            f"{what}: {'not a directory' if os.path.exists(directory) else 'no such directory'}: {directory}"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise CLIError(f"{what}: directory {directory} is not writable")


def _output_directory(path: str, option: str) -> None:
    """Create the output directory ``path`` (and its parents) up front, or fail naming ``option``."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise CLIError(f"{option} {path}: not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise CLIError(f"{option} {path}: cannot create the directory ({err.strerror})") from None
    _check_directory(path, f"{option} {path}")


def _cmd_analyze(args) -> None:
    from .analysis import analyze
    from .frontend import load_model

    if args.figures:
        _output_directory(args.figures, "--figures")
    if args.compression:
        from .compress import compression_report

        if args.input_shape:
            raise CLIError(
                "--input-shape does not apply to --compression (it reports the weights alone)"
            )
        report = compression_report(args.model)
    elif args.input_shape:
        shapes = _parse_input_shapes(args.input_shape, load_model(args.model).mod)
        report = analyze(args.model, min_speedup=args.min_speedup, input_shapes=shapes)
    else:
        report = analyze(args.model, min_speedup=args.min_speedup)
    print(report.dumps() if args.json else report.to_table())
    if args.figures:
        _sparsity_maps(args)


def _sparsity_maps(args) -> None:
    from .figures import sparsity_maps_figure
    from .onnx_weights import weight_matrices

    weights = weight_matrices(args.model)
    if args.layers:
        chosen = args.layers.split(",")
        unknown = [name for name in chosen if name not in weights]
        if unknown:
            raise CLIError(
                f"--layers: no weight-carrying layer named {', '.join(unknown)} (known: {', '.join(weights)})"
            )
    else:  # the largest weights
        chosen = sorted(weights, key=lambda name: -weights[name].size)[:4]
    figure = sparsity_maps_figure(
        {name: weights[name] for name in chosen}, os.path.join(args.figures, "sparsity_maps.png")
    )
    print(f"wrote {figure['path']}", file=sys.stderr if args.json else sys.stdout)


def _cmd_prune(args) -> None:
    import warnings

    import onnx

    from .prune import UnprunedLayer, parse_pattern, prune_onnx

    pattern = parse_pattern(args.pattern)
    if pattern.kind not in ("nm", "decompose") and args.density is None:
        raise CLIError(f"--density is required for pattern {pattern}")
    if pattern.kind == "nm" and args.density is not None:
        raise CLIError(
            f"--density does not apply to {pattern}: N:M keeps N of every M weights, so its density is {pattern.n}/{pattern.m}"
        )
    if pattern.kind == "decompose" and args.density is not None:
        raise CLIError(
            "--density does not apply to decompose patterns: prune the coefficients with coef-density=D in the pattern"
        )
    _check_output(args.output, "-o", [args.model])
    quant = {}
    if args.quant is not None:
        kind, _, value = args.quant.partition(":")
        if kind not in ("codebook", "local") or not value.isdigit():
            raise CLIError(
                f"--quant {args.quant!r}: use codebook:B (B from 1 to 8 bits) or local:B (B from 2 to 16 bits)"
            )
        quant = {f"{kind}_bits": int(value)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnprunedLayer)
        model, layers = prune_onnx(
            args.model, pattern, args.density, balanced_units=args.balanced, **quant
        )
    onnx.save(model, args.output)
    for layer in layers:
        note = f" ({layer.note})" if layer.note else ""
        print(
            f"{layer.name}: {'x'.join(map(str, layer.shape))} density {layer.density_before:.3f} -> {layer.density_after:.3f}{note}"
        )
    for warning in caught:
        print(f"tvm-sparse prune: warning: {warning.message}", file=sys.stderr)
    unpruned = sum(issubclass(w.category, UnprunedLayer) for w in caught)
    left = f"; {unpruned} layer(s) left unpruned, see the warnings" if unpruned else ""
    print(f"wrote {args.output} ({len(layers)} weights pruned to {pattern}{left})")


def _cmd_compile(args) -> None:
    from .build import build
    from .frontend import load_model
    from .library import metadata_path, write_metadata
    from .target import is_accel_target, resolve_target
    from .transform import SparsifyWeights

    for path in (args.output, metadata_path(args.output)):
        _check_output(path, "-o", [args.model, args.device])
    loaded = load_model(args.model)
    target = resolve_target(args.device or args.target)
    shapes = _parse_input_shapes(args.input_shape, loaded.mod)
    if shapes:  # specialised before the graph is folded, so shape computations fold with the sizes
        loaded = load_model(args.model, shapes)
    if args.calibration and not is_accel_target(target):
        raise CLIError("--calibration applies to sparse-accel targets only")
    calibration = (
        _parse_calibration(args.calibration, loaded.input_names) if args.calibration else None
    )
    sparsify = (
        False
        if args.no_sparsify
        else SparsifyWeights(
            format=args.format, block_shape=args.block, shared_weights=args.shared_weights
        )
    )
    start = time.perf_counter()
    result = build(loaded.mod, target, sparsify, calibration=calibration, tuning_db=args.db)
    for report in (result.to_table(), result.tuning_report):
        if report:
            print(report)
    result.export_library(args.output)
    write_metadata(args.output, loaded, result.to_dict(), shapes)
    print(f"wrote {args.output} in {time.perf_counter() - start:.1f}s")


def _cmd_tune(args) -> int:
    from .frontend import load_model
    from .target import resolve_target
    from .tune import RPCSpec, RPCUnavailable, tune

    if args.trials < 1:
        raise CLIError(f"--trials must be at least 1, got {args.trials}")
    if not 1 <= args.rpc_timeout <= 24 * 3600:  # NaN fails this too
        raise CLIError(f"--rpc-timeout must be from 1 to 86400 seconds, got {args.rpc_timeout}")
    rpc = (
        RPCSpec.parse(args.rpc) if args.rpc else None
    )  # a malformed address fails before the model loads
    _check_directory(
        args.db if os.path.exists(args.db) else os.path.dirname(os.path.abspath(args.db)),
        f"--db {args.db}",
    )  # tune creates it
    loaded = load_model(args.model)
    target = resolve_target(args.device or args.target)
    shapes = _parse_input_shapes(args.input_shape, loaded.mod)
    if shapes:
        loaded = load_model(args.model, shapes)
    calibration = (
        _parse_calibration(args.calibration, loaded.input_names) if args.calibration else None
    )
    try:
        results = tune(
            loaded.mod,
            target,
            trials=args.trials,
            work_dir=args.db,
            calibration=calibration,
            strategy=args.strategy,
            seed=args.seed,
            progress=not args.quiet,
            rpc=rpc,
            rpc_timeout=args.rpc_timeout,
        )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: the measurements so far are in {args.db}; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    except RPCUnavailable as err:
        kept = f"; the measurements so far are in {args.db}" if os.path.isdir(args.db) else ""
        print(f"tvm-sparse tune: error: {err}{kept}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=1))
    else:
        skipped = sum(r.skipped is not None for r in results)
        tuned = (
            f"{len(results) - skipped} of {len(results)} task(s) ({skipped} skipped)"
            if skipped
            else f"{len(results)} task(s)"
        )
        print(
            f"tuned {tuned}, {sum(r.new_measurements for r in results)} new measurement(s), records in {args.db}"
        )
    return 0


def _cmd_rpc_server(args) -> int:
    import signal

    from .tune.rpc import serve

    if not 1 <= args.port <= 65535:
        raise CLIError(f"--port must be from 1 to 65535, got {args.port}")
    if not args.key.strip() or ":" in args.key:
        raise CLIError(f"--key {args.key!r}: a key is a non-blank name without ':'")
    server = serve(args.tracker, args.key, args.host, args.port, min(args.port + 100, 65536))
    signal.signal(
        signal.SIGTERM, lambda *_: sys.exit(0)
    )  # so that the server process below is stopped too
    print(
        f"tvm-sparse RPC server on {args.host}:{server.port}, registered with the tracker at {args.tracker} under key {args.key!r}; "
        "Ctrl-C stops it",
        flush=True,
    )
    try:
        while server.proc.is_alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    finally:
        server.terminate()
    raise CLIError("the RPC server process exited")


def _split_assignment(item: str, names, valid) -> tuple[str, str]:
    """``NAME=VALUE`` split after the known input name it starts with (names may hold ``=``, ``:`` or ``/``);
    when several do, the one whose value is ``valid``. Items that start with no known name split at the first ``=``."""
    matches = [n for n in names or () if item.startswith(n + "=")]
    usable = [n for n in matches if valid(item[len(n) + 1 :])]
    if len(usable) > 1:
        raise CLIError(
            f"{item!r} is ambiguous: it could name input {' or '.join(repr(n) for n in usable)}"
        )
    if usable or matches:
        name = (usable or sorted(matches, key=len))[-1]
        return name, item[len(name) + 1 :]
    name, _, value = item.partition("=")
    return name, value


def _input_files(items: list[str], option: str, names=None) -> dict[str, list[str]]:
    """``NAME=FILE.npy`` items as the files given for each name, in order; ``names`` (the model's inputs) lets
    names hold ``=``."""
    files: dict[str, list[str]] = {}
    for item in items:
        name, path = _split_assignment(item, names, os.path.isfile)
        if "=" not in item or not name or not path:
            raise CLIError(f"{option} expects NAME=FILE.npy, got {item!r}")
        files.setdefault(name, []).append(path)
    return files


def _load_array(name: str, path: str) -> np.ndarray:
    """The numeric array in the ``.npy`` file ``path`` given for input ``name``, or a one-line error."""
    try:
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise CLIError(
                    f"input {name}: {path} is not a .npy array file (write one with numpy.save)"
                )
            f.seek(0)
            return np.load(f, allow_pickle=False)
    except OSError as err:
        raise CLIError(f"input {name}: cannot read {path} ({err.strerror or err})") from None
    except ValueError as err:
        reason = "it holds Python objects, not numbers" if "allow_pickle" in str(err) else str(err)
        raise CLIError(f"input {name}: cannot read {path} ({reason})") from None


def _parse_inputs(items: list[str], option: str = "--input", names=None) -> dict[str, np.ndarray]:
    """``NAME=FILE.npy`` items, one per input, as arrays by name; ``names`` (the model's inputs) lets names hold ``=``."""
    files = _input_files(items, option, names)
    for name, paths in files.items():
        if len(paths) > 1:
            raise CLIError(f"{option}: input {name} given twice")
    return {name: _load_array(name, paths[0]) for name, paths in files.items()}


def _parse_calibration(items: list[str], names: list[str]) -> list[dict[str, np.ndarray]]:
    """``--calibration NAME=FILE.npy`` items as calibration samples for :func:`tvm_sparse.accel.compile`: the k-th
    file of every input makes the k-th dict, and a file may hold samples stacked on a leading axis."""
    files = _input_files(items, "--calibration", names)
    unknown = [name for name in files if name not in names]
    if unknown:
        raise CLIError(
            f"--calibration: no input named {', '.join(map(repr, unknown))} (the model's inputs: {', '.join(names)})"
        )
    counts = {name: len(paths) for name, paths in files.items()}
    if len(set(counts.values())) > 1:
        given = ", ".join(f"{name} {count}" for name, count in counts.items())
        raise CLIError(
            f"--calibration: give every input the same number of files (the k-th files make the k-th sample), got {given}"
        )
    return [
        {name: _load_array(name, paths[k]) for name, paths in files.items()}
        for k in range(max(counts.values()))
    ]


def _parse_dims(text: str) -> tuple[int, ...] | None:
    parts = text.split(",")
    return (
        tuple(int(p) for p in parts)
        if all(p.strip().isdigit() and int(p) > 0 for p in parts)
        else None
    )


def _parse_input_shapes(items: list[str] | None, mod) -> dict[str, tuple[int, ...]] | None:
    """``--input-shape NAME=D1,D2,...`` items as ``{name: shape}``, checked against ``mod``'s inputs."""
    from .input_shapes import symbolic_bindings

    if not items:
        return None
    names = [p.name for p in mod["main"].params]
    shapes = {}
    for item in items:
        name, dims = _split_assignment(item, names, lambda value: _parse_dims(value) is not None)
        if "=" not in item or not name or not dims:
            raise CLIError(f"--input-shape expects NAME=D1,D2,... (e.g. x=1,128,768), got {item!r}")
        if _parse_dims(dims) is None:
            raise CLIError(
                f"--input-shape {item}: dimensions must be positive integers separated by commas"
            )
        if name in shapes:
            raise CLIError(f"--input-shape: input {name} given twice")
        shapes[name] = _parse_dims(dims)
    try:
        symbolic_bindings(mod, shapes, "--input-shape")
    except ModelError as err:
        raise CLIError(str(err)) from None
    return shapes


_UNSAFE_FILE_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]")


def _output_files(names: list[str]) -> dict[str, str]:
    """A distinct, portable ``.npy`` file name for each output name.

    Characters other than ASCII letters, digits, ``.``, ``_`` and ``-`` become
    ``_`` (``dense/BiasAdd:0`` -> ``dense_BiasAdd_0.npy``), leading dots are
    dropped, and a name that then collides with an earlier one (ignoring case,
    for case-insensitive file systems) gets ``_1``, ``_2``, ...
    """
    files, taken = {}, set()
    for name in names:
        stem = _UNSAFE_FILE_CHARACTERS.sub("_", name).lstrip(".")[:200] or "output"
        candidate, count = stem, 0
        while candidate.lower() in taken:
            count += 1
            candidate = f"{stem}_{count}"
        taken.add(candidate.lower())
        files[name] = f"{candidate}.npy"
    return files


def _cmd_run(args) -> None:
    from .accel.run_report import model_trace, run_report
    from .accel.runtime import profile
    from .library import load_library
    from .testing import median_seconds

    if args.repeat < 1:
        raise CLIError(f"--repeat must be at least 1, got {args.repeat}")
    lib = load_library(args.library)
    names = [spec["name"] for spec in lib.meta["inputs"]] if lib.meta else None
    feeds = lib.check_inputs(_parse_inputs(args.input or [], "--input", names))
    for directory, option in ((args.output_dir, "--output-dir"), (args.figures, "--figures")):
        if directory:  # before the run
            _output_directory(directory, option)
    if args.trace:  # also before the run, after --figures made its directory
        _check_output(args.trace, "--trace", [args.library])
    with profile() as runs:  # the device layers of this run
        outputs = lib.run(feeds)  # also the warm-up of the timed runs
    device = run_report(runs, lib.meta.get("partition", {}).get("layers", []) if lib.meta else [])
    repeat = args.repeat
    median_ms = median_seconds(lambda: lib.run(feeds), repeat=repeat, warmup=0) * 1e3
    files, failure = {}, None
    for name, file in (_output_files(list(outputs)) if args.output_dir else {}).items():
        path = os.path.join(args.output_dir, file)
        try:
            np.save(path, outputs[name])
        except OSError as err:  # the result is printed first, then this error
            failure = CLIError(
                f"--output-dir: cannot write {path} ({err.strerror or err}); the outputs listed without a file were not saved"
            )
            break
        files[name] = path
    if args.json:
        described = {n: {"shape": list(v.shape), "dtype": str(v.dtype)} for n, v in outputs.items()}
        for name, path in files.items():
            described[name]["file"] = path
        summary = {"median_latency_ms": median_ms, "repeat": repeat, "outputs": described}
        if args.report:
            summary.update(device)  # device, total_cycles, total_energy_pj, layers
        print(json.dumps(summary, indent=2))
    else:
        for name, value in outputs.items():
            print(
                f"{name}: shape {tuple(value.shape)} {value.dtype}"
                + (f" -> {files[name]}" if name in files else "")
            )
        if runs:
            print(
                f"median latency: {median_ms:.3f} ms over {repeat} runs (host wall time of the simulation)"
            )
            print(
                f"simulated device time: {device['total_device_time_ms']:.3f} ms "
                f"({device['total_cycles']} cycles at {device['clock_mhz']:g} MHz, {len(runs)} device layers)"
            )
        else:
            print(f"median latency: {median_ms:.3f} ms over {repeat} runs")
        if args.report:
            print(device.to_table())
    if failure:
        raise failure
    if args.trace:
        if not runs:
            raise CLIError(
                "--trace shows device layers, and this library ran none (compile with --target sparse-accel)"
            )
        with open(args.trace, "w") as f:
            json.dump(model_trace(runs), f)
        print(f"wrote {args.trace}", file=sys.stderr if args.json else sys.stdout)
    if args.figures:
        from .figures import write_run_figures

        if not runs:
            raise CLIError(
                "--figures plots device layers, and this library ran none (compile with --target sparse-accel)"
            )
        for figure in write_run_figures(device, runs[0][2].device, args.figures):
            print(f"wrote {figure['path']}", file=sys.stderr if args.json else sys.stdout)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tvm-sparse",
        description="Prune, analyze, compile and run sparse models (host CPU or sparse-accel).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('tvm-sparse')}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("analyze", help="report the sparsity of each layer and the format chosen")
    p.add_argument("model", help="ONNX model")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--min-speedup",
        type=float,
        default=1.1,
        help="predicted gain needed to pick a sparse format",
    )
    p.add_argument(
        "--compression",
        action="store_true",
        help="report bytes per weight: dense, sparse, quantized, entropy-coded (JSON: compression_ratio)",
    )
    p.add_argument(
        "--figures",
        metavar="DIR",
        help="write DIR/sparsity_maps.png (needs matplotlib: the plot extra)",
    )
    p.add_argument(
        "--layers", help="comma-separated layers for the sparsity maps (default: the four largest)"
    )
    p.add_argument(
        "--input-shape",
        action="append",
        metavar="NAME=D1,D2,...",
        help="give input NAME this shape, setting its symbolic dimensions (repeat per input)",
    )
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser(
        "prune",
        help="prune the Gemm/MatMul/Conv/ConvTranspose/Einsum weights of an ONNX model, or decompose its convolutions",
    )
    p.add_argument("model", help="ONNX model")
    p.add_argument("-o", "--output", required=True, help="pruned ONNX model to write")
    p.add_argument(
        "--pattern",
        required=True,
        help="unstructured, block:RxC (e.g. block:16x1), nm:N:M, or decompose:rank=R[,coef-density=D][,coef-block=RxC][,quant=hybrid]",
    )
    p.add_argument("--density", type=float, help="fraction of weights (or blocks) to keep")
    p.add_argument(
        "--quant",
        metavar="codebook:B|local:B",
        help="codebook:B shares each weight's nonzeros among 2^B values (k-means, B = 1..8); "
        "local:B (block patterns) gives each block B-bit values and its own scale",
    )
    p.add_argument(
        "--balanced",
        type=int,
        nargs="?",
        const=16,
        metavar="UNITS",
        help="unstructured: the same nonzero count for each of UNITS processing units (rows dealt round-robin; default 16)",
    )
    p.set_defaults(func=_cmd_prune)

    p = sub.add_parser("compile", help="compile a model to a shared library")
    p.add_argument("model", help="ONNX model")
    p.add_argument("-o", "--output", required=True, help="library to write (.so)")
    p.add_argument(
        "--target",
        default="llvm",
        help="llvm/host (default: this CPU), or a sparse-accel variant (sparse-accel, sparse-accel-dense, ...)",
    )
    p.add_argument(
        "--device",
        metavar="FILE.json",
        help="compile for the sparse-accel device this file describes",
    )
    p.add_argument(
        "--calibration",
        action="append",
        metavar="NAME=FILE.npy",
        help="sparse-accel: quantization samples of input NAME, one or N stacked on a leading axis "
        "(repeat per input, and per file to add samples)",
    )
    p.add_argument("--no-sparsify", action="store_true", help="compile every layer dense")
    p.add_argument(
        "--format",
        choices=("auto", "bsr", "dense"),
        default="auto",
        help="auto follows the cost model",
    )
    p.add_argument("--block", help="restrict the block shape, e.g. 16x1")
    p.add_argument(
        "--shared-weights",
        action="store_true",
        help="store block-sparse weights with at most 256 distinct values (prune --quant codebook:B) as uint8 indices + codebook",
    )
    p.add_argument(
        "--db",
        metavar="DIR",
        help="use the tuned schedules in this database (written by 'tvm-sparse tune')",
    )
    p.add_argument(
        "--input-shape",
        action="append",
        metavar="NAME=D1,D2,...",
        help="give input NAME this shape, setting its symbolic dimensions (repeat per input)",
    )
    p.set_defaults(func=_cmd_compile)

    p = sub.add_parser(
        "tune",
        help="autotune the model's kernels (MetaSchedule, XGBoost cost model) into a database",
    )
    p.add_argument("model", help="ONNX model")
    p.add_argument(
        "--db", required=True, metavar="DIR", help="tuning database directory (created, or resumed)"
    )
    p.add_argument(
        "--target", default="llvm", help="llvm/host (default: this CPU), or a sparse-accel variant"
    )
    p.add_argument(
        "--device", metavar="FILE.json", help="tune for the sparse-accel device this file describes"
    )
    p.add_argument(
        "--trials",
        type=int,
        default=32,
        help="measurements per task, counting those already recorded",
    )
    p.add_argument(
        "--calibration",
        action="append",
        metavar="NAME=FILE.npy",
        help="sparse-accel: quantization samples of input NAME, one or N stacked on a leading axis "
        "(repeat per input, and per file to add samples)",
    )
    p.add_argument(
        "--strategy",
        choices=get_args(SearchStrategy),
        default="xgb",
        help="evolutionary search with the XGBoost cost model, or random",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print a JSON summary per task")
    p.add_argument(
        "--input-shape",
        action="append",
        metavar="NAME=D1,D2,...",
        help="give input NAME this shape, setting its symbolic dimensions (repeat per input)",
    )
    p.add_argument(
        "--rpc",
        metavar="HOST:PORT:KEY",
        help="measure on the servers of KEY at this TVM RPC tracker (started with 'tvm-sparse rpc-server'), in parallel",
    )
    p.add_argument(
        "--rpc-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="longest wait for one RPC measurement (default 60)",
    )
    p.set_defaults(func=_cmd_tune)

    p = sub.add_parser(
        "rpc-server",
        help="serve measurements for 'tune --rpc' (TVM's RPC server, registered with a tracker)",
    )
    p.add_argument(
        "--tracker",
        required=True,
        metavar="HOST:PORT",
        help="the RPC tracker to register with (python -m tvm.exec.rpc_tracker)",
    )
    p.add_argument(
        "--key",
        required=True,
        help="the device key tuners ask the tracker for (e.g. the CPU model)",
    )
    p.add_argument(
        "--host",
        default="0.0.0.0",
        help="address to listen on (default all; TVM RPC has no authentication: trusted networks only)",
    )
    p.add_argument("--port", type=int, default=9090, help="first port to try (up to 100 above it)")
    p.set_defaults(func=_cmd_rpc_server)

    p = sub.add_parser("run", help="run a compiled library on .npy inputs")
    p.add_argument("library", help="library written by 'tvm-sparse compile'")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="one per model input")
    p.add_argument(
        "--output-dir",
        help="write each output as DIR/<name>.npy (characters unsafe in file names become _)",
    )
    p.add_argument("--repeat", type=int, default=10, help="timed runs (median reported)")
    p.add_argument(
        "--json",
        action="store_true",
        help="print a JSON summary (median_latency_ms: host wall time, of the simulation for sparse-accel)",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="sparse-accel: print the per-layer device report of the first run, with simulated device time",
    )
    p.add_argument(
        "--figures",
        metavar="DIR",
        help="sparse-accel: write DIR/device_layers.png and DIR/roofline.png (needs matplotlib)",
    )
    p.add_argument(
        "--trace",
        metavar="FILE.json",
        help="sparse-accel: write the first run's device timeline, layers in sequence, as a Chrome trace (open in Perfetto)",
    )
    p.set_defaults(func=_cmd_run)
    for command in sub.choices.values():
        command.add_argument(
            "-q",
            "--quiet",
            action="store_true",
            help="no progress lines on stderr (they show only on a terminal)",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``tvm-sparse`` command line ``argv``; returns the exit status (1: a usage or model error,
    3: an internal error, 141: stdout closed early, as by ``| head``). Warnings print as one line each."""
    args = make_parser().parse_args(argv)
    use_available_cpus()  # every CPU for TVM's thread pool unless TVM_NUM_THREADS is set

    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f"tvm-sparse {args.command}: warning: {message}", file=sys.stderr)

    try:
        with (
            warnings.catch_warnings(),
            progress.quiet() if args.quiet else contextlib.nullcontext(),
        ):
            warnings.showwarning = show_warning
            code = args.func(args)
        sys.stdout.flush()  # a closed pipe surfaces here rather than at exit
    except BrokenPipeError:
        os.dup2(
            os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno()
        )  # so the flush at exit succeeds quietly
        return 141
    except (TVMSparseError, OSError) as err:
        print(f"tvm-sparse {args.command}: error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # an internal failure still gets one line, not a traceback
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(
            f"tvm-sparse {args.command}: internal error: {type(err).__name__}: {first}",
            file=sys.stderr,
        )
        return 3
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
