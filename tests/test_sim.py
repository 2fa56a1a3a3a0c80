"""The simulator against a numpy integer reference, its faults, and the program formats."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvm_sparse.accel import load_device
from tvm_sparse.codegen.builder import ProgramBuilder
from tvm_sparse.hw.encoding import (
    code_values,
    pack_bits,
    pack_blocks,
    pack_nm,
    unpack_bits,
    weight_table,
)
from tvm_sparse.hw.isa import (
    AluOp,
    Buffer,
    Flag,
    Opcode,
    Program,
    ProgramError,
    Queue,
    disassemble,
)
from tvm_sparse.sim import DeviceFault, run

SYNC_LOAD = Flag.PUSH_NEXT
SYNC_COMPUTE_IN = Flag.POP_PREV


def requantize(acc, multiplier, shift):
    """The device's requantization in plain integer numpy: round half up, then saturate to int8."""
    scaled = acc.astype(np.int64) * multiplier
    return np.clip((scaled + (1 << (shift - 1))) >> shift, -128, 127)


def nm_weight(rng, k, n, keep=2, group=4):
    w = rng.integers(-128, 128, size=(k, n)).astype(np.int8)
    for g in range(k // group):
        for col in range(n):
            drop = rng.choice(group, group - keep, replace=False)
            w[g * group + drop, col] = 0
    return w


def block_weight(rng, k, n, block=(16, 16), density=0.3):
    mask = rng.random((k // block[0], n // block[1])) < density
    w = rng.integers(-128, 128, size=(k, n)).astype(np.int8)
    return (w * np.kron(mask, np.ones(block, np.int8))).astype(np.int8)


def gemm_program(x, w, mode, bias, multiplier, shift, relu, device="sparse-accel"):
    """One tile: load x, the (packed) weight, bias and multipliers; GEMM; bias, requant, ReLU; store int8."""
    m, k = x.shape
    n = w.shape[1]
    b = ProgramBuilder(device)
    b.layer("gemm")
    meta = b""
    if mode == Opcode.GEMM_NM:
        values, meta = pack_nm(w, 2, 4)
    elif mode == Opcode.GEMM_BLOCK:
        values, meta = pack_blocks(w, 16, 16, 16)
        values = values.reshape(-1, 16 * 16)
    else:
        values = w
    values = values.reshape(values.shape[0], -1) if values.size else np.zeros((1, 1), np.int8)
    x_addr, w_addr = b.place(x), b.place(values)
    params = b.place(np.stack([bias, multiplier]).astype(np.int32))
    out = b.reserve(m * n)
    b.load(Buffer.INP, 0, x_addr, m, k)
    b.load(Buffer.WGT, 0, w_addr, values.shape[0], values.shape[1])
    if meta:
        b.load(Buffer.META, 0, b.place(np.frombuffer(meta, np.uint8)), 1, len(meta))
    b.load(Buffer.ACC, m * n, params, 2, n, flags=SYNC_LOAD)
    b.gemm(mode, 0, 0, 0, m, k, n, flags=SYNC_COMPUTE_IN)
    b.alu(AluOp.ADD, 0, m, n, operand=m * n, row_operand=True)
    b.alu(AluOp.REQUANT, 0, m, n, operand=m * n + n, row_operand=True, shift=shift)
    if relu:
        b.alu(AluOp.MAX, 0, m, n, operand=0, flags=Flag.PUSH_NEXT)
    else:
        b.nop(Queue.COMPUTE, Flag.PUSH_NEXT)
    b.store(0, out, m, n, flags=Flag.POP_PREV)
    return b.build(), out


@pytest.mark.parametrize("mode", [Opcode.GEMM, Opcode.GEMM_NM, Opcode.GEMM_BLOCK])
@pytest.mark.parametrize("relu", [False, True])
def test_gemm_tile_matches_integer_reference(rng, mode, relu):
    m, k, n = 24, 64, 32
    x = rng.integers(-128, 128, size=(m, k)).astype(np.int8)
    w = {
        Opcode.GEMM: lambda: rng.integers(-128, 128, size=(k, n)).astype(np.int8),
        Opcode.GEMM_NM: lambda: nm_weight(rng, k, n),
        Opcode.GEMM_BLOCK: lambda: block_weight(rng, k, n),
    }[mode]()
    bias = rng.integers(-(2**20), 2**20, size=n)
    multiplier = rng.integers(1, 2**15, size=n)
    program, out = gemm_program(x, w, mode, bias, multiplier, shift=24, relu=relu)
    result = run(program)
    expected = requantize(x.astype(np.int64) @ w.astype(np.int64) + bias, multiplier, 24)
    expected = np.maximum(expected, 0) if relu else expected
    np.testing.assert_array_equal(result.read(out, (m, n), np.int8), expected)
    report = result.report
    assert report.total.macs_dense == m * k * n
    if mode == Opcode.GEMM_NM:
        assert report.total.macs_issued == m * k * n // 2


def coded_gemm_program(x, w, device="sparse-accel"):
    """Load the shared-weight table, then the weight as 4-bit indices (LOAD_CODED); int32 result."""
    (m, k), n = x.shape, w.shape[1]
    table = weight_table(w, 4)
    b = ProgramBuilder(device)
    x_addr, table_addr = b.place(x), b.place(table)
    codes_addr, out = (
        b.place(np.frombuffer(code_values(w, table, 4), np.uint8)),
        b.reserve(4 * m * n),
    )
    b.load(Buffer.TABLE, 0, table_addr, 1, table.size)
    b.load(Buffer.INP, 0, x_addr, m, k)
    b.load_coded(0, codes_addr, k, n, index_bits=4, flags=SYNC_LOAD)
    b.gemm(Opcode.GEMM, 0, 0, 0, m, k, n, flags=SYNC_COMPUTE_IN | Flag.PUSH_NEXT)
    b.store(0, out, m, n, int32=True, flags=Flag.POP_PREV)
    return b.build(), out


def test_coded_weight_load_expands_indices_through_the_table(rng):
    m, k, n = 8, 64, 32
    codebook = rng.choice(np.arange(-128, 128), 16, replace=False).astype(np.int8)
    w = codebook[rng.integers(0, 16, size=(k, n))]
    x = rng.integers(-128, 128, size=(m, k)).astype(np.int8)
    program, out = coded_gemm_program(x, w)
    result = run(program)
    np.testing.assert_array_equal(
        result.read(out, (m, n), np.int32), x.astype(np.int64) @ w.astype(np.int64)
    )
    weight_loads = [ins for ins in program.instructions if ins.opcode == Opcode.LOAD_CODED]
    assert (
        result.report.total.dram_read_bytes == m * k + k * n // 2
    )  # input bytes + 4 bits per weight
    assert result.report.total.dram_read_metadata_bytes == 16  # the table
    assert len(weight_loads) == 1 and "LOAD_CODED" in disassemble(
        Program.from_bytes(program.to_bytes())
    )


def test_coded_weight_loads_need_the_table(rng):
    w = np.tile(np.arange(16, dtype=np.int8), (16, 1))
    program, _ = coded_gemm_program(np.ones((2, 16), np.int8), w, device="sparse-accel-dense")
    with pytest.raises(DeviceFault, match="no weight-sharing table"):
        run(program)
    b = ProgramBuilder("sparse-accel")
    b.place(np.zeros(64, np.uint8))
    b.load_coded(0, 0, 16, 16, index_bits=3)
    with pytest.raises(DeviceFault, match="3-bit indices on a device with 4-bit"):
        run(b.build())
    with pytest.raises(ProgramError, match="not in the layer's shared-weight table"):
        code_values(np.array([5], np.int8), np.arange(4, dtype=np.int8), 2)
    assert weight_table(np.arange(17, dtype=np.int8), 4) is None


def test_requantization_saturates_and_rounds_half_up():
    acc = np.array([[2**31 - 1, -(2**31), 6, 7, -6, -7, 300 * 256, -300 * 256]], np.int32)
    b = ProgramBuilder("sparse-accel")
    addr, out = b.place(acc), b.reserve(acc.size)
    b.load(Buffer.ACC, 0, addr, 1, acc.size, flags=Flag.PUSH_NEXT)
    b.alu(AluOp.REQUANT, 0, 1, acc.size, operand=1, shift=2, flags=Flag.POP_PREV | Flag.PUSH_NEXT)
    b.store(0, out, 1, acc.size, flags=Flag.POP_PREV)
    got = run(b.build()).read(out, acc.shape, np.int8)
    np.testing.assert_array_equal(got, requantize(acc, 1, 2))
    np.testing.assert_array_equal(
        got[0, 2:6], [2, 2, -1, -2]
    )  # 1.5 -> 2, 1.75 -> 2, -1.5 -> -1, -1.75 -> -2


def test_int32_accumulators_wrap_like_hardware():
    acc = np.array([[2**31 - 1]], np.int32)
    b = ProgramBuilder("sparse-accel")
    addr, out = b.place(acc), b.reserve(4)
    b.load(Buffer.ACC, 0, addr, 1, 1, flags=Flag.PUSH_NEXT)
    b.alu(AluOp.ADD, 0, 1, 1, operand=1, flags=Flag.POP_PREV | Flag.PUSH_NEXT)
    b.store(0, out, 1, 1, int32=True, flags=Flag.POP_PREV)
    assert run(b.build()).read(out, (1,), np.int32)[0] == -(2**31)


def test_out_of_bounds_access_names_the_instruction():
    device = load_device("sparse-accel")
    b = ProgramBuilder("sparse-accel")
    addr = b.place(np.zeros(16, np.int8))
    b.load(Buffer.INP, device.buffers.input_bytes - 8, addr, 1, 16)
    with pytest.raises(DeviceFault, match=r"instruction 0 \(LOAD\): INP access .* outside"):
        run(b.build())
    b = ProgramBuilder("sparse-accel")
    b.place(np.zeros(16, np.int8))
    b.load(Buffer.INP, 0, 8, 2, 16)  # reads past the 16-byte image
    with pytest.raises(DeviceFault, match=r"instruction 0 \(LOAD\): DRAM access"):
        run(b.build())


def test_deadlock_is_reported_not_hung():
    b = ProgramBuilder("sparse-accel")
    b.nop(Queue.COMPUTE, Flag.POP_PREV)  # waits for a load token that never comes
    b.nop(Queue.LOAD, Flag.POP_NEXT)  # and the load queue waits for compute
    with pytest.raises(
        DeviceFault, match="deadlock.*load queue at instruction 1.*compute queue at instruction 0"
    ):
        run(b.build())


def test_mode_the_device_lacks_is_a_fault(rng):
    w = nm_weight(rng, 16, 16)
    program, _ = gemm_program(
        np.ones((2, 16), np.int8),
        w,
        Opcode.GEMM_NM,
        np.zeros(16),
        np.ones(16),
        1,
        False,
        device="sparse-accel-dense",
    )
    with pytest.raises(DeviceFault, match="has no N:M mode"):
        run(program)


def test_program_round_trips_and_disassembles(rng):
    x = rng.integers(-5, 5, size=(4, 16)).astype(np.int8)
    program, _ = gemm_program(
        x, nm_weight(rng, 16, 16), Opcode.GEMM_NM, np.zeros(16), np.ones(16), 1, True
    )
    data = program.to_bytes()
    again = Program.from_bytes(data)
    assert again.to_bytes() == data and again.tags == program.tags
    text = disassemble(again)
    assert "GEMM_NM" in text and "REQUANT" in text and "pop_prev" in text and "; gemm" in text
    assert len(text.splitlines()) == len(program.instructions) + 1


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d[:10], "shorter than"),
        (lambda d: b"XXXX" + d[4:], "bad magic"),
        (lambda d: d[:-1], "truncated"),
    ],
)
def test_malformed_programs_are_rejected(rng, mutate, message):
    program, _ = gemm_program(
        np.ones((2, 16), np.int8),
        np.ones((16, 16), np.int8),
        Opcode.GEMM,
        np.zeros(16),
        np.ones(16),
        1,
        False,
    )
    with pytest.raises(ProgramError, match=message):
        Program.from_bytes(mutate(program.to_bytes()))


def test_bad_instruction_bytes_name_the_index():
    b = ProgramBuilder("sparse-accel")
    b.nop(Queue.COMPUTE, Flag(0))
    b.nop(Queue.COMPUTE, Flag(0))
    data = bytearray(b.build().to_bytes())
    meta_len = int.from_bytes(data[6:10], "little")
    data[22 + meta_len + 32] = 99  # opcode of instruction 1
    with pytest.raises(ProgramError, match="instruction 1: unknown opcode 99"):
        Program.from_bytes(bytes(data))


def test_metadata_bit_packing_round_trips(rng):
    values = rng.integers(0, 4, size=1001)
    assert np.array_equal(
        unpack_bits(np.frombuffer(pack_bits(values, 2), np.uint8), 2, values.size), values
    )
    assert len(pack_bits(values, 2)) == -(-1001 * 2 // 8)


def test_report_and_timeline(rng):
    program, _ = gemm_program(
        np.ones((8, 16), np.int8),
        np.ones((16, 16), np.int8),
        Opcode.GEMM,
        np.zeros(16),
        np.ones(16),
        1,
        False,
    )
    report = run(program).report
    doc = json.loads(report.dumps())
    assert doc["cycles"] == report.total.cycles > 0
    assert set(doc["layers"]) == {"gemm"}
    assert doc["total"]["energy_pj"]["dram"] > 0
    assert doc["total"] == report.total.to_dict(report.device)
    with pytest.warns(DeprecationWarning, match=r"summary\(\) is deprecated: use to_dict"):
        assert report.total.summary(report.device) == doc["total"]
    trace = json.loads(report.chrome_trace())
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(spans) == len(program.instructions)
    assert "gemm" in report.to_table()


def test_model_trace_runs_layers_in_sequence():
    from tvm_sparse.accel.run_report import model_trace

    small = run(
        gemm_program(
            np.ones((8, 16), np.int8),
            np.ones((16, 16), np.int8),
            Opcode.GEMM,
            np.zeros(16),
            np.ones(16),
            1,
            False,
        )[0]
    ).report
    large = run(
        gemm_program(
            np.ones((64, 32), np.int8),
            np.ones((32, 32), np.int8),
            Opcode.GEMM,
            np.zeros(32),
            np.ones(32),
            1,
            False,
        )[0]
    ).report
    long_name = "encoder.layer.11.attention.output.dense_projection"
    trace = json.loads(
        json.dumps(
            model_trace(
                [("first", "dense", small), (long_name, "dense", large), ("third", "dense", small)]
            )
        )
    )
    events = trace["traceEvents"]
    tracks = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert tracks == {0: "load queue", 1: "compute queue", 2: "store queue", 3: "layers"}
    layers = [e for e in events if e["ph"] == "X" and e["tid"] == 3]
    assert [e["name"] for e in layers] == ["first", long_name, "third"]
    clock = small.device.clock_mhz
    assert layers[0]["ts"] == 0 and all(
        a["ts"] + a["dur"] == pytest.approx(b["ts"]) for a, b in zip(layers, layers[1:])
    )
    total_cycles = 2 * small.total.cycles + large.total.cycles
    assert layers[-1]["ts"] + layers[-1]["dur"] == pytest.approx(
        total_cycles / clock
    )  # microseconds of device time
    for layer in layers:  # each instruction inside its layer's span, on a queue track
        spans = [
            e
            for e in events
            if e["ph"] == "X"
            and e["tid"] < 3
            and layer["ts"] <= e["ts"] < layer["ts"] + layer["dur"]
        ]
        assert spans and all(e["ts"] + e["dur"] <= layer["ts"] + layer["dur"] + 1e-9 for e in spans)
    assert sum(e["ph"] == "X" and e["tid"] < 3 for e in events) == 2 * len(small.timeline) + len(
        large.timeline
    )
    large.layers[long_name] = large.layers.pop("gemm")
    assert long_name in large.to_table()  # names are not cut


def test_decomposed_convolution_matches_reference(rng):
    """ESCALATE on the device: coefficient GEMM, requantize, then the basis convolution."""
    height, width, c_in, c_out, basis, kernel = 6, 5, 8, 4, 3, 3
    x = rng.integers(-20, 20, size=(height, width, c_in)).astype(np.int8)
    coeff = rng.integers(-20, 20, size=(c_in, c_out * basis)).astype(
        np.int8
    )  # column r * c_out + o (basis-major)
    kernels = rng.integers(-8, 8, size=(basis, kernel, kernel)).astype(np.int8)
    b = ProgramBuilder("sparse-accel-escalate")
    b.layer("decomposed")
    x_addr, c_addr, k_addr = b.place(x), b.place(coeff), b.place(kernels)
    mult = b.place(np.ones((1, c_out * basis), np.int32))
    maps_addr, out = (
        b.reserve(height * width * c_out * basis),
        b.reserve(height * width * c_out * 4),
    )
    pixels, channels = height * width, c_out * basis
    b.load(Buffer.INP, 0, x_addr, pixels, c_in)
    b.load(Buffer.WGT, 0, c_addr, c_in, channels)
    b.load(Buffer.ACC, 4096, mult, 1, channels, flags=Flag.PUSH_NEXT)
    b.gemm(Opcode.GEMM, 0, 0, 0, pixels, c_in, channels, flags=Flag.POP_PREV)
    b.alu(
        AluOp.REQUANT,
        0,
        pixels,
        channels,
        operand=4096,
        row_operand=True,
        shift=4,
        flags=Flag.PUSH_NEXT,
    )
    b.store(0, maps_addr, pixels, channels, flags=Flag.POP_PREV | Flag.PUSH_PREV)
    b.nop(
        Queue.COMPUTE, Flag.POP_NEXT | Flag.PUSH_PREV
    )  # the maps are in DRAM: let the load queue fetch them back
    b.load(Buffer.INP, 0, maps_addr, pixels, channels, flags=Flag.POP_NEXT)
    b.load(Buffer.WGT, 0, k_addr, basis, kernel * kernel, flags=Flag.PUSH_NEXT)
    b.basis_conv(
        0,
        0,
        0,
        height,
        width,
        c_out,
        kernel,
        basis,
        padding=1,
        flags=Flag.POP_PREV | Flag.PUSH_NEXT,
    )
    b.store(0, out, pixels, c_out, int32=True, flags=Flag.POP_PREV)
    program = b.build()
    assert "k3/r3/s1/p1" in disassemble(program)
    got = run(program).read(out, (height, width, c_out), np.int32)

    maps = (
        requantize(x.reshape(pixels, c_in).astype(np.int64) @ coeff, 1, 4)
        .reshape(height, width, basis, c_out)
        .transpose(0, 1, 3, 2)
    )
    padded = np.pad(maps, ((1, 1), (1, 1), (0, 0), (0, 0)))
    expected = np.zeros((height, width, c_out), np.int64)
    for oh in range(height):
        for ow in range(width):
            patch = padded[oh : oh + kernel, ow : ow + kernel]  # [k, k, c_out, basis]
            expected[oh, ow] = np.einsum("ijor,rij->o", patch, kernels.astype(np.int64))
    np.testing.assert_array_equal(got, expected)


def test_basis_convolution_needs_the_engine(rng):
    b = ProgramBuilder("sparse-accel")
    b.basis_conv(0, 0, 0, 4, 4, 2, 3, 2, padding=1)
    with pytest.raises(DeviceFault, match="no decomposed-convolution engine"):
        run(b.build())
    b = ProgramBuilder("sparse-accel-escalate")
    b.basis_conv(0, 0, 0, 4, 4, 2, 7, 2, padding=1)
    with pytest.raises(DeviceFault, match="7x7 kernels with 2 basis"):
        run(b.build())


ALU_STEPS = st.lists(
    st.tuples(
        st.sampled_from([op for op in AluOp if op != AluOp.BIAS_REQUANT]),
        st.integers(-(2**31), 2**31 - 1),
        st.integers(0, 31),
    ),
    min_size=1,
    max_size=6,
)


def _alu_reference(values, steps):
    """The ALU semantics on Python integers (exact), wrapped to int32 after every step."""

    def wrap(v):
        return (v + 2**31) % 2**32 - 2**31

    def shr(v, s):
        return (v + (1 << (s - 1) if s else 0)) >> s

    out = []
    for v in values:
        for op, operand, shift in steps:
            if op == AluOp.ADD:
                v = v + operand
            elif op == AluOp.MUL:
                v = v * operand
            elif op == AluOp.SHR:
                v = shr(v, shift)
            elif op == AluOp.MAX:
                v = max(v, operand)
            elif op == AluOp.MIN:
                v = min(v, operand)
            else:
                v = min(127, max(-128, shr(v * operand, shift)))
            v = wrap(v)
        out.append(v)
    return out


@settings(max_examples=40, deadline=None)
@given(steps=ALU_STEPS, seed=st.integers(0, 2**16))
def test_random_alu_programs_match_exact_integers(steps, seed):
    values = np.random.default_rng(seed).integers(-(2**31), 2**31, size=24).astype(np.int32)
    b = ProgramBuilder("sparse-accel")
    addr, out = b.place(values), b.reserve(values.size * 4)
    b.load(Buffer.ACC, 0, addr, 2, 12, flags=Flag.PUSH_NEXT)
    for i, (op, operand, shift) in enumerate(steps):
        operand = shift if op == AluOp.SHR else operand
        last = i == len(steps) - 1
        b.alu(
            op,
            0,
            2,
            12,
            operand=operand,
            shift=shift,
            flags=(Flag.POP_PREV if i == 0 else Flag(0)) | (Flag.PUSH_NEXT if last else Flag(0)),
        )
    b.store(0, out, 2, 12, int32=True, flags=Flag.POP_PREV)
    reference_steps = [
        (op, shift if op == AluOp.SHR else operand, shift) for op, operand, shift in steps
    ]
    got = run(b.build()).read(out, (24,), np.int32)
    assert got.tolist() == _alu_reference([int(v) for v in values], reference_steps)


def test_basis_layer_program_matches_reference(rng):
    """The compiled basis-convolution layer (chunked over channels, several images) against numpy."""
    from tvm_sparse.accel import load_device
    from tvm_sparse.codegen.basis_program import BasisGeometry, emit_basis_layer

    g = BasisGeometry(
        batch=2, height=9, width=7, channels=40, rank=3, kernel=3, stride=2, padding=1
    )
    device = load_device("sparse-accel-escalate")
    maps = rng.integers(-30, 30, size=(2, 9, 7, 3 * 40)).astype(np.int8)  # basis-major channels
    basis = rng.integers(-8, 8, size=(3, 3, 3)).astype(np.int8)
    bias = rng.integers(-500, 500, size=40)
    mult = rng.integers(1, 2**12, size=40)
    b = ProgramBuilder(device.name)
    x_addr = b.place(maps)
    oh, ow = g.out_hw
    out = b.reserve(2 * oh * ow * 40)
    emit_basis_layer(b, device, g, x_addr, basis, bias, mult, 14, out, relu=True)
    got = run(b.build(), device).read(out, (2, oh, ow, 40), np.int8)
    padded = np.pad(
        maps.reshape(2, 9, 7, 3, 40).astype(np.int64), ((0, 0), (1, 1), (1, 1), (0, 0), (0, 0))
    )
    acc = np.zeros((2, oh, ow, 40), np.int64)
    for i in range(3):
        for j in range(3):
            window = padded[
                :, i : i + 2 * (oh - 1) + 1 : 2, j : j + 2 * (ow - 1) + 1 : 2
            ]  # [n, oh, ow, r, o]
            acc += np.einsum("nhwro,r->nhwo", window, basis[:, i, j].astype(np.int64))
    np.testing.assert_array_equal(got, np.maximum(requantize(acc + bias, mult, 14), 0))


def test_requantize_with_relu_clips_at_zero():
    acc = np.array([[-300, -1, 0, 5, 1000]], np.int32)
    b = ProgramBuilder("sparse-accel")
    addr, out = b.place(acc), b.reserve(acc.size)
    b.load(Buffer.ACC, 0, addr, 1, acc.size, flags=Flag.PUSH_NEXT)
    b.alu(
        AluOp.REQUANT,
        0,
        1,
        acc.size,
        operand=1,
        shift=1,
        flags=Flag.POP_PREV | Flag.PUSH_NEXT | Flag.RELU,
    )
    b.store(0, out, 1, acc.size, flags=Flag.POP_PREV)
    np.testing.assert_array_equal(
        run(b.build()).read(out, acc.shape, np.int8), np.maximum(requantize(acc, 1, 1), 0)
    )
