"""Counters of a simulated run: per program and per layer tag, as a table, JSON and a Perfetto timeline."""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field

from ..hw.device import Device
from ..hw.isa import Queue
from .execute import Work


@dataclass
class Counters:
    """What a program (or one layer of it) cost on the device."""

    instructions: int = 0
    start_cycle: int | None = None
    end_cycle: int = 0
    busy_cycles: dict = field(default_factory=lambda: {q.name.lower(): 0 for q in Queue})
    gemm_cycles: int = (
        0  # cycles of GEMM tile instructions (the PE array's share of the compute queue)
    )
    macs_dense: int = 0
    macs_issued: int = 0
    basis_macs: int = (
        0  # of macs_issued, those of the fused engine's basis stage (not the PE array)
    )
    dram_read_bytes: int = 0
    dram_read_metadata_bytes: int = 0
    dram_write_bytes: int = 0
    sram_bytes: int = 0
    energy_pj: dict = field(default_factory=lambda: {"mac": 0.0, "sram": 0.0, "dram": 0.0})

    @property
    def cycles(self) -> int:
        return self.end_cycle - (self.start_cycle or 0)

    @property
    def macs_skipped(self) -> int:
        return self.macs_dense - self.macs_issued

    def add(self, queue: Queue, start: int, end: int, work: Work, energy: dict) -> None:
        self.instructions += 1
        if work.macs_dense:
            self.gemm_cycles += end - start
        self.start_cycle = start if self.start_cycle is None else min(self.start_cycle, start)
        self.end_cycle = max(self.end_cycle, end)
        self.busy_cycles[queue.name.lower()] += end - start
        self.macs_dense += work.macs_dense
        self.macs_issued += work.macs_issued
        self.basis_macs += work.basis_macs
        self.dram_read_bytes += work.dram_read_bytes
        self.dram_read_metadata_bytes += work.dram_read_metadata_bytes
        self.dram_write_bytes += work.dram_write_bytes
        self.sram_bytes += work.sram_read_bytes + work.sram_write_bytes
        for key, value in energy.items():
            self.energy_pj[key] += value

    def to_dict(self, device: Device) -> dict:
        """The counters as JSON-able values, with what they give on ``device``: cycles, time, PE
        utilization, total energy."""
        peak = device.pe_array.macs_per_cycle
        out = asdict(self)
        out.update(
            cycles=self.cycles,
            time_us=self.cycles / device.clock_mhz,
            macs_skipped=self.macs_skipped,
            pe_utilization=(self.macs_issued - self.basis_macs) / (peak * self.cycles)
            if self.cycles
            else 0.0,
            energy_total_pj=sum(self.energy_pj.values()),
        )
        return out

    def summary(self, device: Device) -> dict:
        """Deprecated: :meth:`to_dict`."""
        warnings.warn(
            "Counters.summary() is deprecated: use to_dict(device)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.to_dict(device)


@dataclass
class TimelineEvent:
    index: int
    queue: Queue
    opcode: str
    tag: str
    start: int
    end: int


@dataclass
class SimReport:
    device: Device
    total: Counters
    layers: dict  # tag name -> Counters
    timeline: list

    def to_dict(self) -> dict:
        return {
            "device": self.device.name,
            "clock_mhz": self.device.clock_mhz,
            "cycles": self.total.cycles,
            "total": self.total.to_dict(self.device),
            "layers": {name: c.to_dict(self.device) for name, c in self.layers.items()},
        }

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def to_table(self) -> str:
        width = max(len("layer"), *(len(name) for name in self.layers))
        header = f"{'layer':{width}s} {'cycles':>10s} {'util':>6s} {'MACs dense':>12s} {'issued':>12s} {'DRAM rd':>10s} {'meta rd':>9s} {'DRAM wr':>10s} {'energy uJ':>10s}"
        rows = [f"device {self.device.name} @ {self.device.clock_mhz:g} MHz", header]
        for name, c in [*self.layers.items(), ("total", self.total)]:
            s = c.to_dict(self.device)
            rows.append(
                f"{name:{width}s} {s['cycles']:10d} {s['pe_utilization']:6.1%} {c.macs_dense:12d} {c.macs_issued:12d} "
                f"{c.dram_read_bytes:10d} {c.dram_read_metadata_bytes:9d} {c.dram_write_bytes:10d} {s['energy_total_pj'] / 1e6:10.3f}"
            )
        return "\n".join(rows)

    def trace_events(self, offset_cycles: int = 0) -> list[dict]:
        """One Chrome trace span per instruction on its queue's track (``tid``), starting ``offset_cycles``
        into the trace; ``ts`` and ``dur`` in microseconds of simulated device time."""
        us_per_cycle = 1.0 / self.device.clock_mhz
        return [
            {
                "name": e.opcode,
                "cat": e.tag,
                "ph": "X",
                "pid": 0,
                "tid": int(e.queue),
                "ts": (offset_cycles + e.start) * us_per_cycle,
                "dur": (e.end - e.start) * us_per_cycle,
                "args": {"instruction": e.index, "layer": e.tag},
            }
            for e in self.timeline
        ]

    def chrome_trace(self) -> str:
        """The timeline as Chrome trace JSON (open in Perfetto or chrome://tracing); one track per queue."""
        return json.dumps(
            {"traceEvents": [*queue_tracks(), *self.trace_events()], "displayTimeUnit": "ns"}
        )


def queue_tracks() -> list[dict]:
    """Chrome trace metadata naming one track (``tid``) per device queue."""
    return [
        {
            "name": "thread_name",
            "ph": "M",
            "pid": 0,
            "tid": int(q),
            "args": {"name": f"{q.name.lower()} queue"},
        }
        for q in Queue
    ]
