"""MetaSchedule search over a task's design space (any :class:`~tvm_sparse.task.TuningTask`).

MetaSchedule supplies the search (evolutionary with its XGBoost cost model,
or random replay), the database and the task loop. This module supplies what
it lacks for kernels it cannot schedule itself:

* a builder and a runner that measure a candidate with its task (the
  generated kernel's wall time, or the simulator's cycles over the device
  clock), on this host or on RPC servers (:mod:`.rpc`), recording wrong
  results and failing candidates as failures that never reach the database;
* a postprocessor that rejects knobs the task's ``check`` refuses (device
  tilings that do not fit the buffers) before they are measured;
* a feature extractor over each task's knobs and what they imply (CPU:
  accumulator registers, parallel work items, tail rows of the generated
  kernel, whose loops MetaSchedule never sees; device: the tile as fractions
  of the layer, buffer occupancy, the roofline estimate of cycles and traffic
  against the layer's ideal), for the XGBoost cost model (one model can serve
  several tasks: :class:`SharedCostModel`). (MetaSchedule's per-store features of the tiled device TIR
  cannot see double buffering, an annotation, nor the buffer sizes.)
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import tvm
from tvm import s_tir
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule import _ffi_api as ms_ffi
from tvm.s_tir.meta_schedule.logging import get_logging_func

from ..task import TASK_ATTR, TuningTask, WrongResult
from .rpc import RPCUnavailable, last_line

#: The search strategies: evolutionary search with the XGBoost cost model, or random replay.
SearchStrategy = Literal["xgb", "random"]


@contextlib.contextmanager
def _meta_schedule_log_at_warning() -> Iterator[None]:
    """MetaSchedule's per-trial INFO lines off while a search runs (unless the user set that logger's
    level)."""
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    previous = logger.level
    if previous == logging.NOTSET:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(previous)


@dataclass
class SearchStats:
    """What one search measured."""

    measured: int = 0
    wrong: int = 0  # candidates whose output was wrong: discarded
    failed: int = (
        0  # candidates that did not build or run (e.g. a weight tile too large for a buffer)
    )
    best_seconds: float = float("inf")
    best: object = None
    history: list = field(default_factory=list)  # seconds of each measured candidate, in order
    first_error: str | None = None  # why the first failed candidate failed

    @property
    def done(self) -> int:
        return self.measured + self.wrong + self.failed


MEASUREMENT_LOG = "measurements.jsonl"


def log_measurement(work_dir: str, task, knobs, seconds: float, host: str) -> None:
    """Append one measurement (task, decision, seconds, host) to ``work_dir``'s :data:`MEASUREMENT_LOG`,
    beside MetaSchedule's records (whose format has no place for the host)."""
    line = {
        "task": task.describe(),
        "knobs": str(knobs),
        "seconds": seconds,
        "host": host,
        "time": time.time(),
    }
    with open(os.path.join(work_dir, MEASUREMENT_LOG), "a") as log:
        log.write(json.dumps(line) + "\n")


class _Measured:
    """A measurement already finished (on this host, or failed before it was sent)."""

    def __init__(self, value=None, error: Exception | None = None):
        self.value, self.error = value, error

    def done(self) -> bool:
        return True

    def result(self) -> tuple[float, str]:
        if self.error is not None:
            raise self.error
        return self.value


class LocalMeasurer:
    """Measures candidates on this host, one at a time (wall time, or the simulator's cycles)."""

    host = f"{socket.gethostname()} (local)"

    def __init__(self, target: tvm.target.Target):
        self.target = target

    def submit(self, candidate) -> _Measured:
        try:
            return _Measured((candidate.measure(self.target), self.host))
        except Exception as err:  # noqa: BLE001 - a failing candidate is counted, never fatal
            return _Measured(error=err)

    def close(self) -> None:
        pass


def _make_builder(task, artifacts: dict):
    numbers = itertools.count()

    @derived_object
    class KnobBuilder(ms.builder.PyBuilder):
        """Decodes each candidate's knobs; the runner generates, checks and measures the kernel."""

        def build(self, build_inputs):
            results = []
            for inp in build_inputs:
                key = f"candidate-{next(numbers)}"
                artifacts[key] = task.decode(s_tir.Schedule(inp.mod))
                results.append(ms.builder.BuilderResult(key, None))
            return results

    return KnobBuilder()


def error_text(err: BaseException) -> str:
    """``"Type: message"`` on one line (the last line of a multi-line message, which a pool worker's
    traceback or TVM's error ends with), without repeating the type when the message starts with it."""
    name = type(err).__name__
    if not str(err).strip():
        return name
    last = last_line(err)
    named = (
        last.split(":", 1)[0].rsplit(".", 1)[-1] == name
    )  # "Type: ..." or "package.module.Type: ..."
    return f"{name}: {last.split(':', 1)[1].strip()}" if named else f"{name}: {last}"


@contextlib.contextmanager
def _ctrl_c_flag() -> Iterator[threading.Event]:
    """Ctrl-C sets the returned flag instead of raising: a KeyboardInterrupt raised in one of the Python
    callbacks of MetaSchedule's C++ loop (cost model, search strategy) comes out as a bare RuntimeError.
    The runner acts on the flag; a second Ctrl-C raises at once."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class _Runner:
    """Sends each candidate to the measurer and counts what comes back. A failing candidate is counted
    (``stats.failed``) and the search goes on; servers that are gone, or Ctrl-C (``interrupted``), stop
    it (kept in ``stop``: an exception raised through MetaSchedule's C++ loop loses its type)."""

    def __init__(
        self,
        task,
        measurer,
        artifacts: dict,
        stats: SearchStats,
        work_dir: str,
        on_result: Callable | None,
        interrupted: threading.Event,
    ):
        self.task, self.measurer, self.artifacts, self.stats = task, measurer, artifacts, stats
        self.work_dir, self.on_result, self.interrupted = work_dir, on_result, interrupted
        self.stop: BaseException | None = None

    def check_interrupt(self) -> None:
        if self.interrupted.is_set():
            self.stop = KeyboardInterrupt()
            raise self.stop

    def submit(self, artifact: str):
        self.check_interrupt()
        knobs = self.artifacts.pop(artifact)
        try:
            return knobs, self.measurer.submit(self.task.candidate(knobs))
        except Exception as err:  # noqa: BLE001 - generating or building the candidate failed
            return knobs, _Measured(error=err)

    def finish(self, knobs, pending) -> ms.runner.RunnerResult:
        self.check_interrupt()
        stats = self.stats
        try:
            seconds, host = pending.result()
        except WrongResult as err:
            stats.wrong += 1
            result = ms.runner.RunnerResult(None, f"wrong result: {err}")
        except RPCUnavailable as err:
            self.stop = err
            raise
        except Exception as err:  # noqa: BLE001 - a failing candidate is counted, never fatal
            stats.failed += 1
            stats.first_error = stats.first_error or error_text(err)
            result = ms.runner.RunnerResult(None, error_text(err))
        else:
            stats.measured += 1
            stats.history.append(seconds)
            if seconds < stats.best_seconds:
                stats.best_seconds, stats.best = seconds, knobs
            log_measurement(self.work_dir, self.task, knobs, seconds, host)
            result = ms.runner.RunnerResult([seconds], None)
        if self.on_result is not None:
            self.on_result(stats)
        return result


class _Future(ms.runner.PyRunnerFuture):
    def __init__(self, runner: _Runner, knobs, pending):
        super().__init__()
        self._runner, self._knobs, self._pending, self._result = runner, knobs, pending, None

    def done(self) -> bool:
        return self._pending.done()

    def result(self) -> ms.runner.RunnerResult:
        if self._result is None:
            self._result = self._runner.finish(self._knobs, self._pending)
        return self._result


_RunnerFuture = derived_object(_Future)


def _make_runner(runner: _Runner):
    @derived_object
    class TaskRunner(ms.runner.PyRunner):
        """Measures candidates with the task's check: on this host or on RPC servers (:mod:`.rpc`)."""

        def run(self, runner_inputs):
            return [
                _RunnerFuture(runner, *runner.submit(str(inp.artifact_path)))
                for inp in runner_inputs
            ]

    return TaskRunner()


def _make_recorder(task, target: tvm.target.Target, database: ms.database.Database):
    @derived_object
    class AddMeasuredToDatabase(ms.measure_callback.PyMeasureCallback):
        """MetaSchedule's ``AddToDatabase`` for measured candidates only: it would commit a failed or wrong
        candidate too, with a run time of 1e10 s."""

        def apply(
            self, task_scheduler, task_id, measure_candidates, builder_results, runner_results
        ) -> None:
            func = task.workload()
            workload = database.commit_workload(tvm.IRModule({"main": func}))
            for candidate, result in zip(measure_candidates, runner_results):
                if result.error_msg is None and result.run_secs:
                    database.commit_tuning_record(
                        ms.database.TuningRecord(
                            candidate.sch.trace,
                            workload,
                            list(result.run_secs),
                            target,
                            candidate.args_info,
                        )
                    )

    return AddMeasuredToDatabase()


def _make_check(task: TuningTask):
    @derived_object
    class PassesTheTaskCheck(ms.postproc.PyPostproc):
        """Rejects knobs the task cannot run (``task.check``: e.g. tilings that do not fit the
        device's buffers), before they are measured."""

        def _initialize_with_tune_context(self, context) -> None:
            pass

        def apply(self, sch) -> bool:
            return task.check(task.decode(sch)) is None

        def clone(self):
            return _make_check(task)

    return PassesTheTaskCheck()


def _make_knob_features(tasks: dict):
    @derived_object
    class KnobFeatures(ms.feature_extractor.PyFeatureExtractor):
        """Features of a candidate: its knobs and what they imply (``task.features`` of the context's task)."""

        def extract_from(self, context, candidates):
            task = tasks[str(context.mod["main"].attrs[TASK_ATTR])]
            return [
                tvm.runtime.tensor(np.array([task.features(task.decode(c.sch))], dtype="float32"))
                for c in candidates
            ]

    return KnobFeatures()


class SharedCostModel:
    """MetaSchedule's XGBoost cost model over the tasks' own features, shared by the searches of several
    tasks: what it learns on one layer carries to the next (the device features are scale-free), as
    MetaSchedule shares one model across the tasks of a tuning run."""

    def __init__(self, trials_per_round: int = 8):
        self.tasks: dict = {}  # task key (the workload's TASK_ATTR) -> task
        self.model = ms.cost_model.XGBModel(
            extractor=_make_knob_features(self.tasks),
            num_warmup_samples=trials_per_round,
            verbose_eval=1 << 30,
            adaptive_training=False,
            num_tuning_cores=1,
        )

    def register(self, task) -> None:
        self.tasks[str(task.workload().attrs[TASK_ATTR])] = task


def _samples_tiles(task: TuningTask) -> bool:
    """Whether the task's design space samples tile sizes (``SamplePerfectTile``), the only
    decisions MetaSchedule mutates in these spaces (``MutateTileSize``)."""
    spaces = task.design_space(s_tir.Schedule(task.workload()))
    return any(inst.kind.name == "SamplePerfectTile" for s in spaces for inst in s.trace.insts)


def _space(task: TuningTask) -> ms.space_generator.ScheduleFn:
    mutators = {ms.mutator.MutateTileSize(): 1.0} if _samples_tiles(task) else {}
    return ms.space_generator.ScheduleFn(
        task.design_space, sch_rules=[], postprocs=[_make_check(task)], mutator_probs=mutators
    )


def _tune_context(
    task: TuningTask, target: tvm.target.Target, strategy, seed: int
) -> ms.TuneContext:
    """The tuning context of ``task``: what ``ms.TuneContext(mod, target=target,
    space_generator=_space(task), search_strategy=strategy, task_name=task.key["kernel"],
    rand_state=seed, num_threads=1, logger=...)`` makes, built with the constructor's own two FFI
    calls but without its unconditional first line, ``import tvm.s_tir.tensor_intrin``.

    That import parses every built-in tensor intrinsic (CUDA, ARM, Hexagon, ...), none of which
    these spaces use. Measured with TVM 0.27 on the project's 2-core machine: the import alone
    48 s; the first public construction, with explicit space-generator and search-strategy
    objects, 72-92 s (later ones 0.04 s); this function 0.08-0.16 s. Explicit objects do not avoid
    the import, which precedes any use of the arguments. This is the package's only use of
    MetaSchedule's private API (``_ffi_api``); drop it when the public constructor no longer
    imports the intrinsics.
    """
    context = ms.TuneContext.__new__(ms.TuneContext)
    context.__init_handle_by_constructor__(
        ms_ffi.TuneContext,
        tvm.IRModule({"main": task.workload()}),
        target,
        _space(task),
        strategy,
        task.key["kernel"],
        1,
        seed,
        get_logging_func(logging.getLogger("tvm.s_tir.meta_schedule")),
    )
    ms_ffi.TuneContextInitialize(context)
    return context.clone()


def recorded_trials(database: ms.database.Database, task) -> int:
    """How many measurements of ``task``'s workload the database holds."""
    mod = tvm.IRModule({"main": task.workload()})
    if not database.has_workload(mod):
        return 0
    return len(database.get_top_k(database.commit_workload(mod), 1 << 30))


def best_recorded(database: ms.database.Database, task) -> float | None:
    """The fastest measurement of ``task``'s workload in the database (seconds)."""
    mod = tvm.IRModule({"main": task.workload()})
    if not database.has_workload(mod):
        return None
    top = database.get_top_k(database.commit_workload(mod), 1)
    return float(np.mean([float(t) for t in top[0].run_secs])) if top else None


def record_default(
    task, target: tvm.target.Target, database: ms.database.Database, work_dir: str, measurer=None
) -> float:
    """Measure the task's default schedule (with ``measurer``, default this host) and commit it as a
    record, so that a tuned build never picks a schedule slower than the default. Returns its seconds;
    raises what the measurement raised (:class:`WrongResult` when the default computes a wrong result)."""
    knobs = task.default()
    seconds, host = (measurer or LocalMeasurer(target)).submit(task.candidate(knobs)).result()
    log_measurement(work_dir, task, knobs, seconds, host)
    trace = task.trace(knobs)
    if trace is not None:
        func = task.workload()
        workload = database.commit_workload(tvm.IRModule({"main": func}))
        args = ms.arg_info.ArgInfo.from_prim_func(func)
        database.commit_tuning_record(
            ms.database.TuningRecord(trace, workload, [seconds], target, args)
        )
    return seconds


def search(
    task,
    target: tvm.target.Target,
    database: ms.database.Database,
    trials: int,
    work_dir: str,
    strategy: str = "xgb",
    seed: int = 0,
    trials_per_round: int = 8,
    on_result: Callable[[SearchStats], None] | None = None,
    shared: SharedCostModel | None = None,
    measurer=None,
) -> SearchStats:
    """Measure up to ``trials`` candidates of ``task`` and commit them to ``database``.

    ``strategy`` is ``"xgb"`` (MetaSchedule's evolutionary search guided by
    its XGBoost cost model; ``shared``: a model already trained on other
    tasks, which this search goes on training) or ``"random"`` (random replay
    of the design space, the baseline). ``measurer``: where candidates are
    measured (:class:`LocalMeasurer` by default, or
    :class:`~tvm_sparse.tune.rpc.RPCMeasurer`). ``on_result`` is called after
    each measurement. A candidate that fails to build, run or check is
    counted and the search goes on; raises
    :class:`~tvm_sparse.tune.rpc.RPCUnavailable` when the RPC servers are
    gone and ``KeyboardInterrupt`` on Ctrl-C, the measurements so far committed.
    """
    stats = SearchStats()
    artifacts: dict = {}
    if strategy == "xgb":
        search_strategy = ms.search_strategy.EvolutionarySearch(
            population_size=128, init_min_unmeasured=32, genetic_num_iters=2
        )
        shared = shared or SharedCostModel(trials_per_round)
        shared.register(task)
        cost_model = shared.model
    elif strategy == "random":
        search_strategy, cost_model = ms.search_strategy.ReplayTrace(), ms.cost_model.RandomModel()
    else:
        raise ValueError(
            f"unknown search strategy {strategy!r} (one of {', '.join(get_args(SearchStrategy))})"
        )
    with _meta_schedule_log_at_warning(), _ctrl_c_flag() as interrupted:
        context = _tune_context(task, target, search_strategy, seed)
        runner = _Runner(
            task,
            measurer or LocalMeasurer(target),
            artifacts,
            stats,
            work_dir,
            on_result,
            interrupted,
        )
        try:
            ms.tune.tune_tasks(
                tasks=[context],
                task_weights=[1.0],
                work_dir=work_dir,
                max_trials_global=trials,
                num_trials_per_iter=trials_per_round,
                builder=_make_builder(task, artifacts),
                runner=_make_runner(runner),
                database=database,
                cost_model=cost_model,
                measure_callbacks=[
                    _make_recorder(task, target, database),
                    ms.measure_callback.UpdateCostModel(),
                ],
                task_scheduler="round-robin",
            )
        except BaseException:
            if (
                runner.stop is not None
            ):  # what stopped the runner, with its type (the C++ loop re-raises a RuntimeError)
                raise runner.stop from None
            raise
        runner.check_interrupt()  # a Ctrl-C during the last round
    return stats
