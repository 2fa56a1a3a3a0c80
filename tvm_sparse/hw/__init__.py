"""The hardware contract of ``sparse-accel``: what the compiler emits and the simulator (or a real device)
executes, with no TVM in it.

* :mod:`.device`: the device description (PE array, buffers, sparse modes, energies) and its validation;
* :mod:`.isa`: the instruction set, programs and their binary and text forms;
* :mod:`.encoding`: weight, metadata and activation encodings (block, N:M, shared weights, run lengths);
* :mod:`.integer`: the integer semantics (int32 wrap, rounding shift, requantization), defined once.

It imports numpy, the project's errors and its data directory only; ``tvm_sparse.sim`` imports nothing
else of the project.
"""
