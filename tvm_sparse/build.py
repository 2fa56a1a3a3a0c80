"""The compile path: model -> Relax passes -> scheduled TIR -> Relax VM executable."""

from __future__ import annotations

import logging

import tvm

from . import progress
from .accel.compile import build_for_device
from .errors import TVMSparseError, tvm_rejection
from .frontend import load_model
from .pipeline import cpu_name, cpu_pipeline
from .result import BuildResult
from .schedule.choice import schedules_from
from .target import device_of, is_accel_target, resolve_target
from .threads import use_available_cpus
from .transform import SparsifyWeights


def build(
    model,
    target=None,
    sparsify: bool | SparsifyWeights = True,
    fast_math: bool = True,
    calibration=None,
    tuning_db=None,
    input_shapes=None,
) -> BuildResult:
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
        Use TVM's polynomial exp/erf/tanh (see :func:`~tvm_sparse.pipeline.graph_passes`).
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
    BuildResult
        The Relax VM executable: run it with ``relax.VirtualMachine(exe, tvm.cpu())["main"]``
        (inputs in the model's order) or save it with ``exe.export_library(path)``. It also carries
        the partition of a ``sparse-accel`` build (``placements``, ``to_table()``, ``to_dict()``) and,
        with ``tuning_db``, the tuning report (``tuning_report``).

    Raises
    ------
    ModelError
        The model cannot be read, imported or compiled (one line naming the node or problem).
    TVMSparseError
        An unknown or unsupported target, or ``calibration`` for the host CPU.
    """
    use_available_cpus()  # TVM's thread pool on every CPU unless TVM_NUM_THREADS is set
    tgt = resolve_target(target)
    if tuning_db is not None:
        from .schedule.database import TunedSchedules

        source = TunedSchedules.open(tuning_db, tgt)
        with schedules_from(source):
            result = build(model, tgt, sparsify, fast_math, calibration, input_shapes=input_shapes)
        result.tuning_report = source.report()
        logging.getLogger("tvm_sparse").log(
            logging.WARNING if source.untuned else logging.INFO, result.tuning_report
        )
        return result
    if is_accel_target(tgt):
        return build_for_device(model, device_of(tgt), calibration, fast_math, input_shapes)
    if calibration is not None:
        raise TVMSparseError("calibration applies to sparse-accel targets only")
    loaded = load_model(model, input_shapes)
    if sparsify is True:
        sparsify = SparsifyWeights()
    elif sparsify is False:
        sparsify = None
    try:
        with progress.task(f"compiling for {cpu_name(tgt)}"):
            exe = tvm.compile(
                loaded.mod, target=tgt, relax_pipeline=cpu_pipeline(tgt, sparsify, fast_math)
            )
    except TVMSparseError:
        raise
    except (
        Exception
    ) as err:  # TVM rejects what its importer let through (e.g. an inconsistent shape)
        raise tvm_rejection(err, "compile") from err
    return BuildResult(exe, tgt)
