"""
Autotuning on the CPU and on the device
=======================================

A build uses default schedules: a measured rule of thumb for the CPU kernels
and a roofline estimate for the device tiling. ``tvm_sparse.tune`` searches
each kernel's design space with MetaSchedule's evolutionary search and XGBoost
cost model, keeps every measurement in a MetaSchedule database, and later
builds read the best record of each kernel.

This tutorial tunes a pruned MLP for both targets, looks inside the database
and a design space, and builds with the records.
"""

# %%
import tempfile

import numpy as np
import tvm
from _common import FAST
from tvm import relax

import tvm_sparse
from tvm_sparse.prune import prune_onnx
from tvm_sparse.schedule.choice import schedules_from
from tvm_sparse.testing import mlp
from tvm_sparse.tune import TunedSchedules, extract_tasks

sizes = (256, 512, 256) if FAST else (768, 3072, 768)
trials = 4 if FAST else 24
model, _ = prune_onnx(mlp(batch=64, sizes=sizes), "block:16x1", 0.1)
work_dir = tempfile.mkdtemp(prefix="tuning-")

# %%
# Tasks: compiling the model once lists the kernels it would generate. Each
# task is keyed by shape and weight structure, so layers alike share records.
tasks = extract_tasks(model)
for task in tasks:
    print(task.describe(), "default knobs:", task.default())

# %%
# A task's design space is a MetaSchedule schedule function. For the CPU block
# kernel, generated per weight, the knobs are sampled with ``sample_categorical``
# and annotated on a small workload function (MetaSchedule's database key).
sch = tvm.s_tir.Schedule(tasks[0].workload())
space = tasks[0].design_space(sch)[0]
print(space.trace)

# %%
# Tune: the default schedule is measured and recorded first, then ``trials``
# candidates in all per task (each checked against numpy before it is timed).
# Progress goes to stderr; a second call with the same ``work_dir`` resumes.
results = tvm_sparse.tune(model, trials=trials, work_dir=work_dir)
for r in results:
    print(r.to_dict())

# %%
# Build with the records and check the result.
exe = tvm_sparse.build(model, tuning_db=work_dir)
x = np.random.default_rng(0).standard_normal((64, sizes[0])).astype("float32")
y = relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
print(
    "output",
    y.shape,
    "tuned kernels:",
    TunedSchedules.open(work_dir, tvm_sparse.target.host_target()).lookup(tasks[0]),
)

# %%
# The device: a layer's design space is its TIR, tiled by MetaSchedule
# (``sample_perfect_tile`` per dimension, the loop order, double buffering). A
# postprocessor rejects tiles that do not fit the buffers; the runner compiles
# each candidate to an instruction stream and returns the simulator's cycles
# over the clock. The cost model learns from MetaSchedule's features of the
# tiled TIR.
device_results = tvm_sparse.tune(
    model, target="sparse-accel", trials=trials, work_dir=work_dir, calibration={"x": x}
)
for r in device_results:
    print(
        f"{r.description}: default {r.default_seconds * 1e6:.1f} us, best {r.best_seconds * 1e6:.1f} us"
    )

# %%
# Both targets' records live in one database; each build takes those for its
# own target (records for another CPU or device are never applied).
# ``build(..., tuning_db=)`` does this; here the records are installed by hand
# to keep the device build's partition table and the records' report.
records = TunedSchedules.open(work_dir, tvm_sparse.accel.target("sparse-accel"))
with schedules_from(records):
    build = tvm_sparse.accel.compile(model, "sparse-accel", calibration={"x": x})
print(build.to_table())
print(records.report())
