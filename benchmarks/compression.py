"""Compression ratios of the ResNet-style and BERT-style models through prune -> quantize -> code.

For each model (built with onnx.helper, generated weights): magnitude pruning
(unstructured, load-balanced over 16 units) at the given density, then a
k-means codebook of the given bits, then Huffman coding of the codebook
indices and column gaps. Prints the per-stage bytes and the whole-model ratio
(Deep Compression reports 35x for AlexNet and 49x for VGG16, whose
fully-connected layers prune much further than these models' layers).

    python benchmarks/compression.py [--density 0.1] [--bits 4]
"""

from __future__ import annotations

import argparse
import time

from tvm_sparse.compress import compression_report
from tvm_sparse.prune import prune_onnx
from tvm_sparse.testing import bert_encoder, resnet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--bits", type=int, default=4)
    args = parser.parse_args()
    models = {
        "BERT-base encoder, 4 layers": bert_encoder(hidden=768, heads=12, ffn=3072, layers=4),
        "ResNet-50 (224)": resnet(),
    }
    for name, model in models.items():
        start = time.perf_counter()
        dense = compression_report(model).totals()["dense_bytes"]
        pruned, _ = prune_onnx(model, "unstructured", args.density, balanced_units=16)
        pruned_report = compression_report(pruned).totals()
        shared, _ = prune_onnx(model, "unstructured", args.density, codebook_bits=args.bits, balanced_units=16)
        report = compression_report(shared)
        total = report.totals()
        print(f"\n{name} (density {args.density}, {args.bits}-bit codebook, {time.perf_counter() - start:.0f} s)")
        print(f"  dense float32          {dense / 1e6:9.2f} MB")
        print(f"  pruned, CSR            {pruned_report['sparse_bytes'] / 1e6:9.2f} MB  {dense / pruned_report['sparse_bytes']:6.1f}x")
        print(f"  + codebook             {total['quantized_bytes'] / 1e6:9.2f} MB  {dense / total['quantized_bytes']:6.1f}x")
        print(f"  + Huffman              {total['coded_bytes'] / 1e6:9.2f} MB  {total['compression_ratio']:6.1f}x")


if __name__ == "__main__":
    main()
