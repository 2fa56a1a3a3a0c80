"""The host's vector ISA as the kernel generators need it: register width and count.

The kernels keep a register tile of accumulators (``rows x block rows``
float32 values); how many fit depends on the ISA: AVX-512 has 32 registers of
16 floats, AVX2 16 registers of 8. The generators' default tile sizes are
chosen per ISA from these numbers (:meth:`BSRKernelParams.default`).
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm.target.codegen import llvm_get_system_cpu, target_has_features


@dataclass(frozen=True)
class VectorISA:
    """A SIMD register file: ``lanes`` float32 per register, ``registers`` of them."""

    name: str
    lanes: int
    registers: int

    def registers_for(self, values: int) -> int:
        """Registers holding ``values`` float32 values."""
        return -(-values // self.lanes)


AVX512 = VectorISA("avx512", 16, 32)
AVX2 = VectorISA("avx2", 8, 16)
SSE = VectorISA("sse", 4, 16)


def vector_isa(target: tvm.target.Target | None = None) -> VectorISA:
    """The vector ISA of ``target`` (default: the current target, else the host)."""
    target = (
        target
        or tvm.target.Target.current(allow_none=True)
        or tvm.target.Target({"kind": "llvm", "mcpu": llvm_get_system_cpu()})
    )
    if str(target.kind.name) != "llvm":
        return SSE
    if target_has_features("avx512f", target):
        return AVX512
    if target_has_features("avx2", target) and target_has_features("fma", target):
        return AVX2
    return SSE
