"""The ``sparse-accel`` device as a Relax backend, in TVM's BYOC shape.

1. :func:`partition_for_sparse_accel`: the pattern table (:mod:`.patterns`) with ``FuseOpsByPattern``
   groups each device layer (and each decomposed convolution the engine runs) into a ``Codegen:
   "sparse_accel"`` function, checked against one :class:`DevicePlan` of the module.
2. :func:`run_codegen`: quantize -> encode -> tile -> emit each group (:mod:`.layers`, on the program
   emitters of :mod:`tvm_sparse.codegen`), replacing its call by the device runtime's entry point.

Neither keeps state: results are the returned module and :class:`DeviceCodegen`.
"""

from .codegen import DeviceCodegen, run_codegen
from .patterns import CODEGEN, partition_for_sparse_accel, pattern_table
from .plan import DevicePlan, EnginePair, Placement

__all__ = [
    "CODEGEN",
    "DeviceCodegen",
    "DevicePlan",
    "EnginePair",
    "Placement",
    "partition_for_sparse_accel",
    "pattern_table",
    "run_codegen",
]
