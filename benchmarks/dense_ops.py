"""Dense host operators: this project's kernels vs torch, side by side in one process.

For each operator class: milliseconds, GFLOP/s (GB/s for memory-bound ones)
and the ratio against torch fp32 (2 threads), next to the machine's measured
peak (a register-only FMA loop compiled by TVM on all threads).

* GEMM 128x768x3072 (BERT-base FFN) and the conv-as-GEMM 784x2304x512 (a
  28x28 3x3 convolution with 256 -> 512 channels, im2col'd);
* ResNet-50 convolutions (NHWC here, torch in its best of NCHW and
  channels-last) and a MobileNet depthwise 3x3;
* attention's batched matmuls (12 heads, 128 tokens, head size 64);
* softmax and LayerNorm on attention and hidden-state shapes, as compiled
  by the project's host pipeline.

Run: ``python benchmarks/dense_ops.py``. Ratios are "torch time / our time"
(above 1: we are faster).
"""

from __future__ import annotations

import numpy as np
import torch
import tvm
from tvm import relax
from tvm.script import tirx as T

from tvm_sparse.formats import BSRMatrix
from tvm_sparse.kernels import BSRKernelArgs, Im2Col, bsr_matmul_kernel
from tvm_sparse.kernels.batch_matmul import batch_matmul_kernel
from tvm_sparse.kernels.depthwise_conv import depthwise_conv_kernel
from tvm_sparse.pipeline import cpu_pipeline
from tvm_sparse.target import host_target
from tvm_sparse.testing import median_seconds
from tvm_sparse.threads import available_cpus, use_available_cpus

THREADS = 2
RNG = np.random.default_rng(0)


def rand(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype("float32")


def time_kernel(func, args, best: bool = False) -> float:
    """Median (or with ``best``, minimum) seconds per call of a compiled PrimFunc."""
    lib = tvm.compile(func, target=host_target(THREADS))
    tensors = [tvm.runtime.tensor(a) for a in args]
    name = func.attrs["global_symbol"]
    results = lib.mod.time_evaluator(name, tvm.cpu(), number=5, repeat=7)(*tensors).results
    return float(np.min(results) if best else np.median(results))


def peak_gflops() -> float:
    """FMA throughput of all threads on register-resident 16-lane vectors (8 independent chains)."""
    iterations, chains, lanes = 200_000, 8, 16
    threads = available_cpus()

    @T.prim_func
    def peak(Y: T.Buffer((threads, chains, lanes), "float32")):
        T.func_attr({"tirx.noalias": True, "global_symbol": "peak"})
        for t in T.parallel(threads):
            acc = T.decl_buffer((chains, lanes), "float32", scope="local")
            for a in T.unroll(chains):
                for lane in T.vectorized(lanes):
                    acc[a, lane] = T.float32(a)
            for _ in range(iterations):
                for a in T.unroll(chains):
                    for lane in T.vectorized(lanes):
                        acc[a, lane] = acc[a, lane] * T.float32(0.999) + T.float32(0.001)
            for a in T.unroll(chains):
                for lane in T.vectorized(lanes):
                    Y[t, a, lane] = acc[a, lane]

    seconds = time_kernel(
        peak, [np.zeros((threads, chains, lanes), "float32")], best=True
    )  # noise only slows it
    return 2 * iterations * chains * lanes * threads / seconds / 1e9


def report(label: str, ours: float, theirs: float, work: float, unit: str = "GFLOP/s") -> None:
    print(
        f"{label:44s} ours {ours * 1e3:8.3f} ms {work / ours / 1e9:7.1f} {unit} | torch {theirs * 1e3:8.3f} ms "
        f"{work / theirs / 1e9:7.1f} | ratio {theirs / ours:5.2f}",
        flush=True,
    )


def gemm(m: int, k: int, n: int, label: str) -> None:
    x, w = rand(m, k), rand(n, k)
    panels = BSRMatrix.from_dense(w, (16, k))
    args = BSRKernelArgs.from_bsr(panels)
    ours = time_kernel(
        bsr_matmul_kernel(m, panels),
        [
            x,
            args.data,
            args.indices,
            args.indptr,
            np.zeros(n, "float32"),
            np.zeros((m, n), "float32"),
        ],
    )
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    theirs = median_seconds(lambda: torch.nn.functional.linear(xt, wt))
    report(f"GEMM {m}x{k}x{n} ({label})", ours, theirs, 2 * m * k * n)


def conv(size: int, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
    im2col = Im2Col(
        (1, size, size, c_in), (kernel, kernel), (stride, stride), (kernel // 2, kernel // 2)
    )
    x, w = rand(1, size, size, c_in), rand(c_out, kernel, kernel, c_in)
    panels = BSRMatrix.from_dense(im2col.weight_matrix(w), (16, im2col.columns))
    args = BSRKernelArgs.from_bsr(panels)
    func = bsr_matmul_kernel(im2col.rows, panels, im2col=im2col)
    ours = time_kernel(
        func,
        [
            x,
            args.data,
            args.indices,
            args.indptr,
            np.zeros(c_out, "float32"),
            np.zeros((1, *im2col.out_hw, c_out), "float32"),
        ],
    )
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    wt = torch.from_numpy(w.transpose(0, 3, 1, 2).copy())
    theirs = min(
        median_seconds(lambda: torch.nn.functional.conv2d(a, b, stride=stride, padding=kernel // 2))
        for a, b in (
            (xt, wt),
            (
                xt.contiguous(memory_format=torch.channels_last),
                wt.contiguous(memory_format=torch.channels_last),
            ),
        )
    )
    oh, ow = im2col.out_hw
    report(
        f"conv {size}x{size}x{c_in}->{c_out} {kernel}x{kernel} s{stride}",
        ours,
        theirs,
        2 * oh * ow * c_out * im2col.columns,
    )


def depthwise(size: int, channels: int, stride: int = 1) -> None:
    im2col = Im2Col((1, size, size, channels), (3, 3), (stride, stride), (1, 1), groups=channels)
    x, w = rand(1, size, size, channels), rand(3, 3, 1, channels)
    oh, ow = im2col.out_hw
    ours = time_kernel(
        depthwise_conv_kernel(im2col),
        [x, w, np.zeros(channels, "float32"), np.zeros((1, oh, ow, channels), "float32")],
    )
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).contiguous(
        memory_format=torch.channels_last
    )
    wt = torch.from_numpy(w[:, :, 0, :].transpose(2, 0, 1)[:, None].copy())
    theirs = median_seconds(
        lambda: torch.nn.functional.conv2d(xt, wt, stride=stride, padding=1, groups=channels)
    )
    report(
        f"depthwise {size}x{size}x{channels} 3x3 s{stride}",
        ours,
        theirs,
        2 * oh * ow * channels * 9,
    )


def batch_matmul(batch: int, m: int, k: int, n: int, transpose_b: bool, label: str) -> None:
    a = rand(batch, m, k)
    b = rand(batch, n, k) if transpose_b else rand(batch, k, n)
    ours = time_kernel(
        batch_matmul_kernel(batch, m, n, k, transpose_b), [a, b, np.zeros((batch, m, n), "float32")]
    )
    at, bt = torch.from_numpy(a), torch.from_numpy(b)
    theirs = median_seconds(lambda: torch.bmm(at, bt.transpose(1, 2) if transpose_b else bt))
    report(f"batch matmul {batch}x{m}x{k}x{n} ({label})", ours, theirs, 2 * batch * m * k * n)


def relax_op(label: str, shape, make, torch_fn) -> None:
    """An operator as the host pipeline compiles it (one Relax function, run by the VM)."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    with bb.function("main", [x]):
        bb.emit_func_output(bb.emit(make(x)))
    target = host_target(THREADS)
    vm = relax.VirtualMachine(
        tvm.compile(bb.finalize(), target=target, relax_pipeline=cpu_pipeline(target, None)),
        tvm.cpu(),
    )
    data = rand(*shape)
    xt = tvm.runtime.tensor(data)
    ours = median_seconds(lambda: vm["main"](xt))
    torch_x = torch.from_numpy(data)
    theirs = median_seconds(lambda: torch_fn(torch_x))
    report(f"{label} {'x'.join(map(str, shape))}", ours, theirs, 2 * data.nbytes, "GB/s")


def main() -> None:
    torch.set_num_threads(THREADS)
    print(
        f"threads={THREADS}; measured peak (register FMA loop, all {available_cpus()} CPUs): {peak_gflops():.0f} GFLOP/s"
    )
    gemm(128, 768, 3072, "BERT-base FFN")
    gemm(784, 2304, 512, "conv-as-GEMM")
    for args in (
        (224, 3, 64, 7, 2),
        (56, 64, 64, 3),
        (56, 64, 256, 1),
        (56, 256, 64, 1),
        (28, 128, 128, 3),
        (14, 256, 256, 3),
        (7, 512, 512, 3),
    ):
        conv(*args)
    depthwise(56, 128)
    depthwise(28, 256, 2)
    batch_matmul(12, 128, 64, 128, True, "attention scores")
    batch_matmul(12, 128, 128, 64, False, "attention context")
    hidden = 768
    weight, bias = relax.const(np.ones(hidden, "float32")), relax.const(np.zeros(hidden, "float32"))
    relax_op(
        "softmax",
        (1, 12, 128, 128),
        lambda x: relax.op.nn.softmax(x, axis=-1),
        lambda x: torch.softmax(x, -1),
    )
    relax_op(
        "layer_norm",
        (1, 128, hidden),
        lambda x: relax.op.nn.layer_norm(x, weight, bias, axes=[-1]),
        lambda x: torch.nn.functional.layer_norm(x, (hidden,)),
    )


if __name__ == "__main__":
    use_available_cpus()  # TVM's thread pool on every CPU, as tvm_sparse.build() sets it
    main()
