"""The device report of a run: each device layer's counters and simulated time, the layers that ran on
the host, and the whole run as one Chrome trace."""

from __future__ import annotations

import json
import warnings

from ..hw.isa import Queue
from ..sim.report import queue_tracks


def run_report(runs: list, placements=()) -> RunReport:
    """Counters of the device layers ``runs`` (what :func:`~tvm_sparse.accel.profile` recorded); ``placements`` (dicts or
    :class:`~tvm_sparse.backend.Placement`) add the host layers with their reason.

    Times are simulated device time, cycles / the device clock: ``device_time_us`` per layer,
    ``total_device_time_ms`` for the run (not the host's wall time of the simulation)."""
    layers, total_cycles, total_energy, device, clock_mhz = [], 0, 0.0, None, None
    for name, mode, report in runs:
        summary = report.total.to_dict(report.device)
        device, clock_mhz = report.device.name, report.device.clock_mhz
        total_cycles += summary["cycles"]
        total_energy += summary["energy_total_pj"]
        layers.append(
            {
                "name": name,
                "runs_on": "device",
                "mode": mode,
                "cycles": summary["cycles"],
                "device_time_us": summary["time_us"],
                "pe_utilization": summary["pe_utilization"],
                "macs_dense": summary["macs_dense"],
                "macs_issued": summary["macs_issued"],
                "macs_skipped": summary["macs_skipped"],
                "dram_read_bytes": summary["dram_read_bytes"],
                "dram_read_metadata_bytes": summary["dram_read_metadata_bytes"],
                "dram_write_bytes": summary["dram_write_bytes"],
                "energy_pj": summary["energy_total_pj"],
            }
        )
    for p in placements:
        p = p if isinstance(p, dict) else vars(p)
        if p["target"] == "host":
            layers.append({"name": p["name"], "runs_on": "host", "reason": p["reason"]})
    total_ms = total_cycles / clock_mhz / 1e3 if clock_mhz else 0.0
    return RunReport(
        device=device,
        clock_mhz=clock_mhz,
        total_cycles=total_cycles,
        total_device_time_ms=total_ms,
        total_energy_pj=total_energy,
        layers=layers,
    )


class RunReport(dict):
    """The device report of a run, a JSON-able dict (:func:`run_report` builds it): ``device``, ``clock_mhz``,
    ``total_cycles``, ``total_device_time_ms``, ``total_energy_pj`` and ``layers`` (one dict each)."""

    def to_dict(self) -> dict:
        return dict(self)

    def dumps(self, **kwargs) -> str:
        """The report as JSON text (``kwargs`` go to :func:`json.dumps`)."""
        return json.dumps(self, **kwargs)

    def to_table(self) -> str:
        """The report as a table; the name column fits the longest layer name."""
        doc = self
        clock = f" @ {doc['clock_mhz']:g} MHz" if doc["clock_mhz"] else ""
        width = max([len("layer")] + [len(layer["name"]) for layer in doc["layers"]])
        rows = [
            f"device {doc['device'] or '-'}{clock}: {doc['total_cycles']} cycles = {doc['total_device_time_ms']:.3f} ms "
            f"simulated device time, {doc['total_energy_pj'] / 1e6:.3f} uJ",
            f"{'layer':{width}s} {'runs on':7s} {'mode':11s} {'cycles':>10s} {'time us':>9s} {'util':>6s} {'MACs issued':>12s} "
            f"{'skipped':>12s} {'DRAM rd':>10s} {'meta rd':>8s} {'energy uJ':>9s}",
        ]
        for layer in doc["layers"]:
            if layer["runs_on"] == "host":
                rows.append(
                    f"{layer['name']:{width}s} host    {'':11s} {'':>10s} {'':>9s} {'':>6s} {'':>12s} {'':>12s} {'':>10s} {'':>8s} {'':>9s}  ({layer['reason']})"
                )
                continue
            rows.append(
                f"{layer['name']:{width}s} device  {layer['mode']:11s} {layer['cycles']:10d} {layer['device_time_us']:9.3f} {layer['pe_utilization']:6.1%} "
                f"{layer['macs_issued']:12d} {layer['macs_skipped']:12d} {layer['dram_read_bytes']:10d} "
                f"{layer['dram_read_metadata_bytes']:8d} {layer['energy_pj'] / 1e6:9.3f}"
            )
        return "\n".join(rows)


def format_run_report(doc: dict) -> str:
    """Deprecated: ``RunReport(doc).to_table()``."""
    warnings.warn(
        "format_run_report(doc) is deprecated: use run_report(...).to_table()",
        DeprecationWarning,
        stacklevel=2,
    )
    return RunReport(doc).to_table()


def model_trace(runs: list) -> dict:
    """One timeline of a model run in Chrome trace event format (write it as JSON, open it in https://ui.perfetto.dev).

    ``runs``: ``(layer name, mode, SimReport)`` of each device layer in execution order (what
    :func:`~tvm_sparse.accel.profile` recorded). The layers run one after another, each starting where the previous one ended;
    ``ts`` and ``dur`` are microseconds of simulated device time (cycles / clock). Tracks (``tid``): one per
    device queue with its instructions, and ``layers`` with one span per layer.
    """
    layer_tid = len(Queue)
    events = [
        *queue_tracks(),
        {"name": "thread_name", "ph": "M", "pid": 0, "tid": layer_tid, "args": {"name": "layers"}},
        {
            "name": "thread_sort_index",
            "ph": "M",
            "pid": 0,
            "tid": layer_tid,
            "args": {"sort_index": -1},
        },
    ]  # layers on top
    offset = 0
    for name, mode, report in runs:
        cycles, clock = report.total.cycles, report.device.clock_mhz
        events.append(
            {
                "name": name,
                "cat": "layer",
                "ph": "X",
                "pid": 0,
                "tid": layer_tid,
                "ts": offset / clock,
                "dur": cycles / clock,
                "args": {"mode": mode, "cycles": cycles, "start_cycle": offset},
            }
        )
        events += report.trace_events(offset)
        offset += cycles
    return {"traceEvents": events, "displayTimeUnit": "ns"}
