"""Measuring tuning candidates on other machines through TVM's RPC tracker.

A tuning run given an :class:`RPCSpec` (``HOST:PORT:KEY``) builds every
candidate on this machine and measures it on a server of that key: TVM's
own RPC server, started by ``tvm-sparse rpc-server`` (:func:`serve`), which
registers :data:`HOST_FUNC` and :data:`SIMULATE_FUNC` in every session.
What travels over the wire:

* a host kernel: its shared library and input arrays out; its output and
  times (TVM's ``time_evaluator`` on the server) back;
* a device layer: its program (instructions and DRAM image, weights
  included) and the device description out; its cycles and output back.

Outputs are checked here against the numpy reference, so a server only
runs. As in MetaSchedule's ``RPCRunner`` (whose :class:`RPCConfig` this
uses), measurements run in a pool of worker processes, one per server, each
asking the tracker for a session: candidates are measured in parallel over
the servers, and a worker that does not answer within the timeout is
killed. A tracker that does not answer, a key without servers, or servers
that are all gone raise :class:`RPCUnavailable` within a bounded time.

TVM's RPC has no authentication: a server runs whatever it is sent. Keep
trackers and servers on a trusted network.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import socket
import struct
import tempfile
from dataclasses import dataclass

import numpy as np

from ..errors import TVMSparseError

HOST_FUNC = "tvm_sparse.rpc.host"
SIMULATE_FUNC = "tvm_sparse.rpc.simulate"


class RPCUnavailable(TVMSparseError):
    """The tracker or its servers cannot measure: no answer, no server of the key, or not a tvm-sparse server."""


@dataclass(frozen=True)
class RPCSpec:
    """Where to measure: the tracker's address and the key its servers registered with."""

    host: str
    port: int
    key: str

    @staticmethod
    def parse(text: str) -> RPCSpec:
        """``HOST:PORT:KEY`` (e.g. ``10.0.0.5:9190:zen3``); raises :class:`RPCUnavailable` on anything else."""
        parts = str(text).rsplit(":", 2)
        if len(parts) != 3 or not all(parts) or not parts[1].isdigit():
            raise RPCUnavailable(f"RPC tracker {text!r}: expected HOST:PORT:KEY (e.g. 127.0.0.1:9190:cpu)")
        return RPCSpec(parts[0], int(parts[1]), parts[2])

    def __str__(self) -> str:
        return f"{self.host}:{self.port}:{self.key}"

    def config(self, timeout: float):
        """MetaSchedule's :class:`RPCConfig` for this tracker (``timeout``: seconds, for the tracker and a session)."""
        from tvm.s_tir.meta_schedule.runner import RPCConfig

        return RPCConfig(self.host, self.port, self.key, session_timeout_sec=timeout)


def register_server_functions() -> None:
    """Register the functions a tvm-sparse RPC server offers (TVM's ``server_init_callback``)."""
    import tvm_ffi

    name = f"{socket.gethostname()}/{os.getpid()}"  # the server process: sessions are forked from it

    @tvm_ffi.register_global_func(HOST_FUNC, override=True)
    def host() -> str:
        return name

    @tvm_ffi.register_global_func(SIMULATE_FUNC, override=True)
    def simulate(program: bytes, device_json: str, out_addr: int, out_bytes: int) -> bytes:
        """Run a sparse-accel program on the simulator: 8 bytes of cycles (little-endian) + ``out_bytes`` at ``out_addr``."""
        from ..accel.device import Device
        from ..accel.isa import Program
        from ..sim import run

        result = run(Program.from_bytes(bytes(program)), Device.from_dict(json.loads(device_json), "RPC client"))
        output = result.read(out_addr, (out_bytes,), np.int8)
        return struct.pack("<Q", result.report.total.cycles) + output.tobytes()


def _check_tracker(spec: RPCSpec, timeout: float) -> None:
    """Raise :class:`RPCUnavailable` unless a tracker answers at ``spec`` within ``timeout`` seconds."""
    try:
        with socket.create_connection((spec.host, spec.port), timeout=timeout):
            pass
    except OSError as err:
        raise RPCUnavailable(f"no RPC tracker answers at {spec.host}:{spec.port} ({err.strerror or err}); "
                             f"start one with: python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port {spec.port}") from None


def serve(tracker: str, key: str, host: str = "0.0.0.0", port: int = 9090, port_end: int = 9199):
    """Start a tvm-sparse RPC server (TVM's ``tvm.rpc.Server`` in a child process) that registers with the
    tracker at ``tracker`` (``HOST:PORT``) under ``key``, on the first free port in ``[port, port_end)``.
    Returns the :class:`tvm.rpc.Server` (``.port``; ``.terminate()`` stops it). Raises
    :class:`RPCUnavailable` when no tracker answers."""
    from tvm import rpc

    spec = RPCSpec.parse(f"{tracker}:{key}")
    _check_tracker(spec, timeout=10)
    return rpc.Server(host, port, port_end, tracker_addr=(spec.host, spec.port), key=key, silent=True,
                      server_init_callback=register_server_functions)


def count_servers(spec: RPCSpec, timeout: float) -> int:
    """How many servers of ``spec.key`` the tracker knows (raises :class:`RPCUnavailable` when it does not answer)."""
    _check_tracker(spec, timeout)
    try:
        return spec.config(timeout).count_num_servers(allow_missing=True)
    except Exception as err:  # noqa: BLE001 - the tracker's reply, whatever went wrong with it
        raise RPCUnavailable(f"the RPC tracker at {spec.host}:{spec.port} does not answer ({type(err).__name__}: {err})") from None


# Pool workers: each opens its own session through the tracker, so candidates spread over the servers.


def _session(config):
    session = config.connect_server()
    return session, session.get_function(HOST_FUNC)()


def _probe(config) -> str:
    return _session(config)[1]


def _run_kernel(config, library: str, args: list, out_shape: tuple) -> tuple[float, np.ndarray, str]:
    from ..schedule.tasks import kernel_seconds

    session, host = _session(config)
    name = os.path.basename(library)
    session.upload(library, name)
    seconds, output = kernel_seconds(session.load_module(name), session.cpu(), args, out_shape)
    session.remove(name)
    return seconds, output, host


def _run_program(config, program: bytes, device_json: str, out_addr: int, out_bytes: int) -> tuple[int, bytes, str]:
    session, host = _session(config)
    raw = session.get_function(SIMULATE_FUNC)(program, device_json, out_addr, out_bytes)
    (cycles,) = struct.unpack_from("<Q", raw)
    return cycles, bytes(raw[8:]), host


class _Remote:
    """A candidate in flight on a server: ``result()`` gives ``(seconds, host)`` once its output checks."""

    def __init__(self, measurer: RPCMeasurer, candidate, future: concurrent.futures.Future):
        self.measurer, self.candidate, self.future = measurer, candidate, future

    def done(self) -> bool:
        return self.future.done()

    def result(self) -> tuple[float, str]:
        from ..schedule.tasks import ProgramCandidate

        try:
            value, output, host = self.future.result()
        except TimeoutError:
            self.measurer.failed(f"no answer within {self.measurer.timeout:g} s")
            raise
        except Exception as err:  # noqa: BLE001 - a remote error arrives as whatever the worker could pickle
            self.measurer.failed(f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}")
            raise
        self.measurer.answered()
        if isinstance(self.candidate, ProgramCandidate):
            output = np.frombuffer(output, np.int8).reshape(self.candidate.expected.shape)
            value = self.candidate.seconds(value)
        self.candidate.check(output)
        return value, host


class RPCMeasurer:
    """Measures candidates on the servers of ``spec.key``, one worker process per server.

    Raises :class:`RPCUnavailable` (at construction, or from a result) when the tracker does not answer,
    no server of the key is registered or answers as a tvm-sparse server, or the servers are gone
    (every server left the tracker, or ``3 x servers`` measurements in a row got no answer).
    ``timeout``: seconds for one measurement, tracker request included.
    """

    def __init__(self, spec: RPCSpec, target, timeout: float = 60.0):
        from tvm.support.popen_pool import PopenPoolExecutor

        self.spec, self.target, self.timeout = spec, target, timeout
        self.config = spec.config(timeout)
        self.servers = count_servers(spec, timeout)
        if self.servers == 0:
            raise RPCUnavailable(f"the RPC tracker at {spec.host}:{spec.port} has no server of key {spec.key!r} "
                                 f"(start one with: tvm-sparse rpc-server --tracker {spec.host}:{spec.port} --key {spec.key})")
        self.directory = tempfile.TemporaryDirectory(prefix="tvm-sparse-rpc-")  # the libraries on their way out
        self.pool = PopenPoolExecutor(max_workers=self.servers, timeout=timeout)
        self.in_a_row = 0
        self.count = 0
        try:
            self.pool.submit(_probe, self.config).result()
        except TimeoutError:
            self.close()
            raise RPCUnavailable(f"no server of key {spec.key!r} at {spec.host}:{spec.port} gave a session within {timeout:g} s") from None
        except Exception as err:  # noqa: BLE001
            self.close()
            raise RPCUnavailable(f"the server of key {spec.key!r} at {spec.host}:{spec.port} is not a tvm-sparse RPC server "
                                 f"(start it with tvm-sparse rpc-server): {str(err).strip().splitlines()[-1]}") from None

    def submit(self, candidate) -> _Remote:
        """Start measuring ``candidate`` (:class:`~tvm_sparse.schedule.tasks.KernelCandidate`: built here
        for the target; :class:`~tvm_sparse.schedule.tasks.ProgramCandidate`: sent as it is)."""
        from ..schedule.tasks import KernelCandidate

        if isinstance(candidate, KernelCandidate):
            self.count += 1
            library = os.path.join(self.directory.name, f"kernel-{self.count}.so")
            candidate.build(self.target).export_library(library)
            future = self.pool.submit(_run_kernel, self.config, library, candidate.args, candidate.expected.shape)
            future.add_done_callback(lambda _: os.path.exists(library) and os.remove(library))
        else:
            future = self.pool.submit(_run_program, self.config, candidate.program.to_bytes(), candidate.device.to_json(),
                                      candidate.out_addr, candidate.expected.size)
        return _Remote(self, candidate, future)

    def answered(self) -> None:
        self.in_a_row = 0

    def failed(self, reason: str) -> None:
        """A measurement got no result: raise :class:`RPCUnavailable` when the servers are gone, else return
        (the candidate counts as failed)."""
        self.in_a_row += 1
        left = count_servers(self.spec, self.timeout)
        if left == 0:
            raise RPCUnavailable(f"no server of key {self.spec.key!r} is left at {self.spec.host}:{self.spec.port} (last error: {reason})")
        if self.in_a_row >= 3 * self.servers:
            raise RPCUnavailable(f"{self.in_a_row} measurements in a row failed on the servers of key {self.spec.key!r} (last: {reason})")

    def close(self) -> None:
        self.pool.shutdown()
        self.directory.cleanup()
