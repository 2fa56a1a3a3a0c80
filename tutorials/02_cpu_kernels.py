"""
Block-sparse and N:M kernels on the CPU
=======================================

``SparsifyWeights`` is a Relax pass: it replaces each matmul whose constant
weight pays to be sparse by a ``call_tir`` of a kernel generated for that very
weight. This tutorial runs the pass by hand, looks at the TIR it generates,
and times it against the dense kernel.
"""

# %%
import numpy as np
import tvm
from _common import FAST
from tvm import relax

import tvm_sparse
from tvm_sparse.frontend import load_onnx
from tvm_sparse.pipeline import graph_passes
from tvm_sparse.prune import prune_onnx
from tvm_sparse.target import host_target
from tvm_sparse.testing import median_seconds, mlp
from tvm_sparse.transform import SparsifyWeights

sizes = (256, 512, 256) if FAST else (768, 3072, 768)
model, _ = prune_onnx(mlp(batch=128, sizes=sizes), "block:16x1", density=0.1)

# %%
# The graph passes of the host pipeline, applied to the imported module. After
# them, each linear layer is a ``call_tir`` of its kernel (``bsr_matmul_fc0``...)
# with the stored blocks and their indices as constants.
mod = load_onnx(model).mod
with host_target():
    for p in graph_passes(SparsifyWeights()):
        mod = p(mod)
print(mod["main"].script()[:1500])

# %%
# The generated kernel: a block-row loop over the stored blocks of each 16-row
# panel, sixteen outputs per vector, eight rows of X per tile.
kernel = next(f for gv, f in mod.functions_items() if gv.name_hint.startswith("bsr_matmul"))
print(kernel.script()[:2000])

# %%
# Sparse against dense, same model, same process.
x = np.random.default_rng(0).standard_normal((128, sizes[0])).astype("float32")
timings = {}
for label, sparsify in (("sparse", True), ("dense", False)):
    vm = relax.VirtualMachine(tvm_sparse.build(model, sparsify=sparsify), tvm.cpu())
    xt = tvm.runtime.tensor(x)
    timings[label] = median_seconds(lambda: vm["main"](xt), repeat=5 if FAST else 20)
    print(f"{label}: {timings[label] * 1e3:.3f} ms")
print(f"speedup: {timings['dense'] / timings['sparse']:.2f}x")

# %%
# The same with 2:4 weights: the analysis finds the pattern and the pass emits
# the N:M kernel (one vpermps gather per kept value slot of a 16-input chunk).
model24, _ = prune_onnx(mlp(batch=128, sizes=sizes), "nm:2:4")
print(tvm_sparse.analyze(model24).to_table())
