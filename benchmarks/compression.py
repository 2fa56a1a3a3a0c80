"""Compression ratios of the ResNet-style and BERT-style models through prune -> quantize -> code.

For each model (built with onnx.helper, generated weights): magnitude pruning
(unstructured, load-balanced over 16 units) at the given density, then a
k-means codebook of the given bits, then Huffman coding of the codebook
indices and column gaps; and 16x16 block pruning with local quantization (8-bit
values, a scale per block). Prints the per-stage bytes and the whole-model ratio
(Deep Compression reports 35x for AlexNet and 49x for VGG16, whose
fully-connected layers prune much further than these models' layers).

Then the device side: the BERT-style encoder pruned to 2:4 and to 16x16
blocks at density 0.1, with a 4-bit codebook, compiled for ``sparse-accel``
(weight tiles loaded as 4-bit indices through its shared-weight table) and
for the same device without the table (int8 weight loads), simulated on the
same input: DRAM bytes, cycles and energy of the device layers, and each
build's agreement with onnxruntime.

Last, the CPU side: the BERT-base FFN GEMMs (128 tokens) pruned to 16x1 and
8x8 blocks at density 0.1 with a 4-bit codebook, the block kernel with float
values against the one that stores uint8 indices and decodes them through
the codebook (``SparsifyWeights(shared_weights=True)``), timed side by side.

    python benchmarks/compression.py [--density 0.1] [--bits 4] [--device-layers 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
import tvm
from accel_models import simulate  # this directory's device benchmark

from tvm_sparse import accel
from tvm_sparse.compress import codebook_quantize, compression_report
from tvm_sparse.formats import BSRMatrix
from tvm_sparse.kernels.bsr_matmul import BSRKernelArgs, bsr_matmul_kernel
from tvm_sparse.kernels.codebook_decode import codebook_decode_kernel
from tvm_sparse.prune import parse_pattern, prune_onnx
from tvm_sparse.prune.magnitude import prune_weight
from tvm_sparse.target import host_target
from tvm_sparse.testing import bert_encoder, median_seconds, resnet


def simulate_against_onnxruntime(model, device, x: np.ndarray) -> tuple[dict, float]:
    """The device report of one run and the cosine similarity of the output with onnxruntime's."""
    out, report, _, _ = simulate(model, device, x)
    reference = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    ).run(None, {"x": x})[0]
    return report, float((out * reference).sum() / np.linalg.norm(out) / np.linalg.norm(reference))


def device_gain(layers: int) -> None:
    """Codebook weights on sparse-accel, with and without its shared-weight table."""
    doc = accel.load_device("sparse-accel").to_dict()
    del doc["sparse_modes"]["weight_sharing"]
    doc["name"] = "sparse-accel (no weight table)"
    plain_device = accel.Device.from_dict(doc)
    model = bert_encoder(hidden=768, heads=12, ffn=3072, seq=128, layers=layers)
    x = np.random.default_rng(0).standard_normal((1, 128, 768)).astype("float32")
    print(f"\nBERT-base encoder ({layers} layers) on the simulated device, 4-bit codebook weights")
    for label, pattern, density in (
        ("2:4", "nm:2:4", None),
        ("16x16 blocks, density 0.1", "block:16x16", 0.1),
    ):
        model_cb, _ = prune_onnx(model, pattern, density, codebook_bits=4)
        shared, shared_cos = simulate_against_onnxruntime(model_cb, "sparse-accel", x)
        plain, plain_cos = simulate_against_onnxruntime(model_cb, plain_device, x)

        def totals(report):
            device = [layer for layer in report["layers"] if layer["runs_on"] == "device"]
            return (
                sum(
                    layer["dram_read_bytes"] + layer["dram_read_metadata_bytes"] for layer in device
                ),
                report["total_cycles"],
                report["total_energy_pj"],
            )

        (plain_bytes, plain_cycles, plain_energy), (shared_bytes, shared_cycles, shared_energy) = (
            totals(plain),
            totals(shared),
        )
        tabled = sum(layer.get("mode", "").endswith("+table") for layer in shared["layers"])
        print(
            f"  {label}: {tabled} layers use the table | DRAM reads {plain_bytes / 1e6:.2f} -> {shared_bytes / 1e6:.2f} MB "
            f"({plain_bytes / shared_bytes:.2f}x less) | cycles {plain_cycles} -> {shared_cycles} ({plain_cycles / shared_cycles:.2f}x) | "
            f"energy {plain_energy / 1e6:.1f} -> {shared_energy / 1e6:.1f} uJ ({plain_energy / shared_energy:.2f}x) | "
            f"cosine vs onnxruntime {plain_cos:.4f} (int8 loads) / {shared_cos:.4f} (table)",
            flush=True,
        )


def cpu_kernels(bits: int) -> None:
    """The block kernel on float values vs on codebook indices, on the BERT-base FFN shapes."""
    rng = np.random.default_rng(0)
    target = host_target()
    print(
        f"\nCPU block kernel, {bits}-bit codebook weights, 128 tokens: float values vs uint8 indices + codebook"
    )
    for k, n in ((768, 3072), (3072, 768)):
        for block in ((16, 1), (8, 8)):
            weight = prune_weight(
                rng.standard_normal((n, k)).astype("float32"),
                parse_pattern(f"block:{block[0]}x{block[1]}"),
                0.1,
            )
            bsr = BSRMatrix.from_dense(codebook_quantize(weight, bits).dequantize(), block)
            x = rng.standard_normal((128, k)).astype("float32")
            kernel = tvm.tirx.build(bsr_matmul_kernel(128, bsr), target=target)
            plain, shared = BSRKernelArgs.from_bsr(bsr), BSRKernelArgs.from_bsr(bsr, shared=True)
            decode = tvm.tirx.build(
                codebook_decode_kernel(shared.data.shape, shared.codebook.size), target=target
            )
            tensors = [
                tvm.runtime.tensor(a)
                for a in (x, plain.data, plain.indices, plain.indptr, np.zeros(n, "float32"))
            ]
            codes, codebook = tvm.runtime.tensor(shared.data), tvm.runtime.tensor(shared.codebook)
            decoded = tvm.runtime.tensor(np.zeros(plain.data.shape, "float32"))
            y = tvm.runtime.tensor(np.zeros((128, n), "float32"))

            def float_values():
                kernel(*tensors, y)

            def decode_then_kernel():
                decode(codes, codebook, decoded)
                kernel(tensors[0], decoded, *tensors[2:], y)

            decode_then_kernel()
            np.testing.assert_allclose(y.numpy(), x @ bsr.to_dense().T, rtol=1e-4, atol=1e-4)
            times = {f: [] for f in (float_values, decode_then_kernel)}
            for _ in range(7):  # alternate: 7 rounds of 20 calls each, the median round counts
                for f, rounds in times.items():
                    rounds.append(median_seconds(f, repeat=20, warmup=1))
            runs = {
                False: (float(np.median(times[float_values])), plain.data.nbytes),
                True: (
                    float(np.median(times[decode_then_kernel])),
                    shared.data.nbytes + shared.codebook.nbytes,
                ),
            }
            (plain_s, plain_bytes), (shared_s, shared_bytes) = runs[False], runs[True]
            print(
                f"  {k}->{n} {block[0]}x{block[1]}: weight values {plain_bytes / 1e6:.2f} -> {shared_bytes / 1e6:.2f} MB "
                f"({plain_bytes / shared_bytes:.1f}x smaller) | {plain_s * 1e3:.3f} -> {shared_s * 1e3:.3f} ms "
                f"(decode + kernel take {shared_s / plain_s:.2f}x the time)",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument(
        "--device-layers",
        type=int,
        default=2,
        help="encoder layers of the device comparison (0: skip it)",
    )
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
        shared, _ = prune_onnx(
            model, "unstructured", args.density, codebook_bits=args.bits, balanced_units=16
        )
        report = compression_report(shared)
        total = report.totals()
        print(
            f"\n{name} (density {args.density}, {args.bits}-bit codebook, {time.perf_counter() - start:.0f} s)"
        )
        print(f"  dense float32          {dense / 1e6:9.2f} MB")
        print(
            f"  pruned, CSR            {pruned_report['sparse_bytes'] / 1e6:9.2f} MB  {dense / pruned_report['sparse_bytes']:6.1f}x"
        )
        print(
            f"  + codebook             {total['quantized_bytes'] / 1e6:9.2f} MB  {dense / total['quantized_bytes']:6.1f}x"
        )
        print(
            f"  + Huffman              {total['coded_bytes'] / 1e6:9.2f} MB  {total['compression_ratio']:6.1f}x"
        )
        local, _ = prune_onnx(model, "block:16x16", args.density, local_bits=8)
        local_total = compression_report(local).totals()
        print(
            f"  16x16 blocks, 8-bit with a scale per block (local quantization): {local_total['quantized_bytes'] / 1e6:.2f} MB "
            f"({dense / local_total['quantized_bytes']:.1f}x), Huffman {local_total['coded_bytes'] / 1e6:.2f} MB ({local_total['compression_ratio']:.1f}x)"
        )
    if args.device_layers:
        device_gain(args.device_layers)
    cpu_kernels(args.bits)


if __name__ == "__main__":
    main()
