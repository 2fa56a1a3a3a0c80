"""
Compiling for sparse-accel and reading the device report
========================================================

``sparse-accel`` is a TVM target (a tag per device variant in ``target/``).
Compiling for it quantizes the model to int8 with calibration samples, runs
the layers the device supports on the bundled simulator, and the rest on the
host. The simulator reports per layer what the device did: cycles, PE
utilisation, MACs issued and skipped, DRAM bytes with metadata apart, energy;
and a timeline you can open in Perfetto.
"""

# %%
import json

import numpy as np
import tvm
from _common import FAST
from tvm import relax

import tvm_sparse
from tvm_sparse.accel.run_report import run_report
from tvm_sparse.prune import prune_onnx
from tvm_sparse.testing import mlp

sizes = (256, 512, 128) if FAST else (768, 3072, 768)
model, _ = prune_onnx(mlp(batch=64, sizes=sizes, gemm=False), "nm:2:4")
x = np.random.default_rng(0).standard_normal((64, sizes[0])).astype("float32")

# %%
# Compile for the default device and for its dense baseline (same PE array,
# buffers and bandwidth). The table says where each layer runs, in which mode,
# and what quantization cost it.
builds = {
    device: tvm_sparse.accel.compile(model, device, calibration={"x": x})
    for device in ("sparse-accel", "sparse-accel-dense")
}
print(builds["sparse-accel"].to_table())

# %%
# Run both; ``accel.profile()`` records each device layer's simulator report.
reports = {}
for device, build in builds.items():
    with tvm_sparse.accel.profile() as runs:
        relax.VirtualMachine(build.executable, tvm.cpu())["main"](tvm.runtime.tensor(x))
    reports[device] = run_report(runs, build.placements)
print(reports["sparse-accel"].to_table())
speedup = reports["sparse-accel-dense"]["total_cycles"] / reports["sparse-accel"]["total_cycles"]
print(f"2:4 on sparse-accel: {speedup:.2f}x fewer cycles than the dense baseline")

# %%
# The same report is ``tvm-sparse run LIB.so --input x=x.npy --report --json``.
# The timeline of the last layer as a Chrome trace (open it in
# https://ui.perfetto.dev): one track per queue, DMA overlapping compute.
with tvm_sparse.accel.profile() as runs:
    relax.VirtualMachine(builds["sparse-accel"].executable, tvm.cpu())["main"](
        tvm.runtime.tensor(x)
    )
_, _, last = runs[-1]
trace = json.loads(last.chrome_trace())
print(len(trace["traceEvents"]), "trace events; first:", trace["traceEvents"][3])
