"""``ShrinkChannels``: drop channels that pruning has made dead between two convolutions.

For a convolution ``producer`` whose output feeds only another convolution
``consumer`` (both NHWC, groups 1, constant float32 weights), a channel ``c`` is
dead when

* the producer's filter ``c`` is all zeros, its bias is zero (or absent) and
  its fused activation maps 0 to 0 (none or ReLU): the channel is identically
  zero, so the consumer's input channel ``c`` contributes nothing; or
* the consumer's weights for input channel ``c`` are all zeros: nobody reads
  the producer's channel ``c``.

Both filters and the consumer's input channels are removed, and the pair runs
the block kernel (dense or block-sparse, as the cost model says) on the
smaller weights. Results are identical (up to float reassociation). Run it
before ``SparsifyWeights`` and ``ConvKernels``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tvm
from tvm import relax

from ..analysis.cost_model import CPUCostModel
from ..analysis.report import layer_decision
from ..formats import BSRMatrix
from ..graph import ConvLayer, find_layers, use_counts, weight_names
from .conv import conv_weight_blocks
from .rewriter import conv_emitter, rewrite_layers


def dead_channels(producer: ConvLayer, consumer: ConvLayer) -> np.ndarray:
    """Boolean mask over the producer's output channels that can be removed."""
    zero_filter = ~producer.weight.reshape(producer.out_channels, -1).any(axis=1)
    if producer.bias is not None:
        zero_filter &= producer.bias == 0
    unread = ~consumer.weight.any(axis=(0, 1, 2))  # OHWI: input channels last
    return zero_filter | unread


def _chain_pairs(layers, uses) -> list[tuple[ConvLayer, ConvLayer]]:
    convs = [layer for layer in layers if isinstance(layer, ConvLayer)]
    pairs = []
    for consumer in convs:
        producer = next((c for c in convs if c.output_var.same_as(consumer.x)), None)
        if (
            producer is None
            or uses.get(producer.output_var, 0) != 1
            or not isinstance(producer.output_var, relax.DataflowVar)
        ):
            continue
        if any(
            layer.groups != 1
            or layer.x_shape is None
            or layer.out_shape is None
            or str(layer.weight.dtype) != "float32"
            for layer in (producer, consumer)
        ):
            continue
        pairs.append((producer, consumer))
    return pairs


#: The module attribute in which :class:`ShrinkChannels` records the channels it removed.
REMOVED_ATTR = "tvm_sparse.channels_removed"


@tvm.transform.module_pass(opt_level=0, name="ShrinkChannels")
class ShrinkChannels:
    """Remove dead channels between chained convolutions (see the module docstring)."""

    def __init__(self, min_speedup: float = 1.1):
        self.cost_model = CPUCostModel(min_speedup=min_speedup)

    def _emitter(self, layer: ConvLayer):
        _, choice, note = layer_decision(layer, self.cost_model)
        if choice.format == "bsr" and not note:
            return conv_emitter(
                layer, BSRMatrix.from_dense(layer.matrix(), choice.block_shape), "bsr_conv2d"
            )
        return conv_emitter(layer, conv_weight_blocks(layer), "conv2d")

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        names = weight_names(mod)
        removed: dict[str, int] = {}

        def plan(func):
            plans, absorbed = {}, set()
            taken: set = set()
            for producer, consumer in _chain_pairs(find_layers(func, names), use_counts(func)):
                dead = dead_channels(producer, consumer)
                if not dead.any() or dead.all() or id(producer) in taken or id(consumer) in taken:
                    continue
                keep = ~dead
                shrunk_producer = dataclasses.replace(
                    producer,
                    weight=np.ascontiguousarray(producer.weight[keep]),
                    bias=None if producer.bias is None else producer.bias[keep],
                    out_shape=(*producer.out_shape[:3], int(keep.sum())),
                )
                shrunk_consumer = dataclasses.replace(
                    consumer,
                    weight=np.ascontiguousarray(consumer.weight[..., keep]),
                    x_shape=(*consumer.x_shape[:3], int(keep.sum())),
                )
                plans[producer.output_var] = self._emitter(shrunk_producer)
                plans[consumer.output_var] = self._emitter(shrunk_consumer)
                absorbed.update(producer.absorbed_vars)
                absorbed.update(consumer.absorbed_vars)
                taken.update((id(producer), id(consumer)))
                removed[producer.name] = int(dead.sum())
            return plans, absorbed

        out = rewrite_layers(mod, plan, "channel shrinking")
        return out.with_attr(REMOVED_ATTR, {**channels_removed(mod), **removed}) if removed else out


def channels_removed(mod: tvm.IRModule) -> dict[str, int]:
    """What :class:`ShrinkChannels` removed from ``mod``: ``{producer layer name: channels removed}``
    (the module attribute ``tvm_sparse.channels_removed``; empty when it removed none)."""
    removed = mod.attrs.get(REMOVED_ATTR) if mod.attrs else None
    return {str(name): int(count) for name, count in (removed or {}).items()}
