"""The compression report of a model: bytes of each weight at every stage of prune -> quantize -> code.

Per Gemm/MatMul/Conv weight, seen as its ``(out, in)`` matrix:

* ``dense_bytes``: float32, every value;
* ``sparse_bytes``: CSR, float32 nonzeros, 16-bit column indices (32-bit past
  65536 columns) and 32-bit row pointers;
* ``quantized_bytes``: the same with each nonzero a ``b``-bit codebook index
  plus the ``2^b``-entry float32 codebook, when the weight's nonzeros take at
  most 256 distinct values (a weight written by ``prune --quant codebook:b``);
  or, for a locally quantized weight (``prune --quant local:b``), each
  nonzero a ``b``-bit integer plus a float32 scale per stored block;
* ``coded_bytes``: the codebook indices (or integers, or float32 values) and the column
  gaps between consecutive nonzeros of a row Huffman-coded, with their code
  tables: the actual size of the coded streams, which :mod:`.huffman`
  decodes back exactly;
* ``ratio``: dense over coded bytes. The model's ``compression_ratio`` is the
  total dense bytes over the total coded bytes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from ..onnx_weights import local_quantization, read_onnx, weight_matrices
from . import huffman
from .local import quantize_blocks


@dataclass
class LayerCompression:
    name: str
    shape: tuple
    density: float
    codebook_bits: int | None
    dense_bytes: int
    sparse_bytes: int
    quantized_bytes: int
    coded_bytes: int
    local_bits: int | None = None  # bits of a locally quantized weight (a scale per block)

    @property
    def ratio(self) -> float:
        return self.dense_bytes / max(self.coded_bytes, 1)


def _codebook_bits(distinct: int) -> int | None:
    """Bits of the codebook ``distinct`` nonzero values fit (None: more than 256, not a codebook)."""
    return None if distinct > 256 else max(1, int(np.ceil(np.log2(max(distinct, 2)))))


def layer_compression(
    name: str, matrix: np.ndarray, local: tuple[int, tuple[int, int]] | None = None
) -> LayerCompression:
    """``local``: the ``(bits, block shape)`` of a locally quantized weight."""
    rows, cols = matrix.shape
    mask = matrix != 0
    nnz = int(mask.sum())
    index_bytes = 2 if cols <= 1 << 16 else 4
    structure = nnz * index_bytes + (rows + 1) * 4
    sparse = nnz * 4 + structure
    bits = local_bits = None
    if local is not None:
        local_bits, block = local
        blocks = quantize_blocks(matrix, block, local_bits)
        scales = blocks.stored_blocks * 4
        quantized = -(-nnz * local_bits // 8) + scales + structure
        value_stream = (
            huffman.encode(blocks.codes[mask].astype(np.int64) + (1 << (local_bits - 1))).nbytes
            + scales
        )
    else:
        table, symbols = np.unique(
            matrix[mask], return_inverse=True
        )  # nonzeros row-major, as the CSR stores them
        bits = _codebook_bits(len(table))
        if bits is None:
            quantized = sparse
            value_stream = nnz * 4
        else:
            quantized = -(-nnz * bits // 8) + (1 << bits) * 4 + structure
            value_stream = huffman.encode(symbols).nbytes + len(table) * 4
    columns = np.nonzero(mask)[1]
    per_row = mask.sum(axis=1)
    gaps = np.diff(np.r_[0, columns])  # gap to the previous nonzero, restarting at each row
    row_first = np.r_[0, np.cumsum(per_row)[:-1]][per_row > 0]
    gaps[row_first] = columns[row_first]
    coded = value_stream + huffman.encode(gaps).nbytes + (rows + 1) * 4
    return LayerCompression(
        name,
        (rows, cols),
        nnz / matrix.size,
        bits,
        matrix.size * 4,
        sparse,
        quantized,
        coded,
        local_bits,
    )


@dataclass
class CompressionReport:
    layers: list

    def totals(self) -> dict:
        keys = ("dense_bytes", "sparse_bytes", "quantized_bytes", "coded_bytes")
        total = {k: sum(getattr(layer, k) for layer in self.layers) for k in keys}
        total["compression_ratio"] = total["dense_bytes"] / max(total["coded_bytes"], 1)
        return total

    def to_dict(self) -> dict:
        layers = [
            {**asdict(layer), "shape": list(layer.shape), "ratio": layer.ratio}
            for layer in self.layers
        ]
        return {"layers": layers, **self.totals()}

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def to_table(self) -> str:
        width = max([28] + [len(layer.name) for layer in self.layers])  # whole names
        rows = [
            f"{'layer':{width}s} {'shape':>12s} {'density':>8s} {'quant.':>8s} {'dense':>11s} {'sparse':>11s} {'quantized':>11s} {'coded':>11s} {'ratio':>7s}"
        ]
        for layer in self.layers:
            shape = "x".join(map(str, layer.shape))
            bits = (
                f"{layer.codebook_bits}-bit"
                if layer.codebook_bits
                else f"local {layer.local_bits}"
                if layer.local_bits
                else "-"
            )
            rows.append(
                f"{layer.name:{width}s} {shape:>12s} {layer.density:8.3f} {bits:>8s} {layer.dense_bytes:11d} {layer.sparse_bytes:11d} "
                f"{layer.quantized_bytes:11d} {layer.coded_bytes:11d} {layer.ratio:6.1f}x"
            )
        t = self.totals()
        rows.append(
            f"{'model':{width}s} {'':>12s} {'':>8s} {'':>8s} {t['dense_bytes']:11d} {t['sparse_bytes']:11d} {t['quantized_bytes']:11d} "
            f"{t['coded_bytes']:11d} {t['compression_ratio']:6.1f}x"
        )
        return "\n".join(rows)


def compression_report(model) -> CompressionReport:
    """The report of every Gemm/MatMul/Conv weight of an ONNX model (path, bytes or ModelProto)."""
    model = read_onnx(model)
    local = local_quantization(model)
    return CompressionReport(
        [
            layer_compression(name, matrix, local.get(name))
            for name, matrix in weight_matrices(model).items()
        ]
    )
