"""Whole pruned models on the CPU: tvm-sparse vs onnxruntime on the same pruned ONNX model.

* a BERT-base-style encoder (hidden 768, 12 heads, FFN 3072, 128 tokens, 4
  layers) with every projection and FFN weight 90% block-sparse (16x1 or 8x8);
* ResNet-50 (bottlenecks 3-4-6-3) with its 3x3 convolutions decomposed (rank 4,
  80% of the coefficients pruned) or all convolutions pruned to 16x16 channel
  blocks at density 0.1.

fp32, 2 threads, one process; the best of 3 alternating rounds of medians
(``dense_models.compare``); outputs checked against onnxruntime. Run: ``python benchmarks/sparse_models.py
[--image 112] [--layers 4]``.
"""

from __future__ import annotations

import argparse

import numpy as np
from dense_models import compare

from tvm_sparse.prune import prune_onnx
from tvm_sparse.testing import bert_encoder, resnet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=int, default=112)
    parser.add_argument("--layers", type=int, default=4)
    opts = parser.parse_args()
    rng = np.random.default_rng(0)
    bert = bert_encoder(hidden=768, heads=12, ffn=3072, seq=128, layers=opts.layers)
    x = rng.standard_normal((1, 128, 768)).astype("float32")
    for block in ("16x1", "8x8"):
        compare(
            f"BERT-base encoder ({opts.layers} layers), {block} blocks at density 0.1",
            prune_onnx(bert, f"block:{block}", 0.1)[0],
            x,
            sparsify=True,
        )
    cnn = resnet(image=opts.image)
    x = rng.standard_normal((1, 3, opts.image, opts.image)).astype("float32")
    compare(
        f"ResNet-50 ({opts.image}x{opts.image}), 3x3 convs decomposed rank 4, 80% coefficients pruned",
        prune_onnx(cnn, "decompose:rank=4,coef-density=0.2")[0],
        x,
        sparsify=True,
    )
    compare(
        f"ResNet-50 ({opts.image}x{opts.image}), 16x16 channel blocks at density 0.1",
        prune_onnx(cnn, "block:16x16", 0.1)[0],
        x,
        sparsify=True,
    )


if __name__ == "__main__":
    main()
