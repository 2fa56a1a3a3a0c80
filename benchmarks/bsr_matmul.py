"""Block-sparse matmul vs the alternatives, side by side in one process.

For BERT-base shapes at 128 tokens (FFN 768->3072, 3072->768, attention
projection 768->768), densities 0.5..0.05 and blocks 1x1, 16x1, 8x8, 32x32:

* this project's BSR kernel (``tvm_sparse.kernels.bsr_matmul_kernel``),
* this project's dense kernel (the packed panels its dense build uses),
* torch fp32 dense (``torch.nn.functional.linear``),
* torch CSR and torch BSR (``Tensor.to_sparse_csr`` / ``to_sparse_bsr``; CPU
  torch BSR accepts square blocks only),
* scipy CSR.

Prints milliseconds and speedups over torch dense, over the best torch sparse
kernel, and against the ideal ``1/density``. Run: ``python benchmarks/bsr_matmul.py``
(``--quick`` for one shape and two densities).
"""

from __future__ import annotations

import argparse

import numpy as np
import scipy.sparse
import torch
import tvm

from tvm_sparse.formats import BSRMatrix
from tvm_sparse.kernels import BSRKernelArgs, bsr_matmul_kernel
from tvm_sparse.prune import prune_weight
from tvm_sparse.target import host_target
from tvm_sparse.testing import median_seconds
from tvm_sparse.threads import use_available_cpus

THREADS = 2
SHAPES = {
    "ffn_in 768->3072": (768, 3072),
    "ffn_out 3072->768": (3072, 768),
    "attn 768->768": (768, 768),
}
DENSITIES = (0.5, 0.3, 0.2, 0.1, 0.05)
BLOCKS = ((1, 1), (16, 1), (8, 8), (32, 32))
TOKENS = 128


class TVMKernel:
    """A compiled block kernel with its constant arguments bound."""

    def __init__(self, x: np.ndarray, weight: np.ndarray, block):
        bsr = BSRMatrix.from_dense(weight, block)
        args = BSRKernelArgs.from_bsr(bsr)
        m = x.shape[0]
        n_pad = block[0] * (len(bsr.indptr) - 1)
        self.lib = tvm.compile(bsr_matmul_kernel(m, bsr), target=host_target(THREADS))
        self.args = [
            tvm.runtime.tensor(a)
            for a in (x, args.data, args.indices, args.indptr, np.zeros(n_pad, "float32"))
        ]
        self.args.append(tvm.runtime.tensor(np.zeros((m, n_pad), "float32")))
        self.n = weight.shape[0]

    def __call__(self):
        self.lib["bsr_matmul"](*self.args)

    def result(self) -> np.ndarray:
        return self.args[-1].numpy()[:, : self.n]

    def time(self) -> float:
        evaluator = self.lib.mod.time_evaluator("bsr_matmul", tvm.cpu(), number=10, repeat=7)
        return float(np.median(evaluator(*self.args).results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    torch.set_num_threads(THREADS)
    shapes = dict(list(SHAPES.items())[:1]) if opts.quick else SHAPES
    densities = (0.3, 0.1) if opts.quick else DENSITIES
    rng = np.random.default_rng(0)
    print(
        f"threads={THREADS} tokens={TOKENS} times in ms (median); 'vs dense' = torch dense / this kernel"
    )
    header = f"{'shape':18s} {'block':6s} {'dens':>5s} {'ours':>7s} {'ours-dn':>7s} {'t-dense':>7s} {'t-csr':>7s} {'t-bsr':>7s} {'sp-csr':>7s} {'vs dense':>8s} {'vs t-sp':>8s} {'ideal':>6s}"
    print(header)
    for label, (k, n) in shapes.items():
        x = rng.standard_normal((TOKENS, k)).astype("float32")
        xt = torch.from_numpy(x)
        dense_w = rng.standard_normal((n, k)).astype("float32")
        t_torch_dense = median_seconds(
            lambda: torch.nn.functional.linear(xt, torch.from_numpy(dense_w))
        )
        ours_dense = TVMKernel(x, dense_w, (16, k)).time()
        for block in BLOCKS:
            for density in densities:
                w = prune_weight(dense_w, f"block:{block[0]}x{block[1]}", density)
                kernel = TVMKernel(x, w, block)
                kernel()
                np.testing.assert_allclose(kernel.result(), x @ w.T, rtol=1e-3, atol=1e-3)
                t_ours = kernel.time()
                wt = torch.from_numpy(w)
                csr = wt.to_sparse_csr()
                t_csr = median_seconds(lambda: torch.sparse.mm(csr, xt.T))
                t_bsr = float("nan")
                if block[0] == block[1] and block[0] > 1:
                    bsr = wt.to_sparse_bsr(block)
                    t_bsr = median_seconds(lambda: torch.sparse.mm(bsr, xt.T))
                sp = scipy.sparse.csr_matrix(w)
                t_scipy = median_seconds(lambda: sp @ x.T)
                best_torch_sparse = np.nanmin([t_csr, t_bsr])
                print(
                    f"{label:18s} {block[0]}x{block[1]:<4d} {density:5.2f} {t_ours * 1e3:7.3f} {ours_dense * 1e3:7.3f} "
                    f"{t_torch_dense * 1e3:7.3f} {t_csr * 1e3:7.3f} {t_bsr * 1e3:7.3f} {t_scipy * 1e3:7.3f} "
                    f"{t_torch_dense / t_ours:7.2f}x {best_torch_sparse / t_ours:7.2f}x {1 / density:5.1f}x",
                    flush=True,
                )


if __name__ == "__main__":
    use_available_cpus()  # TVM's thread pool on every CPU, as tvm_sparse.build() sets it
    main()
