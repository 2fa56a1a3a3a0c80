"""Autotuning for the host CPU and ``sparse-accel`` on MetaSchedule.

``tune(model, target, trials, work_dir)`` compiles the model once to find its
kernels (the tasks: :mod:`tvm_sparse.schedule.tasks`), then searches each
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
from dataclasses import dataclass, field

from ..schedule.choice import schedules_from
from .database import DatabaseError, TunedSchedules, open_database
from .search import SearchStats, SharedCostModel, best_recorded, record_default, recorded_trials, search

__all__ = ["DatabaseError", "TaskResult", "TunedSchedules", "extract_tasks", "tune"]


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

    def to_dict(self) -> dict:
        stats = self.stats or SearchStats()
        return {"task": self.description, "recorded_before": self.recorded, "measured": stats.measured, "wrong_discarded": stats.wrong,
                "failed": stats.failed, "default_seconds": self.default_seconds, "best_seconds": self.best_seconds}


@dataclass
class _Progress:
    """One status line per task: tasks done, trials, best time so far."""

    total_tasks: int
    stream: object = field(default_factory=lambda: sys.stderr)
    index: int = 0
    started: float = field(default_factory=time.perf_counter)

    def start(self, index: int, description: str, trials: int, best: float | None = None) -> None:
        self.index, self.description, self.trials, self.best = index, description, trials, best
        self._write(0, best)

    def update(self, stats: SearchStats) -> None:
        done = stats.measured + stats.wrong + stats.failed
        if stats.best is not None and (self.best is None or stats.best_seconds < self.best):
            self.best = stats.best_seconds
        self._write(done, self.best)

    def finish(self, note: str) -> None:
        self.stream.write(("\n" if self.stream.isatty() else "") + f"  {note}\n")
        self.stream.flush()

    def _write(self, done: int, best: float | None) -> None:
        best_text = "-" if best is None else f"{best * 1e3:.4f} ms"
        line = f"[task {self.index + 1}/{self.total_tasks}] {self.description}: trial {done}/{self.trials}, best {best_text}, {time.perf_counter() - self.started:.0f} s"
        tty = self.stream.isatty()
        self.stream.write(("\r" if tty else "") + line + ("" if tty else "\n"))
        self.stream.flush()


def tune(model, target=None, trials: int = 32, work_dir: str = "tvm_sparse_tuning", calibration=None, strategy: str = "xgb",
         seed: int = 0, progress: bool = True, tasks: list | None = None, input_shapes=None) -> list[TaskResult]:
    """Tune every kernel of ``model`` for ``target`` with up to ``trials`` measurements per task.

    ``target`` is what :func:`tvm_sparse.build` takes (the host CPU by
    default, or ``"sparse-accel"``); ``calibration`` is passed to the build
    for device targets, ``input_shapes`` to every build (as in
    :func:`tvm_sparse.build`). Records are committed to the MetaSchedule database in
    ``work_dir`` as they are measured, so Ctrl-C loses at most the batch in
    flight and a second call resumes. ``tasks`` overrides the extracted tasks.
    Returns one :class:`TaskResult` per task.
    """
    from ..target import resolve_target

    if trials < 1:
        raise ValueError(f"trials must be at least 1, got {trials}")
    tgt = resolve_target(target)
    database = open_database(work_dir, create=True)
    tasks = extract_tasks(model, tgt, calibration, input_shapes) if tasks is None else tasks
    bar = _Progress(len(tasks)) if progress else None
    shared = SharedCostModel() if strategy == "xgb" else None  # one cost model learns across the tasks
    results = []
    for index, task in enumerate(tasks):
        recorded = recorded_trials(database, task)
        result = TaskResult(task.describe(), recorded)
        results.append(result)
        if recorded == 0:  # the default schedule is the first record: tuning never makes a kernel slower
            result.default_seconds = record_default(task, tgt, database)
        left = trials - recorded_trials(database, task)
        if left > 0:
            if bar:
                bar.start(index, task.describe(), left, best_recorded(database, task))
            result.stats = search(task, tgt, database, left, work_dir, strategy, seed, on_result=bar.update if bar else None, shared=shared)
        result.best_seconds = best_recorded(database, task)
        if bar:
            if result.stats is None:
                bar.start(index, task.describe(), 0, result.best_seconds)
                bar.finish(f"{recorded} trials already recorded, nothing to measure")
            else:
                best = "-" if result.best_seconds is None else f"{result.best_seconds * 1e3:.4f} ms"
                default = f" (default {result.default_seconds * 1e3:.4f} ms)" if result.default_seconds else ""
                bar.finish(f"best {best}{default}; {result.stats.wrong} wrong and {result.stats.failed} failed candidates discarded")
    return results
