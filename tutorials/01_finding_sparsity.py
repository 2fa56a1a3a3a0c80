"""
Finding sparsity in a model
===========================

A pruned model hides its structure in its weights. ``tvm_sparse.analyze``
profiles every weight-carrying layer (matmuls and convolutions with constant
weights) and tells you what the compiler will do with it: the density, the
structure the zeros follow (blocks, N:M), the format the cost model picks and
its predicted speedup, and for convolutions how much of the kernels' energy a
small shared basis keeps.
"""

# %%
# A model to look at: a BERT-style encoder built with ``onnx.helper`` (generated
# weights), pruned three ways. ``prune_onnx`` is what ``tvm-sparse prune`` runs.
from _common import FAST

import tvm_sparse
from tvm_sparse.prune import prune_onnx
from tvm_sparse.testing import bert_encoder

model = bert_encoder(
    hidden=128 if FAST else 384,
    heads=4 if FAST else 12,
    ffn=256 if FAST else 1536,
    seq=32 if FAST else 128,
    layers=1,
)

# %%
# 16x1 blocks at density 0.1: sixteen output features share each kept input
# column, one AVX-512 vector per stored block. The cost model predicts a large
# gain and picks ``bsr 16x1``.
blocks, _ = prune_onnx(model, "block:16x1", density=0.1)
print(tvm_sparse.analyze(blocks).to_table())

# %%
# 2:4 weights (two of every four inputs kept): the analysis recognises the
# pattern and picks the N:M kernel, which runs about 1.3x faster than the dense
# kernel on AVX-512 machines (it is not a candidate without AVX-512).
two_four, _ = prune_onnx(model, "nm:2:4")
print(tvm_sparse.analyze(two_four).to_table())

# %%
# Unstructured pruning at 50%: zeros everywhere, but no block is empty, so
# every sparse kernel would lose to the dense one. Break-even matters: the
# layer stays dense.
unstructured, _ = prune_onnx(model, "unstructured", density=0.5)
report = tvm_sparse.analyze(unstructured)
print(report.to_table())
assert all(layer.choice.format == "dense" for layer in report.layers)

# %%
# The JSON form carries everything the table shows and the full profile (block
# density for every candidate block shape, N:M compliance), for scripts.
import json

row = json.loads(tvm_sparse.analyze(blocks).dumps())["layers"][0]
print({k: row[k] for k in ("name", "density", "structure", "format", "predicted_speedup")})
print("16x1 block density:", row["profile"]["block_density"]["16x1"])
