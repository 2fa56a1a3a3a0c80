"""Tuning databases: MetaSchedule JSON databases in a directory, checked before they are used.

A database directory holds MetaSchedule's ``database_workload.json`` and
``database_tuning_record.json`` plus ``tvm_sparse.json``, which says which
TVM wrote it. A build uses a database's records only when they can be
trusted: a directory that is unreadable, corrupt or written by another TVM
version is skipped with a warning, and so is each record measured for
another CPU or device. Kernels without a usable record get their default
schedule, and the build says which.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import tvm
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms

from ..errors import TVMSparseError
from ..task import TuningTask

META_FILE = "tvm_sparse.json"
logger = logging.getLogger("tvm_sparse")


class DatabaseError(TVMSparseError):
    """A tuning database that cannot be used."""


def _meta() -> dict:
    return {"format": 1, "tvm": tvm.__version__}


def target_identity(target: tvm.target.Target) -> dict:
    """What must match for a record to apply: the CPU, and the device for ``sparse-accel`` targets."""
    return {"mcpu": str(target.attrs.get("mcpu", "")), "keys": sorted(str(k) for k in target.keys)}


def open_database(work_dir, create: bool = False) -> ms.database.JSONDatabase:
    """The database in ``work_dir`` (created when ``create``); raises :class:`DatabaseError` naming what is
    wrong with an existing one."""
    path = Path(work_dir)
    meta_path = path / META_FILE
    if not path.is_dir() or not meta_path.exists():
        if not create:
            raise DatabaseError(
                f"{path}: not a tuning database (no {META_FILE}; create one with `tvm-sparse tune`)"
            )
        path.mkdir(parents=True, exist_ok=True)
        meta_path.write_text(json.dumps(_meta()))
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as err:
        raise DatabaseError(f"{meta_path}: unreadable ({err})") from None
    if not isinstance(meta, dict) or meta.get("tvm") != tvm.__version__:
        found = meta.get("tvm") if isinstance(meta, dict) else meta
        raise DatabaseError(
            f"{path}: written by TVM {found}, this is TVM {tvm.__version__} (records are not portable across versions)"
        )
    try:
        return ms.database.JSONDatabase(work_dir=str(path), allow_missing=True)
    except Exception as err:  # MetaSchedule raises TVMError/ValueError on malformed JSON lines
        raise DatabaseError(
            f"{path}: corrupt tuning database ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from None


class TunedSchedules:
    """A build's schedule source (:mod:`tvm_sparse.schedule.choice`): the best record of each task."""

    def __init__(self, database: ms.database.Database | None, target: tvm.target.Target):
        self.database = database
        self.identity = target_identity(target)
        self.applied: list[str] = []
        self.untuned: list[str] = []

    @staticmethod
    def open(work_dir, target: tvm.target.Target) -> TunedSchedules:
        """The records in ``work_dir``; an unusable database gives a warning and no records."""
        try:
            database = open_database(work_dir)
        except DatabaseError as err:
            warnings.warn(f"ignoring tuning database: {err}", stacklevel=3)
            database = None
        return TunedSchedules(database, target)

    def lookup(self, task: TuningTask):
        """The knobs of ``task``'s fastest record measured for this target that replays and passes
        ``task.check`` (None if none does)."""
        knobs = self._best(task)
        (self.untuned if knobs is None else self.applied).append(task.describe())
        return knobs

    def _best(self, task: TuningTask):
        if self.database is None:
            return None
        mod = tvm.IRModule({"main": task.workload()})
        if not self.database.has_workload(mod):
            return None
        for record in self.database.get_top_k(self.database.commit_workload(mod), 16):
            if record.target is None or target_identity(record.target) != self.identity:
                continue
            sch = s_tir.Schedule(mod)
            try:
                record.trace.apply_to_schedule(sch, remove_postproc=False)
                knobs = task.decode(sch)
            except (
                Exception
            ) as err:  # a record that does not replay on this workload is not applied
                logger.warning(
                    "skipping a tuning record of %s that does not replay: %s", task.describe(), err
                )
                continue
            if task.check(knobs) is None:
                return knobs
        return None

    def report(self) -> str:
        """One line for the build: how many kernels used records, which fell back to defaults."""
        line = f"tuning records: {len(self.applied)} kernel(s) tuned"
        if self.untuned:
            shown = ", ".join(sorted(set(self.untuned))[:4]) + (
                ", ..." if len(set(self.untuned)) > 4 else ""
            )
            line += f"; {len(self.untuned)} use the default schedule ({shown})"
        return line
