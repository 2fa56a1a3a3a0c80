"""The device report of a run: each device layer's counters, and the layers that ran on the host."""

from __future__ import annotations

from .runtime import last_run


def run_report(placements=()) -> dict:
    """Counters of the device layers run since ``reset_run()``; ``placements`` (dicts or
    :class:`~tvm_sparse.transform.offload.Placement`) add the host layers with their reason."""
    layers, total_cycles, total_energy, device = [], 0, 0.0, None
    for name, mode, report in last_run():
        summary = report.total.summary(report.device)
        device = report.device.name
        total_cycles += summary["cycles"]
        total_energy += summary["energy_total_pj"]
        layers.append(
            {
                "name": name,
                "runs_on": "device",
                "mode": mode,
                "cycles": summary["cycles"],
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
    return {"device": device, "total_cycles": total_cycles, "total_energy_pj": total_energy, "layers": layers}


def format_run_report(doc: dict) -> str:
    rows = [
        f"device {doc['device'] or '-'}: {doc['total_cycles']} cycles, {doc['total_energy_pj'] / 1e6:.3f} uJ",
        f"{'layer':28s} {'runs on':7s} {'mode':11s} {'cycles':>10s} {'util':>6s} {'MACs issued':>12s} {'skipped':>12s} {'DRAM rd':>10s} {'meta rd':>8s} {'energy uJ':>9s}",
    ]
    for layer in doc["layers"]:
        if layer["runs_on"] == "host":
            rows.append(f"{layer['name'][:28]:28s} host    {'':11s} {'':>10s} {'':>6s} {'':>12s} {'':>12s} {'':>10s} {'':>8s} {'':>9s}  ({layer['reason']})")
            continue
        rows.append(
            f"{layer['name'][:28]:28s} device  {layer['mode']:11s} {layer['cycles']:10d} {layer['pe_utilization']:6.1%} "
            f"{layer['macs_issued']:12d} {layer['macs_skipped']:12d} {layer['dram_read_bytes']:10d} "
            f"{layer['dram_read_metadata_bytes']:8d} {layer['energy_pj'] / 1e6:9.3f}"
        )
    return "\n".join(rows)
