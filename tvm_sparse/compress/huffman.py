"""Huffman coding (Deep Compression's last stage, Cambricon-S's entropy encoding), canonical form.

``encode`` returns the coded bytes and the code lengths; ``decode`` rebuilds
the canonical code from the lengths alone and reads the symbols back, so the
coded size reported is what a decoder needs (payload plus one length per
symbol), not an estimate.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class HuffmanCoded:
    payload: bytes
    bit_count: int
    count: int  # symbols coded
    lengths: dict  # symbol -> code length in bits

    @property
    def nbytes(self) -> int:
        """Payload plus the code table: per symbol present, the symbol (as many bytes as the largest needs)
        and one byte of code length."""
        if not self.lengths:
            return len(self.payload)
        symbol_bytes = max(1, -(-max(abs(s) for s in self.lengths).bit_length() // 8))
        return len(self.payload) + (symbol_bytes + 1) * len(self.lengths)


def _code_lengths(symbols: np.ndarray) -> dict:
    values, counts = np.unique(symbols, return_counts=True)
    if len(values) == 1:
        return {int(values[0]): 1}
    heap = [(int(c), i, (int(v),)) for i, (v, c) in enumerate(zip(values, counts))]
    heapq.heapify(heap)
    lengths = {int(v): 0 for v in values}
    tie = len(heap)
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
        tie += 1
    return lengths


def _canonical(lengths: dict) -> dict:
    """symbol -> (code, length), codes assigned in (length, symbol) order."""
    code, previous, table = 0, 0, {}
    for symbol, length in sorted(lengths.items(), key=lambda item: (item[1], item[0])):
        code <<= length - previous
        table[symbol] = (code, length)
        code, previous = code + 1, length
    return table


def encode(symbols) -> HuffmanCoded:
    symbols = np.asarray(symbols).ravel()
    if symbols.size == 0:
        return HuffmanCoded(b"", 0, 0, {})
    lengths = _code_lengths(symbols)
    table = _canonical(lengths)
    keys = np.array(sorted(table))
    slot = np.searchsorted(keys, symbols)
    code = np.array([table[k][0] for k in keys], np.int64)[slot]
    length = np.array([table[k][1] for k in keys], np.int64)[slot]
    starts = np.cumsum(length) - length
    bits = np.zeros(int(length.sum()), np.uint8)
    for j in range(int(length.max())):  # the j-th bit of every code at once
        has = j < length
        bits[starts[has] + j] = (code[has] >> (length[has] - 1 - j)) & 1
    return HuffmanCoded(np.packbits(bits).tobytes(), int(bits.size), int(symbols.size), lengths)


def decode(coded: HuffmanCoded) -> np.ndarray:
    if coded.count == 0:
        return np.zeros(0, np.int64)
    lookup = {
        (length, code): symbol for symbol, (code, length) in _canonical(coded.lengths).items()
    }
    bits = np.unpackbits(np.frombuffer(coded.payload, np.uint8))[: coded.bit_count]
    out, code, length = [], 0, 0
    for bit in bits:
        code, length = (code << 1) | int(bit), length + 1
        symbol = lookup.get((length, code))
        if symbol is not None:
            out.append(symbol)
            code, length = 0, 0
    if len(out) != coded.count or length:
        raise ValueError(f"Huffman stream decodes to {len(out)} symbols, expected {coded.count}")
    return np.array(out, np.int64)
