"""Code generation for ``sparse-accel``: quantized device layers to instruction streams.

A layer is written in TIR and tensorized with the device's intrinsics (:mod:`.tir_layer`,
:mod:`.intrinsics`, :mod:`.lowering`), or emitted directly for the decomposed-convolution engine
(:mod:`.basis_program`, :mod:`.fused_program`); :mod:`.builder` assembles programs, :mod:`.layer` packs a
layer's header and program into the blob the runtime reads, :mod:`.quantize` is the post-training
quantization. Everything here stands on the hardware contract (:mod:`tvm_sparse.hw`).
"""
