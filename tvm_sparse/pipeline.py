"""The host compilation pipeline: the project's Relax passes, then TVM's CPU lowering with the project's
default schedules. :func:`tvm_sparse.build` and the device compile path run it; tests and tutorials run
:func:`graph_passes` to inspect a rewritten graph."""

from __future__ import annotations

import tvm
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
from tvm.s_tir import dlight

from . import progress
from .analysis.slow_path import CountModelFlops, ReportDefaultSchedules
from .fast_math import FastMath
from .prepare import prepare_passes
from .schedule.cpu import default_rules
from .transform import (
    ConvKernels,
    DecomposedConvKernels,
    DenseMatmulKernels,
    PoolKernels,
    ShrinkChannels,
    SoftmaxKernels,
    SparsifyWeights,
)


def graph_passes(
    sparsify: SparsifyWeights | None, fast_math: bool = True
) -> list[tvm.transform.Pass]:
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


def cpu_name(target: tvm.target.Target) -> str:
    """The target's CPU (LLVM's ``mcpu``), for progress lines."""
    return str(target.attrs.get("mcpu", target.kind.name))


def cpu_pipeline(
    target: tvm.target.Target, sparsify: SparsifyWeights | None, fast_math: bool = True
) -> tvm.transform.Pass:
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
            for p in (
                passes
            ):  # one Sequential each: the same opt-level and required-pass rules as one for all
                advance(0, f"Relax pass {p.info.name}")
                mod = tvm.transform.Sequential([p])(mod)
                advance()
        progress.describe(f"compiling for {cpu_name(target)}: TIR lowering, LLVM code generation")
        return mod

    return _pipeline
