"""Autotuning: records are produced, resumed and applied; wrong candidates never reach the database;
the simulator runner reports the simulator's cycles; unusable databases are skipped."""

import json
import logging
import re
import sys

import numpy as np
import pytest
import tvm
import tvm_ffi
from conftest import block_sparse, run_executable, run_onnxruntime
from tvm.s_tir import meta_schedule as ms

import tvm_sparse
from tvm_sparse.accel import load_device
from tvm_sparse.cli import main
from tvm_sparse.codegen.gemm_program import Tiling, gemm_program
from tvm_sparse.codegen.gemm_task import DeviceGemmTask
from tvm_sparse.formats import BSRMatrix, NMMatrix
from tvm_sparse.kernels import BSRKernelParams, Im2Col, bsr_matmul_kernel
from tvm_sparse.kernels.nm_matmul import nm_kernel_available
from tvm_sparse.kernels.tasks import BlockMatmulTask, NMMatmulTask
from tvm_sparse.prune import prune_onnx
from tvm_sparse.schedule.database import META_FILE, open_database
from tvm_sparse.sim import run
from tvm_sparse.target import host_target
from tvm_sparse.task import KNOB, TuningTask, WrongResult
from tvm_sparse.testing import mlp
from tvm_sparse.tune import TunedSchedules, extract_tasks, tune
from tvm_sparse.tune.search import SharedCostModel, recorded_trials, search

DEVICE = load_device("sparse-accel")


@pytest.fixture(scope="module")
def pruned_mlp():
    model, _ = prune_onnx(mlp(batch=16, sizes=(64, 128, 32)), "block:16x1", 0.25)
    return model


def test_tune_records_resume_and_apply(tmp_path, pruned_mlp, rng, caplog):
    work = tmp_path / "db"
    first = tune(pruned_mlp, trials=3, work_dir=str(work), progress=False)
    assert [r.description for r in first] == [
        "block matmul 16x64x128 16x1 d0.25",
        "block matmul 16x128x32 16x1 d0.25",
    ]
    database = open_database(work)
    for result, task in zip(first, extract_tasks(pruned_mlp)):
        assert result.stats.measured + result.stats.failed == 2  # the default was recorded first
        assert recorded_trials(database, task) == 1 + result.stats.measured
    again = tune(pruned_mlp, trials=3, work_dir=str(work), progress=False)
    assert all(
        r.stats is None and r.recorded >= 3 for r in again
    )  # resumed: nothing left to measure

    records = TunedSchedules.open(work, host_target())
    tasks = extract_tasks(pruned_mlp)
    assert all(isinstance(records.lookup(t), tvm_sparse.kernels.BSRKernelParams) for t in tasks)
    with caplog.at_level(logging.INFO, logger="tvm_sparse"):
        exe = tvm_sparse.build(pruned_mlp, tuning_db=str(work))
    assert "tuning records: 2 kernel(s) tuned" in caplog.text
    assert exe.tuning_report.startswith("tuning records: 2 kernel(s) tuned")  # the build carries it
    assert exe.to_dict() is None and exe.to_table() == ""  # a host build has no device partition
    x = rng.standard_normal((16, 64)).astype("float32")
    np.testing.assert_allclose(
        run_executable(exe, x), run_onnxruntime(pruned_mlp, {"x": x})[0], rtol=1e-4, atol=1e-4
    )


def test_tasks_of_one_structure_share_records(rng):
    mask = np.repeat(rng.random((4, 96)) < 0.3, 16, axis=0)

    def task(keep):
        return BlockMatmulTask(
            32,
            BSRMatrix.from_dense((rng.standard_normal((64, 96)) * keep).astype("float32"), (16, 1)),
        )

    one, other, denser = (
        task(mask),
        task(mask),
        task(mask | np.repeat(rng.random((4, 96)) < 0.5, 16, axis=0)),
    )
    assert tvm_ffi.structural_equal(
        one.workload(), other.workload()
    )  # other values, same structure: one task
    assert not tvm_ffi.structural_equal(one.workload(), denser.workload())


class _BrokenKernel(BlockMatmulTask):
    """A candidate generator with a bug: it applies ReLU the layer does not have."""

    def kernel(self, params):
        return bsr_matmul_kernel(self.m, self.weight, params, relu=True)


@pytest.mark.parametrize("groups", [1, 4])
def test_convolution_candidates_are_checked_against_numpy(rng, groups):
    im2col = Im2Col((1, 8, 8, 32), (3, 3), (2, 2), (1, 1), (1, 1), groups)
    weight = BSRMatrix.from_dense(
        im2col.weight_matrix(rng.standard_normal((32, 3, 3, 32 // groups)).astype("float32")),
        (16, 1),
    )
    task = BlockMatmulTask(im2col.rows, weight, im2col)
    assert task.measure(task.default(), host_target()) > 0

    class ReluBug(BlockMatmulTask):
        def kernel(self, params):
            return bsr_matmul_kernel(self.m, self.weight, params, im2col=self.im2col, relu=True)

    with pytest.raises(WrongResult):
        ReluBug(im2col.rows, weight, im2col).measure(task.default(), host_target())


def test_wrong_candidates_are_discarded_and_counted(tmp_path, rng):
    task = _BrokenKernel(
        16, BSRMatrix.from_dense(block_sparse(rng, (32, 48), (16, 1), 0.5), (16, 1))
    )
    database = ms.database.JSONDatabase(work_dir=str(tmp_path))
    stats = search(task, host_target(), database, 3, str(tmp_path))
    assert stats.wrong == 3 and stats.measured == 0
    assert recorded_trials(database, task) == 0


@pytest.mark.skipif(not nm_kernel_available(host_target()), reason="the N:M kernel needs AVX-512")
def test_nm_task_space_round_trips(rng):
    w = rng.standard_normal((32, 64)).astype("float32")
    w.reshape(32, 16, 4)[..., :2] = 0  # 2:4
    task = NMMatmulTask(8, NMMatrix.from_dense(w, 2, 4))
    assert task.measure(task.default(), host_target()) > 0
    sch = tvm.s_tir.Schedule(task.workload())
    task.trace(6).apply_to_schedule(sch, remove_postproc=True)
    assert task.decode(sch) == 6


def test_simulator_runner_reports_the_simulators_cycles(tmp_path, rng):
    weight = rng.integers(-128, 128, size=(128, 64)).astype(np.int8)
    bias, multiplier = rng.integers(-1000, 1000, size=64), rng.integers(1, 500, size=64)
    task = DeviceGemmTask(48, weight, "dense", DEVICE, bias, multiplier, shift=12)
    tiling = Tiling(16, 64, 32, double_buffer=True, rows_outer=True)
    x = (
        np.random.default_rng(0).integers(-128, 128, size=(48, 128)).astype(np.int8)
    )  # the runner's input
    program, _ = gemm_program(x, weight, bias, multiplier, 12, DEVICE, "dense", False, tiling)
    cycles = run(program, DEVICE).report.total.cycles
    assert task.measure(tiling) == cycles / (DEVICE.clock_mhz * 1e6)

    database = ms.database.JSONDatabase(work_dir=str(tmp_path))
    stats = search(task, tvm_sparse.accel.target("sparse-accel"), database, 4, str(tmp_path))
    assert stats.measured + stats.failed == 4 and stats.wrong == 0
    assert all(task.check(t) is None for t in [stats.best])
    assert stats.best_seconds == task.measure(stats.best)


def test_one_cost_model_learns_across_device_tasks(tmp_path, rng):
    """A shared cost model keeps each task's measurements as its own group and predicts for a new task
    from the first round (no random warm-up), on features that do not depend on the layer's size."""
    target = tvm_sparse.accel.target("sparse-accel")
    shared = SharedCostModel(trials_per_round=4)
    first = DeviceGemmTask(
        64, rng.integers(-128, 128, size=(128, 64)).astype(np.int8), "dense", DEVICE
    )
    second = DeviceGemmTask(
        32, rng.integers(-128, 128, size=(256, 32)).astype(np.int8), "dense", DEVICE
    )
    search(
        first,
        target,
        ms.database.MemoryDatabase(),
        8,
        str(tmp_path),
        trials_per_round=4,
        shared=shared,
    )
    assert shared.model.data_size >= 4 and shared.model.booster is not None
    search(
        second,
        target,
        ms.database.MemoryDatabase(),
        4,
        str(tmp_path),
        trials_per_round=4,
        shared=shared,
    )
    assert len(shared.model.data) == 2  # one normalisation group per task
    # the same tiling, relative to a layer twice as large in every dimension, gives the same tile fractions
    small, large = (
        DeviceGemmTask(64, np.ones((128, 64), np.int8), "dense", DEVICE),
        DeviceGemmTask(128, np.ones((256, 128), np.int8), "dense", DEVICE),
    )
    assert small.features(Tiling(32, 64, 32))[:5] == large.features(Tiling(64, 128, 64))[:5]


def test_device_fit_check_rejects_tiles_before_measurement():
    task = DeviceGemmTask(64, np.ones((4096, 1024), np.int8), "dense", DEVICE)
    assert task.check(Tiling(64, 4096, 1024)) is not None  # far beyond the buffers
    assert task.check(Tiling(64, 24, 32)) is not None  # off the 16-wide granule
    assert task.check(task.default()) is None


def test_every_task_implements_the_tuning_task_protocol_and_checks_its_knobs(rng):
    w = rng.standard_normal((32, 64)).astype("float32")
    w.reshape(32, 16, 4)[..., :2] = 0  # 2:4
    block = BlockMatmulTask(
        16, BSRMatrix.from_dense(block_sparse(rng, (32, 48), (16, 1), 0.5), (16, 1))
    )
    nm = NMMatmulTask(8, NMMatrix.from_dense(w, 2, 4))
    device = DeviceGemmTask(64, np.ones((128, 64), np.int8), "dense", DEVICE)
    for task in (block, nm, device):
        assert isinstance(task, TuningTask)
        assert task.check(task.default()) is None
    assert block.check(BSRKernelParams(0)) == "rows per tile must be 1 to 32, got 0"
    assert block.check(BSRKernelParams(48, pack_in_tile=True)) is not None
    assert block.check(BSRKernelParams(32, weight_major=True, pack_in_tile=True)) is None
    assert nm.check(33) is not None and nm.check(32) is None


class _WiderSpace(BlockMatmulTask):
    """The block task as a version whose space sampled 48-row tiles would have recorded it."""

    def design_space(self, sch):
        block = sch.get_sblock("Y")
        for name, value in (("rows_per_tile", 48), ("weight_major", 0), ("pack_in_tile", 0)):
            sch.annotate(block, KNOB + name, sch.sample_categorical([value], [1.0]))
        return [sch]


def test_a_record_whose_knobs_fail_the_task_check_is_not_applied(tmp_path, rng):
    weight = BSRMatrix.from_dense(block_sparse(rng, (32, 48), (16, 1), 0.5), (16, 1))
    task, wider = BlockMatmulTask(16, weight), _WiderSpace(16, weight)
    assert wider.trace(BSRKernelParams(48)) is not None
    database = open_database(tmp_path, create=True)
    func = task.workload()
    database.commit_tuning_record(
        ms.database.TuningRecord(
            wider.trace(BSRKernelParams(48)),
            database.commit_workload(tvm.IRModule({"main": func})),
            [1e-3],
            host_target(),
            ms.arg_info.ArgInfo.from_prim_func(func),
        )
    )
    assert TunedSchedules.open(tmp_path, host_target()).lookup(task) is None
    _commit_default(task, host_target(), database)
    assert TunedSchedules.open(tmp_path, host_target()).lookup(task) == task.default()


def _commit_default(task, target, database):
    func = task.workload()
    workload = database.commit_workload(tvm.IRModule({"main": func}))
    record = ms.database.TuningRecord(
        task.trace(task.default()),
        workload,
        [1e-3],
        target,
        ms.arg_info.ArgInfo.from_prim_func(func),
    )
    database.commit_tuning_record(record)


def test_records_for_another_cpu_are_not_applied(tmp_path, rng):
    task = BlockMatmulTask(
        16, BSRMatrix.from_dense(block_sparse(rng, (32, 48), (16, 1), 0.5), (16, 1))
    )
    other_cpu = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"})
    _commit_default(task, other_cpu, open_database(tmp_path, create=True))
    assert TunedSchedules.open(tmp_path, other_cpu).lookup(task) == task.default()
    host = host_target()
    if str(host.attrs["mcpu"]) != "skylake-avx512":
        assert TunedSchedules.open(tmp_path, host).lookup(task) is None


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda d: (d / "database_tuning_record.json").write_text("{not json\n"),
            "corrupt tuning database",
        ),
        (
            lambda d: (d / META_FILE).write_text(json.dumps({"format": 1, "tvm": "0.1.0"})),
            "written by TVM 0.1.0",
        ),
        (lambda d: (d / META_FILE).unlink(), "not a tuning database"),
    ],
)
def test_unusable_databases_are_skipped_with_a_warning(tmp_path, rng, pruned_mlp, damage, message):
    task = BlockMatmulTask(
        16, BSRMatrix.from_dense(block_sparse(rng, (32, 48), (16, 1), 0.5), (16, 1))
    )
    _commit_default(task, host_target(), open_database(tmp_path, create=True))
    damage(tmp_path)
    with pytest.warns(UserWarning, match=message):
        records = TunedSchedules.open(tmp_path, host_target())
    assert records.lookup(task) is None
    with pytest.warns(UserWarning, match=message):
        exe = tvm_sparse.build(pruned_mlp, tuning_db=str(tmp_path))
    x = rng.standard_normal((16, 64)).astype("float32")
    np.testing.assert_allclose(
        run_executable(exe, x), run_onnxruntime(pruned_mlp, {"x": x})[0], rtol=1e-4, atol=1e-4
    )


def test_cli_tunes_for_the_device_and_compiles_with_the_records(tmp_path, pruned_mlp, capsys):
    import onnx

    path = tmp_path / "mlp.onnx"
    onnx.save(pruned_mlp, path)
    db = tmp_path / "db"
    assert (
        main(
            [
                "tune",
                str(path),
                "--target",
                "sparse-accel",
                "--trials",
                "3",
                "--db",
                str(db),
                "--json",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert len(summary) == 2 and all(
        s["measured"] + s["failed"] == 2 and 0 < s["best_seconds"] <= s["default_seconds"]
        for s in summary
    )
    assert (
        main(
            [
                "compile",
                str(path),
                "--target",
                "sparse-accel",
                "--db",
                str(db),
                "-o",
                str(tmp_path / "m.so"),
            ]
        )
        == 0
    )
    assert "tuning records: 2 kernel(s) tuned" in capsys.readouterr().out
    assert main(["tune", str(path), "--trials", "0", "--db", str(db)]) == 1
    assert "--trials must be at least 1" in capsys.readouterr().err


def test_a_one_by_one_convolution_with_fewer_channels_than_a_block_measures(rng):
    """A PP-OCR-style 1x1 convolution over 2 channels with 16x16 blocks: its reference (im2col rows of 2
    columns against a weight padded to 16) used to fail with a numpy shape error."""
    im2col = Im2Col((1, 24, 48, 2), (1, 1), (1, 1), (0, 0), (1, 1), 1)
    weight = BSRMatrix.from_dense(
        im2col.weight_matrix(rng.standard_normal((24, 1, 1, 2)).astype("float32")), (16, 16)
    )
    task = BlockMatmulTask(im2col.rows, weight, im2col)
    assert task.describe() == "block conv 1152x2x24 16x16 d1.00"
    candidate = task.candidate(task.default())
    x, dense = candidate.args[0], weight.to_dense()
    np.testing.assert_allclose(
        candidate.expected[..., :24],
        np.einsum("nhwc,oc->nhwo", x, dense) + candidate.args[-1][:24],
        rtol=1e-5,
        atol=1e-5,
    )
    assert task.measure(task.default(), host_target()) > 0


class _FailsAboveEight(BlockMatmulTask):
    """A generator that raises for tiles of more than 8 rows."""

    def kernel(self, params):
        if params.rows_per_tile > 8:
            raise RuntimeError(f"no kernel for {params.rows_per_tile} rows")
        return super().kernel(params)


class _NoDefault(BlockMatmulTask):
    """A task whose reference cannot be built."""

    def candidate(self, params):
        raise ValueError("matmul: Input operand 1 has a mismatch in its core dimension 0")


def test_the_tuner_survives_failing_candidates_and_skips_a_task_without_a_reference(
    tmp_path, rng, capsys, monkeypatch
):
    monkeypatch.setattr(
        sys.stderr, "isatty", lambda: True
    )  # the live trial lines show on a terminal only
    weight = BSRMatrix.from_dense(block_sparse(rng, (32, 48), (16, 1), 0.5), (16, 1))
    failing, broken = _FailsAboveEight(16, weight), _NoDefault(24, weight)
    with pytest.warns(
        UserWarning,
        match=r"skipping tuning task block matmul 24x48x32 16x1 d0\.\d+: its default schedule failed: ValueError: matmul",
    ):
        results = tune(
            None, trials=12, work_dir=str(tmp_path), tasks=[broken, failing], strategy="random"
        )
    assert results[0].skipped and results[0].stats is None and results[0].best_seconds is None
    stats = results[1].stats
    assert (
        stats.failed > 0 and stats.measured > 0 and stats.done == 11
    )  # every candidate counted, the search went on
    assert stats.first_error.startswith("RuntimeError: no kernel for")
    err = capsys.readouterr().err
    assert (
        re.search(r"\[task 2/2\] block matmul 16x48x32 16x1 d0\.\d+: trial 1/12,", err)
        and "trial 12/12," in err
        and "trial 0/" not in err
    )
    assert re.search(r"best \d[\d.]* us", err) and "0.0000 ms" not in err
    assert "[task 1/2] block matmul 24x48x32 16x1" in err and ": skipped\n" in err


def test_times_print_in_useful_units():
    from tvm_sparse.tune import format_seconds

    assert [format_seconds(s) for s in (2.5, 0.0123, 4.56e-6, 3e-9, None)] == [
        "2.5 s",
        "12.3 ms",
        "4.56 us",
        "3 ns",
        "-",
    ]


def test_ctrl_c_stops_tuning_cleanly_and_the_run_resumes(tmp_path, pruned_mlp):
    import os
    import signal
    import subprocess
    import sys
    import time

    import onnx

    path, db = tmp_path / "mlp.onnx", tmp_path / "db"
    onnx.save(pruned_mlp, path)
    tuning = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tvm_sparse.cli",
            "tune",
            str(path),
            "--db",
            str(db),
            "--trials",
            "400",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (
            (db / "measurements.jsonl").exists()
            and len((db / "measurements.jsonl").read_text().splitlines()) >= 2
        ):
            assert time.monotonic() < deadline and tuning.poll() is None, "no measurements arrived"
            time.sleep(0.2)
        tuning.send_signal(signal.SIGINT)
        _, err = tuning.communicate(timeout=60)
    finally:
        if tuning.poll() is None:
            tuning.kill()
    assert tuning.returncode == 130
    assert (
        err.strip().splitlines()[-1]
        == f"interrupted: the measurements so far are in {db}; run the same command again to resume"
    )
    database = open_database(db)
    task = extract_tasks(pruned_mlp)[0]
    kept = recorded_trials(database, task)
    assert kept >= 1
    assert (
        tune(pruned_mlp, trials=kept, work_dir=str(db), progress=False, tasks=[task])[0].stats
        is None
    )  # resumes with what was kept
    assert os.path.getsize(db / "database_tuning_record.json") > 0


def test_one_trial_is_the_default_measured_and_reported(tmp_path, pruned_mlp, capsys):
    import onnx

    path = tmp_path / "mlp.onnx"
    onnx.save(pruned_mlp, path)
    assert main(["tune", str(path), "--trials", "1", "--db", str(tmp_path / "db")]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == f"tuned 2 task(s), 2 new measurement(s), records in {tmp_path / 'db'}"
    assert (
        out.err.count("] block matmul") == 2 and "nothing to measure" not in out.err
    )  # one result line per task


def test_an_unknown_search_strategy_is_refused_before_any_build(tmp_path):
    with pytest.raises(ValueError, match="unknown search strategy 'grid' \\(one of xgb, random\\)"):
        tune(mlp(batch=2, sizes=(16, 8)), strategy="grid", work_dir=str(tmp_path / "db"))
    assert not (tmp_path / "db").exists()
