"""
Kernel decomposition of convolutions (PENNI / ESCALATE)
=======================================================

Every k x k kernel of a layer is approximated by a combination of r basis
kernels shared by the whole layer. With r small, a convolution becomes a 1x1
convolution with the coefficients followed by a cheap grouped convolution
with the basis, and pruning the coefficients removes most of the rest.
Decomposition is lossy unless the kernels really live in a small subspace: the
report gives the energy kept and the output error, so the trade-off is yours.
"""

# %%
import numpy as np
from _common import FAST

from tvm_sparse.prune import (
    decompose_kernels,
    energy_profile,
    prune_coefficients,
    quantize_hybrid,
)

rng = np.random.default_rng(0)
o, i, k = (32, 16, 3) if FAST else (256, 256, 3)

# %%
# Kernels that live in a rank-3 subspace (plus a little noise, as trained
# networks' often nearly do) and purely random kernels.
low_rank = np.einsum(
    "oij,jhw->oihw", rng.standard_normal((o, i, 3)), rng.standard_normal((3, k, k))
)
low_rank = (low_rank + 0.05 * rng.standard_normal(low_rank.shape)).astype("float32")
random = rng.standard_normal((o, i, k, k)).astype("float32")
for label, w in (("low-rank", low_rank), ("random", random)):
    print(label, "energy of rank 1..9:", np.round(energy_profile(w), 3))

# %%
# Decompose to rank 3 and measure the weight error; then prune 80% of the
# coefficients (in blocks of 16 output channels x 1 input channel, the shape
# the block kernels run fastest) and quantize (8-bit basis, ternary
# coefficients). Each step is an explicit, measured loss.
d = decompose_kernels(low_rank, rank=3)
print(f"rank {d.rank}: energy kept {d.energy:.4f}, weight error {d.relative_error(low_rank):.4f}")
pruned = prune_coefficients(d, 0.2)
print(f"80% of coefficients pruned: weight error {pruned.relative_error(low_rank):.4f}")
quantized = quantize_hybrid(pruned)
print(f"hybrid quantization: weight error {quantized.relative_error(low_rank):.4f}")

# %%
# The MACs per output pixel, dense against decomposed (1x1 with 20% of the
# coefficients, then the basis convolution):
dense_macs = o * i * k * k
decomposed_macs = 0.2 * o * d.rank * i + o * d.rank * k * k
print(f"MACs: {dense_macs} -> {decomposed_macs:.0f} ({dense_macs / decomposed_macs:.1f}x fewer)")

# %%
# On a whole model, ``tvm-sparse prune MODEL -o OUT.onnx --pattern
# decompose:rank=4,coef-density=0.2`` writes the decomposed layers as standard
# ONNX (a 1x1 Conv, then a grouped Conv), so onnxruntime can check the
# accuracy, and ``tvm_sparse.build`` compiles it: the compiler pairs the two
# convolutions and orders the maps so the basis convolution reads contiguous
# vectors.
from tvm_sparse.prune import prune_onnx
from tvm_sparse.testing import resnet

model = resnet(
    image=32 if FAST else 112,
    width=16 if FAST else 64,
    blocks=(1, 1) if FAST else (3, 4, 6, 3),
    classes=10,
)
decomposed, layers = prune_onnx(model, "decompose:rank=4,coef-density=0.2")
for layer in layers[:3]:
    print(layer.name, "->", layer.note)
