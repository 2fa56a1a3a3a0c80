"""Bounded fuzzing of the instruction-stream decoder, the simulator and the ONNX import: malformed input is
an error that names the problem (ProgramError / DeviceFault / TVMSparseError), never a crash, a hang or
another exception. The examples are derandomized so that CI is reproducible; ``benchmarks/fuzz.py``
explores further."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tvm_sparse.accel import load_device
from tvm_sparse.codegen.gemm_program import gemm_program
from tvm_sparse.hw.isa import INSTRUCTION_BYTES, Program, ProgramError
from tvm_sparse.sim import DeviceFault, run

DEVICE = load_device("sparse-accel")


@pytest.fixture(scope="module")
def valid_program() -> bytes:
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, size=(8, 32)).astype(np.int8)
    w = rng.integers(-128, 128, size=(32, 16)).astype(np.int8)
    program, _ = gemm_program(
        x, w, np.zeros(16, np.int64), np.ones(16, np.int64), 4, DEVICE, relu=True
    )
    return program.to_bytes()


def _decode_and_run(data: bytes) -> None:
    try:
        program = Program.from_bytes(data)
    except ProgramError:
        return
    try:
        run(program, DEVICE)
    except (DeviceFault, ProgramError):
        pass


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.binary(max_size=600))
def test_random_bytes_never_crash_the_decoder(data):
    _decode_and_run(data)
    _decode_and_run(b"SPAX" + data)


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), min_size=1, max_size=4))
def test_corrupted_programs_fail_cleanly(valid_program, flips):
    data = bytearray(valid_program)
    meta_len = int.from_bytes(data[6:10], "little")
    code_start = 22 + meta_len
    count = int.from_bytes(data[10:14], "little")
    for position, bit in flips:  # flip bits inside the instruction stream
        data[code_start + position % (count * INSTRUCTION_BYTES)] ^= 1 << bit
    _decode_and_run(bytes(data))


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    from tvm_sparse.prune import prune_onnx
    from tvm_sparse.testing import mlp

    return prune_onnx(mlp(batch=4, sizes=(32, 16, 8)), "block:16x1", 0.5)[0].SerializeToString()


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), min_size=1, max_size=3))
def test_corrupted_onnx_models_fail_cleanly(onnx_bytes, flips):
    """Import + analysis of a corrupted model: it works, or a TVMSparseError says why."""
    import tvm_sparse
    from tvm_sparse.errors import TVMSparseError

    data = bytearray(onnx_bytes)
    for position, bit in flips:
        data[position % len(data)] ^= 1 << bit
    try:
        tvm_sparse.analyze(bytes(data))
    except TVMSparseError:
        pass


def test_input_without_a_rank_is_a_clear_error():
    """A graph input whose type carries no shape at all (found by the fuzzer above)."""
    import tvm_sparse
    from tvm_sparse.errors import ModelError
    from tvm_sparse.testing import mlp

    model = mlp(batch=4, sizes=(8, 4), gemm=True)
    model.graph.input[0].type.tensor_type.ClearField("shape")
    with pytest.raises(ModelError, match="input x: the model gives it no shape, not even a rank"):
        tvm_sparse.analyze(model)
