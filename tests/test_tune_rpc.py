"""Tuning over TVM's RPC tracker: a tracker and two tvm-sparse servers on 127.0.0.1 measure the candidates
(CPU kernels and simulated device layers); the records, hosts and tuned builds are checked, and a missing
tracker, a key without servers and a server that dies mid-run end with one line in bounded time."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from conftest import run_executable, run_onnxruntime

import tvm_sparse
from tvm_sparse.cli import main
from tvm_sparse.prune import prune_onnx
from tvm_sparse.schedule.database import open_database
from tvm_sparse.testing import mlp
from tvm_sparse.tune import RPCUnavailable, tune
from tvm_sparse.tune.rpc import RPCSpec, count_servers, serve
from tvm_sparse.tune.search import MEASUREMENT_LOG

pytest.importorskip("tornado")
from tvm.rpc.tracker import Tracker  # noqa: E402

TIMEOUT = 30  # seconds for one measurement: every failure below must surface within a few of these


def _wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} within {seconds} s")


@pytest.fixture(scope="module")
def tracker():
    tracker = Tracker(host="127.0.0.1", port=19190, port_end=19990, silent=True)
    yield tracker
    tracker.terminate()


@pytest.fixture(scope="module")
def servers(tracker):
    """Two servers of key ``cpu``; one TVM thread each, so that two measurements at once on this 2-core
    machine do not fight over cores."""
    old = os.environ.get("TVM_NUM_THREADS")
    os.environ["TVM_NUM_THREADS"] = "1"
    try:
        started = [
            serve(f"127.0.0.1:{tracker.port}", "cpu", host="127.0.0.1", port=19500, port_end=19900)
            for _ in range(2)
        ]
    finally:
        os.environ.pop("TVM_NUM_THREADS") if old is None else os.environ.__setitem__(
            "TVM_NUM_THREADS", old
        )
    spec = RPCSpec("127.0.0.1", tracker.port, "cpu")
    _wait_for(lambda: count_servers(spec, 5) == 2, 30, "two servers did not register")
    yield spec
    for server in started:
        server.terminate()


@pytest.fixture(scope="module")
def pruned_mlp():
    model, _ = prune_onnx(mlp(batch=16, sizes=(64, 128, 32)), "block:16x1", 0.25)
    return model


def _hosts(db) -> list[str]:
    return [json.loads(line)["host"] for line in (db / MEASUREMENT_LOG).read_text().splitlines()]


def test_cpu_tuning_over_rpc_spreads_over_the_servers(tmp_path, servers, pruned_mlp, rng):
    db = tmp_path / "db"
    results = tune(
        pruned_mlp, trials=5, work_dir=str(db), rpc=servers, rpc_timeout=TIMEOUT, progress=False
    )
    assert [r.skipped for r in results] == [None, None]
    assert all(
        r.stats.measured + r.stats.failed == 4 and r.best_seconds <= r.default_seconds
        for r in results
    )
    hosts = _hosts(db)
    assert len(hosts) == sum(1 + r.stats.measured for r in results)
    assert len(set(hosts)) == 2 and not any(
        "(local)" in h for h in hosts
    )  # both servers measured, this host none

    again = tune(
        pruned_mlp,
        trials=5,
        work_dir=str(db),
        rpc=str(servers),
        rpc_timeout=TIMEOUT,
        progress=False,
    )
    assert all(
        r.stats is None for r in again
    )  # resumed from the same database: nothing left to measure
    x = rng.standard_normal((16, 64)).astype("float32")
    exe = tvm_sparse.build(pruned_mlp, tuning_db=str(db))
    np.testing.assert_allclose(
        run_executable(exe, x), run_onnxruntime(pruned_mlp, {"x": x})[0], rtol=1e-4, atol=1e-4
    )


def test_device_tuning_over_rpc_runs_the_simulator_on_the_servers(
    tmp_path, servers, pruned_mlp, capsys
):
    path, db = tmp_path / "mlp.onnx", tmp_path / "db"
    onnx.save(pruned_mlp, path)
    assert (
        main(
            [
                "tune",
                str(path),
                "--target",
                "sparse-accel",
                "--trials",
                "4",
                "--db",
                str(db),
                "--rpc",
                str(servers),
                "--rpc-timeout",
                str(TIMEOUT),
                "--json",
                "--quiet",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert len(summary) == 2 and all(
        s["measured"] + s["failed"] == 3 and 0 < s["best_seconds"] <= s["default_seconds"]
        for s in summary
    )
    assert not any("(local)" in h for h in _hosts(db))
    # the tuned device build computes exactly what the untuned one does (tiling changes the schedule, not the integers)
    x = np.random.default_rng(1).standard_normal((16, 64)).astype("float32")
    tuned = tvm_sparse.build(pruned_mlp, "sparse-accel", tuning_db=str(db))
    untuned = tvm_sparse.build(pruned_mlp, "sparse-accel")
    np.testing.assert_array_equal(run_executable(tuned, x), run_executable(untuned, x))


def test_a_tracker_that_does_not_answer_is_one_line(tmp_path, pruned_mlp, capsys):
    path = tmp_path / "mlp.onnx"
    onnx.save(pruned_mlp, path)
    start = time.monotonic()
    assert main(["tune", str(path), "--db", str(tmp_path / "db"), "--rpc", "127.0.0.1:1:cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("tvm-sparse tune: error: no RPC tracker answers at 127.0.0.1:1")
        and "\n" not in err
    )
    assert time.monotonic() - start < TIMEOUT
    assert main(["tune", str(path), "--db", str(tmp_path / "db"), "--rpc", "localhost-9190"]) == 1
    assert "expected HOST:PORT:KEY" in capsys.readouterr().err


def test_a_key_without_servers_is_one_line(tmp_path, servers, pruned_mlp):
    start = time.monotonic()
    with pytest.raises(RPCUnavailable, match="has no server of key 'gpu'.*tvm-sparse rpc-server"):
        tune(
            pruned_mlp,
            trials=2,
            work_dir=str(tmp_path),
            rpc=f"{servers.host}:{servers.port}:gpu",
            rpc_timeout=TIMEOUT,
            progress=False,
        )
    assert time.monotonic() - start < TIMEOUT


def test_a_server_that_is_not_a_tvm_sparse_server_is_named(tmp_path, tracker, pruned_mlp):
    from tvm import rpc

    plain = rpc.Server(
        "127.0.0.1",
        port=19500,
        port_end=19900,
        tracker_addr=("127.0.0.1", tracker.port),
        key="plain",
        silent=True,
    )
    try:
        spec = RPCSpec("127.0.0.1", tracker.port, "plain")
        _wait_for(lambda: count_servers(spec, 5) == 1, 30, "the plain server did not register")
        with pytest.raises(
            RPCUnavailable,
            match=r"^the server of key 'plain' at .* is not a tvm-sparse RPC server \(start it with: tvm-sparse rpc-server\)$",
        ):
            tune(
                pruned_mlp,
                trials=2,
                work_dir=str(tmp_path),
                rpc=spec,
                rpc_timeout=TIMEOUT,
                progress=False,
            )
    finally:
        plain.terminate()


def test_rpc_server_command_registers_and_a_server_dying_mid_run_ends_tuning(
    tmp_path, tracker, pruned_mlp
):
    """``tvm-sparse rpc-server`` registers with the tracker; killed while a tuning run measures on it, the run
    ends with one line and exit 1 within a bounded time, and the records measured before it stay."""
    spec = RPCSpec("127.0.0.1", tracker.port, "lonely")
    env = {**os.environ, "TVM_NUM_THREADS": "1"}
    tuning = None
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tvm_sparse.cli",
            "rpc-server",
            "--tracker",
            f"127.0.0.1:{tracker.port}",
            "--key",
            "lonely",
            "--host",
            "127.0.0.1",
            "--port",
            "19500",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert "registered with the tracker" in server.stdout.readline()
        _wait_for(
            lambda: count_servers(spec, 5) == 1, 30, "the rpc-server command did not register"
        )
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
                "200",
                "--rpc",
                str(spec),
                "--rpc-timeout",
                "4",
                "--quiet",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        _wait_for(
            lambda: (db / MEASUREMENT_LOG).exists() and len(_hosts(db)) >= 2,
            120,
            "no measurements arrived",
        )
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
        start = time.monotonic()
        _, err = tuning.communicate(timeout=120)
        assert (
            time.monotonic() - start < 3 * 4
        )  # about one --rpc-timeout, not one per candidate still queued
        assert tuning.returncode == 1
        last = err.strip().splitlines()[-1]
        assert (
            last.startswith("tvm-sparse tune: error:")
            and "lonely" in last
            and f"the measurements so far are in {db}" in last
        )
        assert open_database(db) is not None and len(_hosts(db)) >= 2
    finally:
        for proc in (server, tuning):
            if proc is not None and proc.poll() is None:
                proc.kill()


@pytest.fixture
def not_a_tracker():
    """A TCP port that accepts connections and answers 4 bytes that are not the tracker's magic number."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def answer():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.recv(4)
                conn.sendall(b"HTTP")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    listener.close()


def test_a_peer_that_is_not_a_tracker_is_one_line(tmp_path, pruned_mlp, not_a_tracker, capsys):
    path = tmp_path / "mlp.onnx"
    onnx.save(pruned_mlp, path)
    assert (
        main(
            [
                "tune",
                str(path),
                "--db",
                str(tmp_path / "db"),
                "--rpc",
                f"127.0.0.1:{not_a_tracker}:cpu",
                "--rpc-timeout",
                "5",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert err == f"tvm-sparse tune: error: 127.0.0.1:{not_a_tracker} is not an RPC tracker"
    assert not (tmp_path / "db").exists()  # nothing was measured: no database is created
    assert (
        main(
            [
                "rpc-server",
                "--tracker",
                f"127.0.0.1:{not_a_tracker}",
                "--key",
                "cpu",
                "--port",
                "19500",
            ]
        )
        == 1
    )
    assert (
        capsys.readouterr().err.strip()
        == f"tvm-sparse rpc-server: error: 127.0.0.1:{not_a_tracker} is not an RPC tracker"
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--rpc", "127.0.0.1:99999:cpu"], "expected HOST:PORT with a port from 1 to 65535"),
        (["--rpc", "127.0.0.1:0:cpu"], "expected HOST:PORT with a port from 1 to 65535"),
        (["--rpc", "::1:9190:cpu"], "an IPv6 host in brackets"),
        (["--rpc", "127.0.0.1:9190: "], "expected HOST:PORT:KEY"),
        (
            ["--rpc", "127.0.0.1:9190:cpu", "--rpc-timeout", "nan"],
            "--rpc-timeout must be from 1 to 86400 seconds",
        ),
        (
            ["--rpc", "127.0.0.1:9190:cpu", "--rpc-timeout", "inf"],
            "--rpc-timeout must be from 1 to 86400 seconds",
        ),
        (
            ["--rpc", "127.0.0.1:9190:cpu", "--rpc-timeout", "1e-9"],
            "--rpc-timeout must be from 1 to 86400 seconds",
        ),
    ],
)
def test_rpc_options_are_checked_before_any_work(tmp_path, argv, message, capsys):
    assert main(["tune", str(tmp_path / "missing.onnx"), "--db", str(tmp_path / "db"), *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tvm-sparse tune: error:") and message in err and "\n" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--tracker", "127.0.0.1", "--key", "cpu"], "--tracker '127.0.0.1': expected HOST:PORT"),
        (
            ["--tracker", "127.0.0.1:9190", "--key", "cpu", "--port", "99999"],
            "--port must be from 1 to 65535",
        ),
        (["--tracker", "127.0.0.1:9190", "--key", " "], "a key is a non-blank name"),
    ],
)
def test_rpc_server_options_are_checked(argv, message, capsys):
    assert main(["rpc-server", *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("tvm-sparse rpc-server: error:") and message in err and "\n" not in err


def test_a_plain_tvm_server_among_the_keys_servers_ends_the_run(tmp_path, tracker, pruned_mlp):
    """A plain TVM server registered under the same key as a tvm-sparse one: the first measurement it gets
    ends the run with one line, instead of skipping tasks or failing candidates silently."""
    from tvm import rpc

    spec = RPCSpec("127.0.0.1", tracker.port, "mixed")
    ours = serve(spec.address, "mixed", host="127.0.0.1", port=19500, port_end=19900)
    plain = rpc.Server(
        "127.0.0.1",
        port=19500,
        port_end=19900,
        tracker_addr=(spec.host, spec.port),
        key="mixed",
        silent=True,
    )
    try:
        _wait_for(lambda: count_servers(spec, 5) == 2, 30, "the two servers did not register")
        with pytest.raises(
            RPCUnavailable,
            match=r"^the server of key 'mixed' at .* is not a tvm-sparse RPC server \(start it with",
        ):
            tune(
                pruned_mlp,
                "sparse-accel",
                trials=24,
                work_dir=str(tmp_path),
                rpc=spec,
                rpc_timeout=TIMEOUT,
                progress=False,
            )
    finally:
        ours.terminate()
        plain.terminate()
