"""Compression next to the pruner: weight sharing, local quantization, entropy coding, load-balanced
pruning, the report."""

from .balanced import imbalance, prune_balanced
from .codebook import Codebook, codebook_quantize, shared_values
from .huffman import HuffmanCoded, decode, encode
from .local import BlockQuantized, quantize_blocks
from .report import CompressionReport, LayerCompression, compression_report

__all__ = [
    "BlockQuantized",
    "Codebook",
    "CompressionReport",
    "HuffmanCoded",
    "LayerCompression",
    "codebook_quantize",
    "compression_report",
    "decode",
    "encode",
    "imbalance",
    "prune_balanced",
    "quantize_blocks",
    "shared_values",
]
