"""
Adding your own device variant
==============================

A device is a JSON description: PE array, buffers, bandwidth, clock, sparse
modes, energies. Write one, and it is a TVM target the compiler and the
simulator follow. This tutorial makes a smaller device with 8x8 blocks and a
narrower DRAM interface, checks that the loader catches a mistake, and
compares it with the default device on the same GEMM. It ends with the device
operations the compiler tensorizes a layer into (``TensorIntrin``s).
"""

# %%
import json
import tempfile
from pathlib import Path

import numpy as np
from _common import FAST

import tvm_sparse
from tvm_sparse.accel import DeviceError, load_device
from tvm_sparse.codegen.gemm_program import gemm_program
from tvm_sparse.sim import run

doc = json.loads(tvm_sparse.accel.shipped_devices()["sparse-accel"].read_text())
doc.update(name="tiny-accel", dram_bytes_per_cycle=8)
doc["pe_array"] = {"reduction_lanes": 8, "output_lanes": 8}
doc["sparse_modes"]["block"] = {"block_rows": 8, "block_cols": 8, "index_bits": 16}
path = Path(tempfile.mkdtemp()) / "tiny-accel.json"
path.write_text(json.dumps(doc, indent=2))

# %%
# Every field is validated; a mistake is named.
bad = dict(doc, buffers=dict(doc["buffers"], weight_bytes=32))
try:
    tvm_sparse.accel.Device.from_dict(bad)
except DeviceError as err:
    print("rejected:", err)

# %%
# The same int8 GEMM on both devices (the tiny one has a quarter of the MACs
# per cycle and a quarter of the bandwidth).
m, k, n = (32, 256, 64) if FAST else (128, 1024, 256)
rng = np.random.default_rng(0)
x = rng.integers(-128, 128, size=(m, k)).astype(np.int8)
w = rng.integers(-128, 128, size=(k, n)).astype(np.int8)
for device in (load_device("sparse-accel"), load_device(path)):
    program, _ = gemm_program(x, w, np.zeros(n, np.int64), np.ones(n, np.int64), 8, device)
    total = run(program, device).report.total
    print(
        f"{device.name:14s} {total.cycles:8d} cycles, utilisation {total.to_dict(device)['pe_utilization']:.0%}"
    )

# %%
# As a TVM target for whole models: ``tvm_sparse.accel.target(path)`` (or
# ``tvm-sparse compile ... --device tiny-accel.json``).
target = tvm_sparse.accel.target(str(path))
print(target.keys)

# %%
# Under the hood, a device layer is TIR tensorized with the device's intrinsics:
# DMA tile loads, accumulator reset, a GEMM tile per weight mode,
# requantize-and-store. New device operations are new ``TensorIntrin``s (see
# ``tvm_sparse.codegen.intrinsics``) plus their encoding in ``ProgramEmitter``.
from tvm_sparse.codegen.lowering import tile_operations
from tvm_sparse.codegen.tir_layer import schedule_layer

ops = tile_operations(schedule_layer(32, 64, 32, 16, 32, 16, shift=8, relu=True))
print([op.op for op in ops[:6]])
