"""Autotuning for the host CPU and ``sparse-accel`` on MetaSchedule.

``tune(model, target, trials, work_dir)`` compiles the model once to find its
kernels (the tasks: :mod:`tvm_sparse.task`), then searches each
task's design space with MetaSchedule's evolutionary search and XGBoost cost
model (one model for the run, so what it learns on one task guides the
next), measuring candidates on the host (wall time) or on the simulator
(cycles over the clock). Records go to a MetaSchedule JSON database in
``work_dir``; ``tvm_sparse.build(..., tuning_db=work_dir)`` uses them.

Tasks with the same shape and weight structure share records. Tuning is
resumable: a task keeps the measurements already in the database and only
measures the trials it still lacks, so an interrupted run picks up where it
stopped.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import get_args

from .. import progress
from ..schedule.choice import schedules_from
from ..schedule.database import DatabaseError, TunedSchedules, open_database
from ..threads import use_available_cpus
from .rpc import RPCMeasurer, RPCSpec, RPCUnavailable
from .search import (
    LocalMeasurer,
    SearchStats,
    SearchStrategy,
    SharedCostModel,
    best_recorded,
    error_text,
    record_default,
    recorded_trials,
    search,
)

__all__ = [
    "DatabaseError",
    "RPCSpec",
    "RPCUnavailable",
    "TaskResult",
    "TunedSchedules",
    "extract_tasks",
    "format_seconds",
    "tune",
]


class _Collector:
    """A schedule source that records every task the compiler asks about and tunes none."""

    def __init__(self):
        self.tasks: dict = {}

    def lookup(self, task):
        self.tasks.setdefault(json.dumps(task.key, sort_keys=True), task)
        return None


def extract_tasks(model, target=None, calibration=None, input_shapes=None) -> list:
    """The distinct tuning tasks of ``model`` on ``target`` (one per kernel shape and weight structure;
    a symbolic size at its hint, :func:`~tvm_sparse.graph.dim_hints`)."""
    from ..build import build

    collector = _Collector()
    with schedules_from(collector):
        build(model, target, calibration=calibration, input_shapes=input_shapes)
    return list(collector.tasks.values())


@dataclass
class TaskResult:
    description: str
    recorded: int  # measurements in the database before this run
    stats: SearchStats | None = None  # this run's search; None when nothing was left to measure
    default_seconds: float | None = None  # measured when the task was new to the database
    best_seconds: float | None = None  # the best record after this run (the one a build applies)
    skipped: str | None = (
        None  # why the task was not tuned (its default schedule failed to measure)
    )

    @property
    def new_measurements(self) -> int:
        """Measurements this run added to the database (the default's included)."""
        return (self.stats.measured if self.stats else 0) + (self.default_seconds is not None)

    def to_dict(self) -> dict:
        stats = self.stats or SearchStats()
        return {
            "task": self.description,
            "recorded_before": self.recorded,
            "measured": stats.measured,
            "new_measurements": self.new_measurements,
            "wrong_discarded": stats.wrong,
            "failed": stats.failed,
            "default_seconds": self.default_seconds,
            "best_seconds": self.best_seconds,
            "skipped": self.skipped,
        }


def format_seconds(seconds: float | None) -> str:
    """``seconds`` in the unit that shows it best: ``"12.3 us"``, ``"4.56 ms"``, ``"1.23 s"`` (``"-"`` for None)."""
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


@dataclass
class _Progress:
    """Tuning progress on stderr: a live ``trial k/N`` line per task (the task's trials, recorded ones
    included, and the best time so far; on a terminal only, as :mod:`tvm_sparse.progress`), and one result
    line per task when it ends."""

    total_tasks: int
    started: float = field(default_factory=time.perf_counter)

    def start(
        self, index: int, description: str, trials: int, recorded: int, best: float | None
    ) -> None:
        self.index, self.description, self.trials, self.recorded, self.best = (
            index,
            description,
            trials,
            recorded,
            best,
        )
        self._live(f"trial {recorded}/{trials}" if recorded else "measuring the default schedule")

    def default_measured(self, seconds: float) -> None:
        self.recorded, self.best = 1, seconds
        self._live(f"trial 1/{self.trials}")

    def update(self, stats: SearchStats) -> None:
        if stats.best is not None and (self.best is None or stats.best_seconds < self.best):
            self.best = stats.best_seconds
        self._live(f"trial {self.recorded + stats.done}/{self.trials}")

    def finish(self, note: str) -> None:
        self._write(f"{self._prefix()}: {note}", live=False)

    def _prefix(self) -> str:
        return f"[task {self.index + 1}/{self.total_tasks}] {self.description}"

    def _live(self, state: str) -> None:
        if progress.shown():
            self._write(
                f"{self._prefix()}: {state}, best {format_seconds(self.best)}, {time.perf_counter() - self.started:.0f} s",
                live=True,
            )

    @staticmethod
    def _write(line: str, live: bool) -> None:
        tty = sys.stderr.isatty()
        sys.stderr.write(("\r\033[K" if tty else "") + line + ("" if live and tty else "\n"))
        sys.stderr.flush()


def tune(
    model,
    target=None,
    trials: int = 32,
    work_dir: str = "tvm_sparse_tuning",
    calibration=None,
    strategy: SearchStrategy = "xgb",
    seed: int = 0,
    progress: bool = True,
    tasks: list | None = None,
    input_shapes=None,
    rpc: str | RPCSpec | None = None,
    rpc_timeout: float = 60.0,
) -> list[TaskResult]:
    """Tune every kernel of ``model`` for ``target`` with MetaSchedule's evolutionary search.

    Records are committed to the MetaSchedule database in ``work_dir`` as they are measured (each
    measurement's host in ``measurements.jsonl``), so an interruption loses at most the batch in
    flight and a second call resumes. A candidate that fails to build, run or check is counted as
    failed; a task whose default schedule cannot be measured is skipped with a warning.

    Parameters
    ----------
    model
        What :func:`tvm_sparse.build` takes.
    target
        What :func:`tvm_sparse.build` takes: the host CPU by default, or ``"sparse-accel"``.
    trials
        Measurements per task, at most (recorded ones count on a second call).
    work_dir
        The database directory (created if missing).
    calibration, input_shapes
        Passed to every build, as in :func:`tvm_sparse.build`.
    strategy
        ``"xgb"`` (XGBoost cost model, one shared across tasks of a kind) or ``"random"``.
    seed
        The search's random seed.
    progress
        Print progress lines (on a terminal: live ones).
    tasks
        Tune these tasks instead of the model's (from :func:`extract_tasks`).
    rpc
        ``"HOST:PORT:KEY"``: measure on the servers of that key at that RPC tracker
        (:mod:`tvm_sparse.tune.rpc`), in parallel over them; without it, on this host.
    rpc_timeout
        Seconds at most per remote measurement.

    Returns
    -------
    list[TaskResult]
        One per task: its best time (seconds), the default's, trials and failures.

    Raises
    ------
    RPCUnavailable
        The tracker or its servers cannot measure (about one ``rpc_timeout`` after the fault).
    KeyboardInterrupt
        On Ctrl-C; the records so far are kept.
    """
    from ..target import resolve_target

    if trials < 1:
        raise ValueError(f"trials must be at least 1, got {trials}")
    if strategy not in get_args(SearchStrategy):
        raise ValueError(
            f"unknown search strategy {strategy!r} (one of {', '.join(get_args(SearchStrategy))})"
        )
    tgt = resolve_target(target)
    use_available_cpus()  # every CPU for TVM's thread pool unless TVM_NUM_THREADS is set
    measurer = (
        RPCMeasurer(RPCSpec.parse(rpc) if isinstance(rpc, str) else rpc, tgt, rpc_timeout)
        if rpc
        else LocalMeasurer(tgt)
    )
    try:
        database = open_database(work_dir, create=True)
        tasks = extract_tasks(model, tgt, calibration, input_shapes) if tasks is None else tasks
        bar = _Progress(len(tasks)) if progress else None
        shared = (
            SharedCostModel() if strategy == "xgb" else None
        )  # one cost model learns across the tasks
        results = []
        for index, task in enumerate(
            tasks
        ):  # a loop, not a comprehension: the warnings' stack level points at the caller
            results.append(
                _tune_task(
                    index,
                    task,
                    tgt,
                    database,
                    trials,
                    work_dir,
                    strategy,
                    seed,
                    measurer,
                    shared,
                    bar,
                )
            )
        return results
    finally:
        measurer.close()


def _tune_task(
    index, task, target, database, trials, work_dir, strategy, seed, measurer, shared, bar
) -> TaskResult:
    recorded = recorded_trials(database, task)
    result = TaskResult(task.describe(), recorded)
    if bar:
        bar.start(index, task.describe(), trials, recorded, best_recorded(database, task))
    if (
        recorded == 0
    ):  # the default schedule is the first record: tuning never makes a kernel slower
        try:
            result.default_seconds = record_default(task, target, database, work_dir, measurer)
        except (RPCUnavailable, KeyboardInterrupt):
            raise
        except Exception as err:  # noqa: BLE001 - one task whose reference or default fails must not end the run
            result.skipped = f"its default schedule failed: {error_text(err)}"
            if bar:
                bar.finish("skipped")
            warnings.warn(f"skipping tuning task {task.describe()}: {result.skipped}", stacklevel=3)
            return result
        if bar:
            bar.default_measured(result.default_seconds)
    left = trials - recorded_trials(database, task)
    if left > 0:
        result.stats = search(
            task,
            target,
            database,
            left,
            work_dir,
            strategy,
            seed,
            on_result=bar.update if bar else None,
            shared=shared,
            measurer=measurer,
        )
    result.best_seconds = best_recorded(database, task)
    stats = result.stats
    if stats is not None and stats.measured == 0 and stats.failed:
        warnings.warn(
            f"tuning task {task.describe()}: all {stats.failed} candidates failed (first: {stats.first_error})",
            stacklevel=3,
        )
    if bar:
        if result.new_measurements == 0:
            bar.finish(
                f"{recorded} trials already recorded, nothing to measure; best {format_seconds(result.best_seconds)}"
            )
        else:
            default = (
                f" (default {format_seconds(result.default_seconds)})"
                if result.default_seconds
                else ""
            )
            discarded = (
                f"; {stats.wrong} wrong and {stats.failed} failed candidates discarded"
                if stats
                else ""
            )
            first = f" (first failure: {stats.first_error})" if stats and stats.first_error else ""
            bar.finish(f"best {format_seconds(result.best_seconds)}{default}{discarded}{first}")
    return result
