"""Compression: codebook round trips, Huffman streams decoded back exactly, balanced pruning invariants,
the report's byte counts, and pruned + codebook models that compute with exactly the quantized weights."""

import json

import numpy as np
import onnx
import pytest
from conftest import run_onnxruntime
from hypothesis import given, settings
from hypothesis import strategies as st

from tvm_sparse.cli import main
from tvm_sparse.compress import (
    codebook_quantize,
    compression_report,
    decode,
    encode,
    imbalance,
    prune_balanced,
    quantize_blocks,
    shared_values,
)
from tvm_sparse.compress.report import layer_compression
from tvm_sparse.formats import FormatError
from tvm_sparse.onnx_weights import weight_matrices
from tvm_sparse.prune import prune_onnx, prune_unstructured
from tvm_sparse.testing import mlp


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_codebook_round_trip(rng, bits):
    w = prune_unstructured(rng.standard_normal((64, 96)).astype("float32"), 0.2)
    book = codebook_quantize(w, bits)
    shared = book.dequantize()
    assert np.array_equal(shared != 0, w != 0)  # pruned zeros stay zeros, nonzeros stay nonzero
    assert len(book.values) == 1 << bits and set(np.unique(shared[shared != 0])) <= set(book.values)
    assert np.array_equal(shared[w != 0], book.values[book.indices])
    nearest = np.abs(w[w != 0][:, None] - book.values[None, :]).argmin(
        axis=1
    )  # k-means: each weight at its nearest value
    assert np.array_equal(book.values[nearest], shared[w != 0])


def test_codebook_error_falls_with_bits(rng):
    w = prune_unstructured(rng.standard_normal((128, 128)).astype("float32"), 0.3)
    errors = [np.linalg.norm(codebook_quantize(w, b).dequantize() - w) for b in (1, 2, 4, 6, 8)]
    assert all(a > b for a, b in zip(errors, errors[1:]))
    with pytest.raises(FormatError, match="codebook bits"):
        codebook_quantize(w, 9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=0, max_size=400), st.integers(0, 3))
def test_huffman_decodes_back_exactly(symbols, skew):
    data = np.array(symbols, np.int64) // (1 + skew)
    coded = encode(data)
    assert np.array_equal(decode(coded), data)
    if data.size:
        assert coded.bit_count <= data.size * max(
            1, int(np.ceil(np.log2(np.unique(data).size + 1)))
        )  # no worse than fixed-length


def test_huffman_size_follows_the_entropy(rng):
    skewed = rng.choice(16, size=20000, p=np.r_[0.5, np.full(15, 0.5 / 15)])
    coded = encode(skewed)
    p = np.bincount(skewed, minlength=16) / skewed.size
    entropy = -(p[p > 0] * np.log2(p[p > 0])).sum()
    assert entropy <= coded.bit_count / skewed.size < entropy + 1  # Huffman's bound
    assert np.array_equal(decode(coded), skewed)


def test_balanced_pruning_keeps_the_same_count_per_unit(rng):
    w = (
        rng.standard_normal((64, 48)) * np.linspace(0.1, 3, 64)[:, None]
    )  # some rows much larger: plain pruning is unbalanced
    plain = prune_unstructured(w, 0.25)
    balanced = prune_balanced(w, 0.25, 8)
    counts = [np.count_nonzero(balanced[u::8]) for u in range(8)]
    assert len(set(counts)) == 1 and sum(counts) == round(0.25 * w.size)
    assert imbalance(balanced, 8) == 1.0 < imbalance(plain, 8)
    for u in range(8):  # within a unit, the kept weights are its largest
        part, kept = np.abs(w[u::8]), balanced[u::8] != 0
        assert part[kept].min() >= part[~kept].max()
    uneven = prune_balanced(w, 0.25, 5)  # 64 rows on 5 units: 13 or 12 rows each, 25% of each kept
    assert [np.count_nonzero(uneven[u::5]) for u in range(5)] == [
        round(0.25 * w[u::5].size) for u in range(5)
    ]
    with pytest.raises(FormatError, match="positive integer"):
        prune_balanced(w, 0.25, 0)


def test_report_counts_each_stage(rng):
    w = prune_unstructured(rng.standard_normal((32, 64)).astype("float32"), 0.25)
    nnz = np.count_nonzero(w)
    plain = layer_compression("w", w)
    assert (
        plain.dense_bytes == w.size * 4
        and plain.sparse_bytes == nnz * 6 + 33 * 4
        and plain.codebook_bits is None
    )
    shared = codebook_quantize(w, 4).dequantize()
    quantized = layer_compression("w", shared)
    assert (
        quantized.codebook_bits == 4
        and quantized.quantized_bytes == nnz // 2 + 16 * 4 + nnz * 2 + 33 * 4
    )
    assert (
        quantized.coded_bytes < quantized.quantized_bytes < plain.sparse_bytes < plain.dense_bytes
    )


def test_pruned_codebook_model_computes_with_the_quantized_weights(tmp_path, rng, capsys):
    model = mlp(batch=4, sizes=(64, 128, 32))
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    out = tmp_path / "p.onnx"
    assert (
        main(
            [
                "prune",
                str(path),
                "-o",
                str(out),
                "--pattern",
                "unstructured",
                "--density",
                "0.25",
                "--quant",
                "codebook:4",
                "--balanced",
                "16",
            ]
        )
        == 0
    )
    assert "codebook 4-bit" in capsys.readouterr().out
    pruned = onnx.load(out)
    weights = weight_matrices(pruned)
    for w in weights.values():
        assert np.unique(w[w != 0]).size <= 16 and imbalance(w, 16) == 1.0
    x = rng.standard_normal((4, 64)).astype("float32")
    biases = {
        t.name: onnx.numpy_helper.to_array(t)
        for t in pruned.graph.initializer
        if t.name.endswith(".bias")
    }
    h = np.maximum(
        x @ weights["fc0"].T + biases["fc0.bias"], 0
    )  # Gemm(transB=1): the matrix is (out, in)
    expected = h @ weights["fc1"].T + biases["fc1.bias"]
    np.testing.assert_allclose(run_onnxruntime(pruned, {"x": x})[0], expected, rtol=1e-5, atol=1e-5)

    assert main(["analyze", str(out), "--compression", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["compression_ratio"] == doc["dense_bytes"] / doc["coded_bytes"] > 8
    assert [layer["codebook_bits"] for layer in doc["layers"]] == [4, 4]
    assert compression_report(pruned).totals() == {k: v for k, v in doc.items() if k != "layers"}


def test_bad_compression_options(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(mlp(), path)
    for args, message in [
        (
            ["--pattern", "block:16x1", "--density", "0.5", "--balanced"],
            "balanced pruning applies to the unstructured",
        ),
        (
            ["--pattern", "unstructured", "--density", "0.5", "--quant", "codebook:9"],
            "codebook bits",
        ),
        (["--pattern", "unstructured", "--density", "0.5", "--quant", "kmeans"], "use codebook:B"),
        (
            ["--pattern", "unstructured", "--density", "0.5", "--quant", "local:8"],
            "each block of a block pattern its own scale",
        ),
        (
            ["--pattern", "block:16x16", "--density", "0.5", "--quant", "local:1"],
            "local quantization bits",
        ),
    ]:
        assert main(["prune", str(path), "-o", str(tmp_path / "o.onnx"), *args]) == 1
        assert message in capsys.readouterr().err


def test_analysis_reports_the_load_imbalance(tmp_path, capsys):
    model = mlp(batch=4, sizes=(64, 128, 32))
    plain, _ = prune_onnx(model, "unstructured", 0.2)
    balanced, _ = prune_onnx(model, "unstructured", 0.2, balanced_units=16)
    imbalances = []
    for m in (plain, balanced):
        onnx.save(m, tmp_path / "m.onnx")
        assert main(["analyze", str(tmp_path / "m.onnx"), "--json"]) == 0
        layers = json.loads(capsys.readouterr().out)["layers"]
        imbalances.append([layer["profile"]["imbalance_16_units"] for layer in layers])
    assert all(value > 1.0 for value in imbalances[0]) and imbalances[1] == [1.0, 1.0]


def test_shared_values_name_a_codebook_weight_with_uint8_indices(rng):
    weight = codebook_quantize(rng.standard_normal((64, 48)).astype("float32"), 4).dequantize()
    codebook, codes = shared_values(weight)
    assert codes.dtype == np.uint8 and codebook.size <= 17  # 16 shared values and the pruned zeros
    np.testing.assert_array_equal(codebook[codes], weight)
    assert shared_values(rng.standard_normal(300).astype("float32")) is None  # 300 distinct values


def test_local_quantization_scales_each_block(rng):
    blocks = rng.standard_normal((4, 4)).astype("float32") * 10.0 ** rng.integers(
        -2, 2, size=(4, 4)
    )  # ranges differ per block
    weight = np.kron(blocks, np.ones((16, 16), np.float32)) * rng.standard_normal((64, 64)).astype(
        "float32"
    )
    weight[:16, :16] = 0  # an empty block stays empty
    local = quantize_blocks(weight, (16, 16), 4)
    assert local.stored_blocks == 15 and np.abs(local.codes).max() <= 7
    restored = local.dequantize()
    assert not restored[:16, :16].any()
    per_tensor_scale = np.abs(weight).max() / 7
    per_tensor = np.clip(np.rint(weight / per_tensor_scale), -7, 7) * per_tensor_scale

    def worst_block_error(approx):
        return max(
            np.linalg.norm(approx[i : i + 16, j : j + 16] - weight[i : i + 16, j : j + 16])
            / np.linalg.norm(weight[i : i + 16, j : j + 16])
            for i in range(0, 64, 16)
            for j in range(0, 64, 16)
            if i or j
        )

    assert (
        worst_block_error(restored) < 0.3 and worst_block_error(per_tensor) > 0.9
    )  # one scale rounds small blocks to 0
    np.testing.assert_array_equal(
        quantize_blocks(restored, (16, 16), 4).codes, local.codes
    )  # idempotent
    odd = quantize_blocks(weight[:50, :37], (16, 16), 8)  # blocks past the edge
    assert (
        odd.dequantize().shape == (50, 37)
        and np.abs(odd.dequantize() - weight[:50, :37]).max() <= np.abs(weight).max() / 127
    )


def test_locally_quantized_model_and_its_report(tmp_path, rng, capsys):
    model = mlp(batch=4, sizes=(64, 128, 32))
    onnx.save(model, tmp_path / "m.onnx")
    out = tmp_path / "p.onnx"
    assert (
        main(
            [
                "prune",
                str(tmp_path / "m.onnx"),
                "-o",
                str(out),
                "--pattern",
                "block:16x16",
                "--density",
                "0.5",
                "--quant",
                "local:4",
            ]
        )
        == 0
    )
    assert "4-bit values with a scale per 16x16 block" in capsys.readouterr().out
    pruned = onnx.load(out)
    weights = weight_matrices(pruned)
    x = rng.standard_normal((4, 64)).astype("float32")
    biases = {
        t.name: onnx.numpy_helper.to_array(t)
        for t in pruned.graph.initializer
        if t.name.endswith(".bias")
    }
    expected = (
        np.maximum(x @ weights["fc0"].T + biases["fc0.bias"], 0) @ weights["fc1"].T
        + biases["fc1.bias"]
    )
    np.testing.assert_allclose(run_onnxruntime(pruned, {"x": x})[0], expected, rtol=1e-5, atol=1e-5)
    assert main(["analyze", str(out), "--compression", "--json"]) == 0
    layers = json.loads(capsys.readouterr().out)["layers"]
    assert [layer["local_bits"] for layer in layers] == [4, 4]
    for layer, w in zip(layers, weights.values()):
        nnz, stored_blocks = (
            int(np.count_nonzero(w)),
            int(np.count_nonzero(quantize_blocks(w, (16, 16), 4).scales)),
        )
        structure = layer["sparse_bytes"] - 4 * nnz
        assert layer["quantized_bytes"] == -(-nnz * 4 // 8) + 4 * stored_blocks + structure
        assert layer["coded_bytes"] < layer["quantized_bytes"]
