"""N:M matmuls, decomposed and block-sparse convolutions on the CPU vs torch, side by side in one run.

* 2:4 (and 1:4, 2:8) weights on the BERT-base FFN shapes at 128 tokens: this
  project's N:M kernel against torch fp32 dense, torch CSR and this project's
  dense kernel;
* a 3x3 convolution 256 -> 256 at 28x28, batch 1 and 8, decomposed to rank 4
  with 80% of the coefficients pruned (``decompose:rank=4,coef-density=0.2``):
  the compiled ONNX model (layout conversion included) against torch's dense
  conv2d on the original weights;
* the same convolution with 8x8 channel blocks at density 0.1.

The convolutions run on NCHW input (the compiled model converts to NHWC and
back around the layer) and on NHWC input as a channels-last exporter writes it
(no conversion left); torch's time is the faster of its NCHW and
channels-last runs.

Each line prints the MACs removed (dense MACs / executed MACs) next to the
measured speedup. Run: ``python benchmarks/structured_sparsity.py``.
"""

from __future__ import annotations

import numpy as np
import torch
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from tvm_sparse import build
from tvm_sparse.formats import BSRMatrix, NMMatrix
from tvm_sparse.kernels import BSRKernelArgs, bsr_matmul_kernel
from tvm_sparse.kernels.nm_matmul import NMKernelArgs, nm_matmul_kernel
from tvm_sparse.prune import prune_onnx, prune_weight
from tvm_sparse.target import host_target
from tvm_sparse.testing import GraphBuilder, median_seconds
from tvm_sparse.threads import use_available_cpus

THREADS = 2
RNG = np.random.default_rng(0)


def kernel_time(func, args) -> float:
    lib = tvm.compile(func, target=host_target(THREADS))
    tensors = [tvm.runtime.tensor(a) for a in args]
    return float(
        np.median(
            lib.mod.time_evaluator(func.attrs["global_symbol"], tvm.cpu(), number=10, repeat=7)(
                *tensors
            ).results
        )
    )


def nm_matmuls() -> None:
    m = 128
    for k, n in ((768, 3072), (3072, 768)):
        x = RNG.standard_normal((m, k)).astype("float32")
        dense_w = RNG.standard_normal((n, k)).astype("float32")
        xt = torch.from_numpy(x)
        t_torch = median_seconds(lambda: torch.nn.functional.linear(xt, torch.from_numpy(dense_w)))
        panels = BSRMatrix.from_dense(dense_w, (16, k))
        a = BSRKernelArgs.from_bsr(panels)
        t_ours_dense = kernel_time(
            bsr_matmul_kernel(m, panels),
            [x, a.data, a.indices, a.indptr, np.zeros(n, "float32"), np.zeros((m, n), "float32")],
        )
        for keep, group in ((2, 4), (1, 4), (2, 8)):
            w = prune_weight(dense_w, f"nm:{keep}:{group}")
            nm = NMMatrix.from_dense(w, keep, group)
            args = NMKernelArgs.from_nm(nm)
            t = kernel_time(
                nm_matmul_kernel(m, nm),
                [
                    x,
                    args.positions,
                    args.values,
                    np.zeros(n, "float32"),
                    np.zeros((m, n), "float32"),
                ],
            )
            csr = torch.from_numpy(w).to_sparse_csr()
            t_csr = median_seconds(lambda: torch.sparse.mm(csr, xt.T))
            print(
                f"matmul {m}x{k}->{n} {keep}:{group}: ours {t * 1e3:6.3f} ms | torch dense {t_torch * 1e3:6.3f} ms ({t_torch / t:4.2f}x) | "
                f"torch CSR {t_csr * 1e3:6.3f} ms ({t_csr / t:4.2f}x) | our dense {t_ours_dense * 1e3:6.3f} ms ({t_ours_dense / t:4.2f}x) | MACs removed {group / keep:.1f}x",
                flush=True,
            )


def conv_layer_model(batch: int, weight: np.ndarray, channels_last: bool = False) -> object:
    """The 3x3 convolution on NCHW input, or on NHWC input as a channels-last exporter writes it (Transposes
    around the NCHW Conv, which cancel the compiler's layout conversion)."""
    g = GraphBuilder(seed=0)
    w = g.const("conv.weight", weight)
    x = g.node("Transpose", ["x"], perm=[0, 3, 1, 2]) if channels_last else "x"
    y = g.node("Conv", [x, w], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    y = g.node("Transpose", [y], perm=[0, 2, 3, 1]) if channels_last else y
    y = g.node("Identity", [y], name="y")
    c, o = weight.shape[1], weight.shape[0]

    def shape(channels):
        return [batch, 28, 28, channels] if channels_last else [batch, channels, 28, 28]

    return g.model(
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape(c))],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, shape(o))],
    )


def executed_macs(model) -> int:
    """MACs of the model's convolutions, counting only nonzero weights (28x28 outputs, stride 1)."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return sum(
        np.count_nonzero(inits[n.input[1]]) * 28 * 28
        for n in model.graph.node
        if n.op_type == "Conv"
    )


def convolutions() -> None:
    weight = (RNG.standard_normal((256, 256, 3, 3)) * 0.05).astype("float32")
    variants = {
        "decomposed rank 4, 80% coefficients pruned": lambda m: prune_onnx(
            m, "decompose:rank=4,coef-density=0.2"
        ),
        "8x8 channel blocks, density 0.1": lambda m: prune_onnx(m, "block:8x8", 0.1),
    }
    for batch in (1, 8):
        x = RNG.standard_normal((batch, 256, 28, 28)).astype("float32")
        xt, wt = torch.from_numpy(x), torch.from_numpy(weight)
        t_torch = min(
            median_seconds(lambda: torch.nn.functional.conv2d(xt, wt, padding=1)),
            median_seconds(
                lambda: torch.nn.functional.conv2d(
                    xt.contiguous(memory_format=torch.channels_last),
                    wt.contiguous(memory_format=torch.channels_last),
                    padding=1,
                )
            ),
        )
        for layout in ("NCHW", "NHWC"):
            original = conv_layer_model(batch, weight, channels_last=layout == "NHWC")
            xtvm = tvm.runtime.tensor(
                x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
            )
            dense_macs = executed_macs(original)
            for label, make in variants.items():
                model, _ = make(original)
                vm = relax.VirtualMachine(build(model), tvm.cpu())
                t = median_seconds(lambda: vm["main"](xtvm))
                print(
                    f"conv 3x3 256->256 28x28 batch {batch} {layout} input, {label}: ours {t * 1e3:7.3f} ms | torch dense conv2d {t_torch * 1e3:7.3f} ms "
                    f"({t_torch / t:4.2f}x) | MACs removed {dense_macs / executed_macs(model):.1f}x",
                    flush=True,
                )


def main() -> None:
    torch.set_num_threads(THREADS)
    print(f"threads={THREADS}; ratios are torch (or our dense) time / ours")
    nm_matmuls()
    convolutions()


if __name__ == "__main__":
    use_available_cpus()  # TVM's thread pool on every CPU, as tvm_sparse.build() sets it
    main()
