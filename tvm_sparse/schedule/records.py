"""Tuned kernel parameters shipped in ``schedules/`` and applied when they match the host CPU.

A record file is ``schedules/<cpu>.json`` (``<cpu>`` as LLVM names the host,
e.g. ``znver4``), written by ``benchmarks/tune_kernel_params.py``::

    {"cpu": "znver4", "records": [
        {"kernel": "block_matmul", "m": 128, "k": 768, "n": 3072, "block": [16, 768],
         "rows_per_tile": 8, "ms": 2.9}, ...]}

A record applies to a block-kernel call of the same ``m x k x n`` and block
shape. Files for another CPU are ignored; a malformed file is skipped with a
warning rather than applied.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tvm.target.codegen import llvm_get_system_cpu

from ..data import data_dir
from ..kernels import BSRKernelParams

SCHEDULES_DIR = data_dir("schedules")


@dataclass(frozen=True)
class KernelRecords:
    """Best ``BSRKernelParams`` per (m, k, n, block shape) for one CPU."""

    cpu: str
    params: dict  # (m, k, n, (r, c)) -> BSRKernelParams

    def lookup(
        self, m: int, k: int, n: int, block_shape: tuple[int, int]
    ) -> BSRKernelParams | None:
        return self.params.get((m, k, n, tuple(block_shape)))

    @staticmethod
    def load(path: Path) -> KernelRecords:
        """Read and validate a record file; raises ``ValueError`` naming what is wrong."""
        try:
            doc = json.loads(Path(path).read_text())
            cpu = str(doc["cpu"])
            params = {}
            for i, rec in enumerate(doc["records"]):
                block = tuple(int(v) for v in rec["block"])
                rows = int(rec["rows_per_tile"])
                if len(block) != 2 or rows < 1:
                    raise ValueError(f"record {i}: bad block {block} or rows_per_tile {rows}")
                params[(int(rec["m"]), int(rec["k"]), int(rec["n"]), block)] = BSRKernelParams(rows)
        except (OSError, KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"{path}: not a kernel record file ({type(err).__name__}: {err})"
            ) from None
        return KernelRecords(cpu, params)

    @staticmethod
    def for_cpu(cpu: str, directory: Path = SCHEDULES_DIR) -> KernelRecords:
        """The records for ``cpu`` in ``directory`` (empty when there are none or they are unusable)."""
        path = Path(directory) / f"{cpu}.json"
        if path.exists():
            try:
                records = KernelRecords.load(path)
            except ValueError as err:
                warnings.warn(f"ignoring tuned kernel records: {err}", stacklevel=2)
            else:
                if records.cpu == cpu:
                    return records
                warnings.warn(
                    f"ignoring {path}: recorded for CPU {records.cpu!r}, this one is {cpu!r}",
                    stacklevel=2,
                )
        return KernelRecords(cpu, {})

    @staticmethod
    @cache
    def for_host() -> KernelRecords:
        """The shipped records for this machine's CPU."""
        return KernelRecords.for_cpu(llvm_get_system_cpu())
