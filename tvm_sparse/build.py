"""The compile path: model -> Relax passes -> scheduled TIR -> Relax VM executable."""

from __future__ import annotations

import logging

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
from tvm.s_tir import dlight

from . import progress
from .analysis.slow_path import CountModelFlops, ReportDefaultSchedules
from .errors import TVMSparseError, tvm_rejection
from .fast_math import FastMath
from .frontend import load_model
from .prepare import prepare_passes
from .schedule.choice import schedules_from
from .schedule.cpu import default_rules
from .target import device_of, is_accel_target, resolve_target
from .transform import ConvKernels, DecomposedConvKernels, DenseMatmulKernels, PoolKernels, ShrinkChannels, SoftmaxKernels, SparsifyWeights


def graph_passes(sparsify: SparsifyWeights | None, fast_math: bool = True) -> list[tvm.transform.Pass]:
    """The Relax-level part of the host pipeline, in order (run them to inspect the rewritten graph).

    :func:`prepare_passes`, the sparse rewrite, the dense kernels, then a
    warning for every compute-heavy operator none of them took
    (:mod:`~tvm_sparse.analysis.slow_path`). ``fast_math``
    replaces float32 exp/erf/tanh/softmax by TVM's vectorizable polynomial
    approximations (relative error ~1e-6), and gives softmax over the last axis
    the project's kernel (:class:`~tvm_sparse.transform.SoftmaxKernels`, the
    same exponential); libm's scalar calls are otherwise the slowest part of a
    transformer on the CPU.
    """
    passes = prepare_passes() + [CountModelFlops(), DecomposedConvKernels(), ShrinkChannels()]
    if sparsify is not None:
        passes.append(sparsify)
    passes += [DenseMatmulKernels(), ConvKernels(), PoolKernels()]
    if fast_math:
        passes.append(SoftmaxKernels())  # its exponential is fast_exp's polynomial
    passes.append(ReportDefaultSchedules())
    if fast_math:
        passes.append(FastMath())
    return passes


def _cpu_name(target: tvm.target.Target) -> str:
    """The target's CPU (LLVM's ``mcpu``), for progress lines."""
    return str(target.attrs.get("mcpu", target.kind.name))


def cpu_pipeline(target: tvm.target.Target, sparsify: SparsifyWeights | None, fast_math: bool = True) -> tvm.transform.Pass:
    """The host pipeline: :func:`graph_passes`, TVM's lowering, default schedules."""
    passes = (
        graph_passes(sparsify, fast_math)
        + cpu_generic.library_dispatch_passes(target)
        + cpu_generic.legalize_passes(target)
        + [dlight.ApplyDefaultSchedule(*default_rules())]
        + cpu_generic.dataflow_lower_passes(target)
        + cpu_generic.finalize_passes(target)
    )

    @tvm.transform.module_pass(opt_level=0, name="tvm_sparse.cpu_pipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target, progress.task("Relax passes", total=len(passes)) as advance:
            for p in passes:  # one Sequential each: the same opt-level and required-pass rules as one for all
                advance(0, f"Relax pass {p.info.name}")
                mod = tvm.transform.Sequential([p])(mod)
                advance()
        progress.describe(f"compiling for {_cpu_name(target)}: TIR lowering, LLVM code generation")
        return mod

    return _pipeline


def build(
    model,
    target=None,
    sparsify: bool | SparsifyWeights = True,
    fast_math: bool = True,
    calibration=None,
    tuning_db=None,
    input_shapes=None,
) -> relax.Executable:
    """Compile an ONNX model (path, bytes, ModelProto) or a Relax IRModule.

    Parameters
    ----------
    model
        The model. ONNX weights are kept as constants so that they can be
        analyzed and rewritten.
    target
        ``None``/``"llvm"``/``"host"`` for the host CPU (its real CPU name and
        core count), ``"sparse-accel"`` (or another device variant's name, or
        ``tvm_sparse.accel.target("device.json")``) for the accelerator, or a
        ``tvm.target.Target``.
    sparsify
        ``True`` rewrites layers where the cost model predicts a gain,
        ``False`` compiles everything dense, or pass a configured
        :class:`~tvm_sparse.transform.SparsifyWeights` to force or restrict
        formats.
    fast_math
        Use TVM's polynomial exp/erf/tanh (see :func:`graph_passes`).
    calibration
        ``sparse-accel`` only: input samples for post-training quantization:
        a dict ``{input name: array}`` is one sample (or, with every array one
        leading axis longer than its input, that many stacked samples), a list
        of such dicts is several (see :func:`tvm_sparse.accel.compile`).
    tuning_db
        A directory written by :func:`tvm_sparse.tune`: kernels with a record
        for this target use the tuned schedule, the others their default (the
        build logs which). An unusable database is skipped with a warning.
    input_shapes
        ``{input name: full shape}``: compile for these sizes of the listed
        inputs' symbolic dimensions (a ``ModelError`` names an unknown input,
        a wrong rank or a static dimension given another size). Without it,
        symbolic dimensions stay symbolic: the library runs at any size, on
        the same kernels.

    Returns
    -------
    A Relax executable: run it with ``relax.VirtualMachine(exe, tvm.cpu())["main"]``
    (inputs in the model's order) or save it with ``exe.export_library(path)``.
    """
    tgt = resolve_target(target)
    if tuning_db is not None:
        from .tune import TunedSchedules

        source = TunedSchedules.open(tuning_db, tgt)
        with schedules_from(source):
            exe = build(model, tgt, sparsify, fast_math, calibration, input_shapes=input_shapes)
        logging.getLogger("tvm_sparse").log(logging.WARNING if source.untuned else logging.INFO, source.report())
        return exe
    if is_accel_target(tgt):
        from .accel.compile import build_for_device  # it builds on this module's host pipeline

        return build_for_device(model, device_of(tgt), calibration, fast_math, input_shapes).executable
    loaded = load_model(model, input_shapes)
    if sparsify is True:
        sparsify = SparsifyWeights()
    elif sparsify is False:
        sparsify = None
    try:
        with progress.task(f"compiling for {_cpu_name(tgt)}"):
            return tvm.compile(loaded.mod, target=tgt, relax_pipeline=cpu_pipeline(tgt, sparsify, fast_math))
    except TVMSparseError:
        raise
    except Exception as err:  # TVM rejects what its importer let through (e.g. an inconsistent shape)
        raise tvm_rejection(err, "compile") from err
