"""The fused decomposed-convolution engine (ENGINE_CONFIG + DECOMP_CONV): bit-exact against a numpy integer
model in both orders, bands and chunks, faults, and the pipeline's timing."""

import numpy as np
import pytest

from tvm_sparse.codegen.basis_program import BasisGeometry
from tvm_sparse.codegen.builder import ProgramBuilder
from tvm_sparse.codegen.fused_program import FusedOperands, emit_fused_layer, fused_channels
from tvm_sparse.hw.device import Device, DeviceError, load_device
from tvm_sparse.hw.isa import Program, ProgramError, disassemble
from tvm_sparse.sim import run
from tvm_sparse.sim.engine import EngineConfig, EnginePipeline, engine_cycles
from tvm_sparse.sim.machine import DeviceFault


def escalate(**buffers) -> Device:
    """``sparse-accel-escalate``, with some buffer sizes changed."""
    doc = load_device("sparse-accel-escalate").to_dict()
    doc["buffers"].update(buffers)
    return Device.from_dict(doc)


def round_shift(value, shift):
    return (value + (1 << (shift - 1))) >> shift


def integer_model(x: np.ndarray, ops: FusedOperands, g: BasisGeometry) -> np.ndarray:
    """The decomposed layer in exact integers: int8 ``[N, OH, OW, O]``."""
    n, h, w, c = x.shape
    k, s, p, r, o = g.kernel, g.stride, g.padding, g.rank, g.channels
    oh, ow = g.out_hw
    basis = ops.basis.astype(np.int64)

    def taps(padded, term):
        return sum(
            term(padded[:, a : a + s * (oh - 1) + 1 : s, b : b + s * (ow - 1) + 1 : s], a, b)
            for a in range(k)
            for b in range(k)
        )

    def requant(acc, params, shift, lo):
        return np.clip(round_shift((acc + params[0]) * params[1], shift), lo, 127)

    if ops.basis_first:  # every channel with each kernel: maps j * C + c, then the coefficients
        padded = np.pad(x.astype(np.int64), ((0, 0), (p, p), (p, p), (0, 0)))
        acc = taps(padded, lambda win, a, b: win[..., None, :] * basis[:, a, b, None])
        result = requant(
            acc.reshape(-1, r * c), ops.maps_params, ops.maps_shift, -128
        ) @ ops.coefficients.astype(np.int64)
    else:  # the coefficients give maps j * O + o, then each channel's maps with the kernels
        maps = requant(
            x.reshape(-1, c).astype(np.int64) @ ops.coefficients.astype(np.int64),
            ops.maps_params,
            ops.maps_shift,
            -128,
        )
        padded = np.pad(maps.reshape(n, h, w, r, o), ((0, 0), (p, p), (p, p), (0, 0), (0, 0)))
        result = taps(
            padded, lambda win, a, b: np.einsum("nhwjo,j->nhwo", win, basis[:, a, b])
        ).reshape(-1, o)
    return requant(result, ops.out_params, ops.out_shift, 0 if ops.relu else -128).reshape(
        n, oh, ow, o
    )


def layer(
    rng,
    device,
    g: BasisGeometry,
    channels: int,
    basis_first: bool,
    coef_mode: str,
    density: float = 0.4,
    relu: bool = True,
):
    """Random int8 operands of a decomposed layer (``g.channels`` outputs, ``channels`` inputs, padded)."""
    c_pad = fused_channels(channels, device)
    x = rng.integers(-128, 128, (g.batch, g.height, g.width, c_pad), dtype=np.int8)
    x[..., channels:] = 0
    x[:, 0] = 0  # an all-zero input row
    rows, cols = (g.rank * c_pad, g.channels) if basis_first else (c_pad, g.rank * g.channels)
    coefficients = rng.integers(-128, 128, (rows, cols)).astype(np.int8)
    if (
        coef_mode == "block"
    ):  # 16x16 blocks kept with probability density (all-zero blocks included)
        keep = rng.random((-(-rows // 16), -(-cols // 16))) < density
        coefficients = (coefficients * np.kron(keep, np.ones((16, 16), bool))[:rows, :cols]).astype(
            np.int8
        )
    padding_rows = (
        np.arange(rows) % c_pad >= channels if basis_first else np.arange(rows) >= channels
    )
    coefficients[padding_rows] = 0
    maps = rows if basis_first else cols
    ops = FusedOperands(
        coefficients,
        np.stack([rng.integers(-3000, 3000, maps), rng.integers(1, 1 << 14, maps)]),
        12 if basis_first else 20,
        rng.integers(-128, 128, (g.rank, g.kernel, g.kernel)).astype(np.int8),
        np.stack([rng.integers(-3000, 3000, g.channels), rng.integers(1, 1 << 14, g.channels)]),
        22,
        coef_mode,
        basis_first,
        relu,
    )
    return x, ops


def simulate(device, g: BasisGeometry, x: np.ndarray, ops: FusedOperands):
    b = ProgramBuilder(device.name)
    x_addr = b.place(x)
    oh, ow = g.out_hw
    out_addr = b.reserve(g.batch * oh * ow * g.channels)
    emit_fused_layer(b, device, g, x_addr, ops, out_addr)
    program = b.build()
    result = run(program, device)
    return result.read(out_addr, (g.batch, oh, ow, g.channels), np.int8), result, program


CASES = [  # (batch, height, width, outputs, rank, kernel, stride, padding), input channels, basis-first, coefficients
    ((1, 8, 8, 16, 4, 3, 1, 1), 16, False, "dense"),
    ((2, 9, 7, 24, 4, 3, 1, 1), 20, False, "block"),
    ((1, 11, 10, 32, 4, 3, 2, 1), 32, False, "block"),
    ((1, 12, 9, 16, 2, 5, 1, 2), 16, False, "dense"),
    ((1, 8, 8, 16, 4, 3, 1, 1), 16, True, "dense"),
    ((2, 9, 7, 32, 4, 3, 2, 1), 20, True, "block"),
    ((1, 11, 13, 48, 3, 5, 1, 2), 32, True, "block"),
]


@pytest.mark.parametrize("shape, channels, basis_first, coef_mode", CASES)
def test_fused_layer_matches_the_integer_model(rng, shape, channels, basis_first, coef_mode):
    device = load_device("sparse-accel-escalate")
    g = BasisGeometry(*shape)
    x, ops = layer(rng, device, g, channels, basis_first, coef_mode, relu=shape[3] != 32)
    got, result, _ = simulate(device, g, x, ops)
    expected = integer_model(x, ops, g)
    np.testing.assert_array_equal(got, expected)
    assert len(np.unique(expected)) > 32  # not saturated away
    counters = result.report.total
    assert (
        counters.dram_write_bytes == expected.size
    )  # only the outputs leave the chip: no maps in DRAM
    assert 0 < counters.basis_macs < counters.macs_issued


@pytest.mark.parametrize("basis_first", [False, True])
def test_bands_and_chunks_cover_the_layer(rng, basis_first):
    """Buffers too small for one step: the layer is cut into bands of rows (with the window's halo) and
    chunks of output channels, single-buffered where halves do not fit."""
    device = escalate(input_bytes=4096, accumulator_bytes=8192)
    g = BasisGeometry(1, 14, 12, 48, 4, 3, 1 + basis_first, 1)
    x, ops = layer(rng, device, g, 24, basis_first, "block")
    got, _, program = simulate(device, g, x, ops)
    np.testing.assert_array_equal(got, integer_model(x, ops, g))
    bands = {ins.band for ins in program.instructions if ins.opcode.name == "ENGINE_CONFIG"}
    chunks = {ins.outputs for ins in program.instructions if ins.opcode.name == "ENGINE_CONFIG"}
    assert (
        len(bands) > 1
        and sum(chunks) > 0
        and len([i for i in program.instructions if i.opcode.name == "DECOMP_CONV"]) > 2
    )


def test_engine_overlaps_consecutive_steps():
    """The units work on the next step's first rows while the last rows of the previous drain."""
    device = load_device("sparse-accel-escalate")
    cfg = EngineConfig(64, 16, 14, 14, 3, 4, 1, 1, 1, 1, 8, 8, 0)
    alone = engine_cycles(cfg, device, pixel_cycles=4)
    pipeline = EnginePipeline(device)
    issue, release, done = pipeline.run(cfg, 4, 0)
    assert issue <= release < done == alone
    _, _, second = pipeline.run(cfg, 4, issue)
    assert alone < second < 2 * alone
    # the basis stage bounds a combine-first step with few coefficients: doubling it shortens the step
    doc = device.to_dict()
    doc["sparse_modes"]["decomposed_conv"]["basis_macs_per_cycle"] *= 2
    assert engine_cycles(cfg, Device.from_dict(doc), pixel_cycles=1) < engine_cycles(
        cfg, device, pixel_cycles=1
    )


def test_rows_under_no_window_leave_the_line_buffer():
    """A stride-2 band of even height leaves its last row of maps unread; the next band still finds room."""
    device = load_device("sparse-accel-escalate")
    config = {**CONFIG, "height": 8, "width": 100, "stride": 2, "padding": 0, "pad_top": 0}
    config.update(pad_bottom=0, params_addr=8000)
    steps = [("engine_config", config), ("decomp_conv", DECOMP)] * 2
    counters = run(program_of(device, *steps), device).report.total
    assert counters.instructions == 4 and counters.cycles > 0


def program_of(device, *instructions) -> Program:
    b = ProgramBuilder(device.name)
    b.place(np.zeros(64, np.int8))
    for name, kwargs in instructions:
        getattr(b, name)(**kwargs)
    return b.build()


CONFIG = dict(
    channels=16,
    outputs=16,
    height=4,
    width=4,
    kernel=3,
    basis=4,
    stride=1,
    padding=1,
    pad_top=1,
    pad_bottom=1,
    maps_shift=8,
    out_shift=8,
    params_addr=0,
)
DECOMP = dict(acc_addr=0, inp_addr=0, wgt_addr=64, basis_addr=0, coef_mode="dense")


@pytest.mark.parametrize(
    "device, instructions, message",
    [
        ("sparse-accel-escalate", [("decomp_conv", DECOMP)], "before any ENGINE_CONFIG"),
        ("sparse-accel", [("engine_config", CONFIG)], "has no fused decomposed-convolution engine"),
        (
            "sparse-accel-escalate",
            [("engine_config", {**CONFIG, "width": 2000})],
            "do not fit the 32768-byte maps buffer",
        ),
        ("sparse-accel-escalate", [("engine_config", {**CONFIG, "kernel": 7})], "7x7 kernels"),
        (
            "sparse-accel-escalate",
            [("engine_config", {**CONFIG, "pad_top": 3})],
            "is not smaller than the 3x3 kernel",
        ),
        (
            "sparse-accel-escalate",
            [("engine_config", {**CONFIG, "out_shift": 70})],
            "out_shift 70 is out of range",
        ),
        (
            "sparse-accel-escalate",
            [
                ("engine_config", {**CONFIG, "channels": 20}),
                ("decomp_conv", {**DECOMP, "coef_mode": "block"}),
            ],
            "whole number of 16x16 blocks",
        ),
    ],
)
def test_engine_faults_name_the_problem(device, instructions, message):
    device = load_device(device)
    with pytest.raises(DeviceFault, match=message):
        run(program_of(device, *instructions), device)


def test_engine_instructions_round_trip_and_disassemble():
    device = load_device("sparse-accel-escalate")
    program = program_of(
        device, ("engine_config", {**CONFIG, "basis_first": True}), ("decomp_conv", DECOMP)
    )
    text = disassemble(Program.from_bytes(program.to_bytes()))
    assert (
        "ENGINE_CONFIG channels=16 outputs=16 band=4x4 geometry=k3/r4/s1/p1 pads=top1/bottom1/shifts8,8"
        in text
    )
    assert "order=basis-first" in text and "coef_mode=dense" in text
    with pytest.raises(ProgramError, match="band 70000x4 does not fit"):
        program_of(device, ("engine_config", {**CONFIG, "height": 70000}))
    with pytest.raises(ProgramError, match="coefficient mode 'sparse' is not one of dense, block"):
        program_of(device, ("decomp_conv", {**DECOMP, "coef_mode": "sparse"}))


def test_layer_too_large_for_the_buffers_is_a_program_error(rng):
    device = escalate(input_bytes=512)
    g = BasisGeometry(1, 16, 16, 16, 4, 3, 1, 1)
    x, ops = layer(rng, device, g, 64, False, "dense")
    with pytest.raises(ProgramError, match="does not fit"):
        simulate(device, g, x, ops)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"maps_buffer_bytes": 4096}, "basis_macs_per_cycle: missing"),
        ({"basis_macs_per_cycle": 64}, "maps_buffer_bytes: missing"),
        (
            {"maps_buffer_bytes": 0, "basis_macs_per_cycle": 64},
            "maps_buffer_bytes: must be a positive integer",
        ),
    ],
)
def test_fused_engine_fields_are_validated(fields, message):
    doc = load_device("sparse-accel-escalate").to_dict()
    mode = doc["sparse_modes"]["decomposed_conv"]
    del mode["maps_buffer_bytes"], mode["basis_macs_per_cycle"]
    mode.update(fields)
    with pytest.raises(DeviceError, match=f"sparse_modes.decomposed_conv.{message}"):
        Device.from_dict(doc)
