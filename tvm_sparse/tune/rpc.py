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
runs. As in MetaSchedule's ``RPCRunner``, measurements run in a pool of
worker processes, one per server, each asking the tracker for a session:
candidates are measured in parallel over the servers, and a worker that
does not answer within the timeout is killed. The tracker is spoken to with
TVM's protocol (``tvm.rpc.base``) on sockets whose every operation is
bounded by the timeout; TVM's client retries for a minute and can wait
forever on a peer that is not a tracker. A tracker that does not answer, a key without servers, or servers
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
import time
from dataclasses import dataclass

import numpy as np

from ..errors import TVMSparseError

HOST_FUNC = "tvm_sparse.rpc.host"
SIMULATE_FUNC = "tvm_sparse.rpc.simulate"


class RPCUnavailable(TVMSparseError):
    """The tracker or its servers cannot measure: no answer, no server of the key, or not a tvm-sparse server."""


class NotTVMSparseServer(RPCUnavailable):
    """A server of the key lacks tvm-sparse's functions (a plain ``python -m tvm.exec.rpc_server``)."""


def parse_address(text: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[V6ADDR]:PORT`` for an IPv6 address) as ``(host, port)``; raises
    :class:`RPCUnavailable` naming ``what`` on anything else."""
    host, _, port = str(text).rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    valid_port = port.isdigit() and 1 <= int(port) <= 65535
    if not host or (":" in host and not bracketed) or not valid_port:
        raise RPCUnavailable(
            f"{what} {text!r}: expected HOST:PORT with a port from 1 to 65535 (an IPv6 host in brackets: [::1]:9190)"
        )
    return host, int(port)


@dataclass(frozen=True)
class RPCSpec:
    """Where to measure: the tracker's address and the key its servers registered with."""

    host: str
    port: int
    key: str

    @staticmethod
    def parse(text: str) -> RPCSpec:
        """``HOST:PORT:KEY`` (e.g. ``10.0.0.5:9190:zen3``); raises :class:`RPCUnavailable` on anything else."""
        address, _, key = str(text).rpartition(":")
        if not key.strip() or not address:
            raise RPCUnavailable(
                f"RPC tracker {text!r}: expected HOST:PORT:KEY (e.g. 127.0.0.1:9190:cpu)"
            )
        return RPCSpec(*parse_address(address, "RPC tracker"), key)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.address}:{self.key}"


def _tracker_socket(spec: RPCSpec, timeout: float) -> socket.socket:
    """A socket to the tracker after TVM's tracker handshake, every operation bounded by ``timeout`` seconds
    (TVM's own client retries for a minute and can wait forever on a peer that is not a tracker)."""
    from tvm.rpc import base

    try:
        sock = socket.create_connection((spec.host, spec.port), timeout=timeout)
    except OSError as err:
        raise RPCUnavailable(
            f"no RPC tracker answers at {spec.address} ({err.strerror or err}); "
            f"start one with: python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port {spec.port}"
        ) from None
    try:
        sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
        magic = struct.unpack("<i", base.recvall(sock, 4))[0]
    except (OSError, RuntimeError, struct.error) as err:
        sock.close()
        raise RPCUnavailable(
            f"{spec.address} does not answer as an RPC tracker ({err or type(err).__name__})"
        ) from None
    if magic != base.RPC_TRACKER_MAGIC:
        sock.close()
        raise RPCUnavailable(f"{spec.address} is not an RPC tracker")
    return sock


def _ask_tracker(spec: RPCSpec, timeout: float, request: list):
    """Send ``request`` to the tracker and return its answer's value; raises :class:`RPCUnavailable`."""
    from tvm.rpc import base

    with _tracker_socket(spec, timeout) as sock:
        try:
            base.sendjson(sock, request)
            code, value = base.recvjson(sock)
        except (OSError, RuntimeError, ValueError) as err:
            raise RPCUnavailable(
                f"the RPC tracker at {spec.address} stopped answering ({err or type(err).__name__})"
            ) from None
    if code != base.TrackerCode.SUCCESS:
        raise RPCUnavailable(f"the RPC tracker at {spec.address} refused {request[0]}: {value}")
    return value


def servers(spec: RPCSpec, timeout: float) -> list[tuple[str, int]]:
    """The addresses of the servers of ``spec.key`` the tracker knows (busy or free)."""
    from tvm.rpc import base

    info = _ask_tracker(spec, timeout, [base.TrackerCode.SUMMARY])["server_info"]
    return [tuple(item["addr"]) for item in info if item["key"].partition(":")[2] == spec.key]


def count_servers(spec: RPCSpec, timeout: float) -> int:
    """How many servers of ``spec.key`` the tracker knows; raises :class:`RPCUnavailable` when it does not answer."""
    return len(servers(spec, timeout))


def register_server_functions() -> None:
    """Register the functions a tvm-sparse RPC server offers (TVM's ``server_init_callback``)."""
    import tvm_ffi

    name = (
        f"{socket.gethostname()}/{os.getpid()}"  # the server process: sessions are forked from it
    )

    @tvm_ffi.register_global_func(HOST_FUNC, override=True)
    def host() -> str:
        return name

    @tvm_ffi.register_global_func(SIMULATE_FUNC, override=True)
    def simulate(program: bytes, device_json: str, out_addr: int, out_bytes: int) -> bytes:
        """Run a sparse-accel program on the simulator: 8 bytes of cycles (little-endian) + ``out_bytes`` at ``out_addr``."""
        from ..hw.device import Device
        from ..hw.isa import Program
        from ..sim import run

        result = run(
            Program.from_bytes(bytes(program)),
            Device.from_dict(json.loads(device_json), "RPC client"),
        )
        output = result.read(out_addr, (out_bytes,), np.int8)
        return struct.pack("<Q", result.report.total.cycles) + output.tobytes()


def serve(
    tracker: str,
    key: str,
    host: str = "0.0.0.0",
    port: int = 9090,
    port_end: int = 9199,
    wait: float = 30.0,
):
    """Start a tvm-sparse RPC server (TVM's ``tvm.rpc.Server`` in a child process) on the first free port in
    ``[port, port_end)`` and wait up to ``wait`` seconds for it to register with the tracker at ``tracker``
    (``HOST:PORT``) under ``key``. Returns the :class:`tvm.rpc.Server` (``.port``; ``.terminate()`` stops it).
    Raises :class:`RPCUnavailable` when no tracker answers there or the server does not register."""
    from tvm import rpc

    spec = RPCSpec(*parse_address(tracker, "--tracker"), key)
    count_servers(spec, timeout=10)  # a tracker answers there
    server = rpc.Server(
        host,
        port,
        port_end,
        tracker_addr=(spec.host, spec.port),
        key=key,
        silent=True,
        server_init_callback=register_server_functions,
    )
    deadline = time.monotonic() + wait
    while not any(addr[1] == server.port for addr in servers(spec, timeout=10)):
        if time.monotonic() > deadline or not server.proc.is_alive():
            server.terminate()
            raise RPCUnavailable(
                f"the RPC server on port {server.port} did not register with the tracker at {spec.address} within {wait:g} s"
            )
        time.sleep(0.2)
    return server


# Pool workers: each opens its own session through the tracker, so candidates spread over the servers.


def _session(spec: RPCSpec, timeout: float):
    """A session with a server of ``spec.key`` (waits for a free one) and the server's name."""
    from tvm import rpc
    from tvm.rpc import base

    with _tracker_socket(spec, timeout) as sock:
        sock.settimeout(None)  # the worker's own timeout bounds the wait for a free server
        base.sendjson(sock, [base.TrackerCode.REQUEST, spec.key, "", 1])
        code, value = base.recvjson(sock)
    if code != base.TrackerCode.SUCCESS:
        raise RPCUnavailable(f"the RPC tracker at {spec.address} refused a session: {value}")
    url, port, match_key = value
    session = rpc.connect(url, port, match_key, session_timeout=timeout)
    try:
        host = session.get_function(HOST_FUNC)()
    except AttributeError:
        raise NotTVMSparseServer(
            f"the server of key {spec.key!r} at {url}:{port} is not a tvm-sparse RPC server "
            f"(start it with: tvm-sparse rpc-server)"
        ) from None
    return session, host


def _probe(spec: RPCSpec, timeout: float) -> str:
    return _session(spec, timeout)[1]


def _run_kernel(
    spec: RPCSpec, timeout: float, library: str, args: list, out_shape: tuple
) -> tuple[float, np.ndarray, str]:
    from ..kernels.tasks import kernel_seconds

    session, host = _session(spec, timeout)
    name = os.path.basename(library)
    session.upload(library, name)
    seconds, output = kernel_seconds(session.load_module(name), session.cpu(), args, out_shape)
    session.remove(name)
    return seconds, output, host


def _run_program(
    spec: RPCSpec, timeout: float, program: bytes, device_json: str, out_addr: int, out_bytes: int
) -> tuple[int, bytes, str]:
    session, host = _session(spec, timeout)
    raw = session.get_function(SIMULATE_FUNC)(program, device_json, out_addr, out_bytes)
    (cycles,) = struct.unpack_from("<Q", raw)
    return cycles, bytes(raw[8:]), host


def last_line(err: BaseException) -> str:
    """The last non-blank line of an error's message (a pool worker re-raises with its traceback as the message;
    TVM's errors end with theirs); the type's name when the message is empty."""
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(err).__name__


class _Remote:
    """A candidate in flight on a server: ``result()`` gives ``(seconds, host)`` once its output checks."""

    def __init__(self, measurer: RPCMeasurer, candidate, future: concurrent.futures.Future):
        self.measurer, self.candidate, self.future = measurer, candidate, future

    def done(self) -> bool:
        return self.future.done()

    def result(self) -> tuple[float, str]:
        from ..codegen.gemm_task import ProgramCandidate

        try:
            value, output, host = self.future.result()
        except TimeoutError:
            reason = f"no answer within {self.measurer.timeout:g} s"
            self.measurer.failed(reason)
            raise TimeoutError(reason) from None
        except NotTVMSparseServer as err:
            raise NotTVMSparseServer(last_line(err).partition(": ")[2]) from None
        except Exception as err:  # noqa: BLE001 - a remote error arrives as whatever the worker could pickle
            self.measurer.failed(last_line(err))
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
    no server of the key is registered, a server is not a tvm-sparse server, or the servers are gone
    (every server left the tracker, or ``3 x servers`` measurements in a row got no answer).
    ``timeout``: seconds for one measurement, the wait for a free server included.
    """

    def __init__(self, spec: RPCSpec, target, timeout: float = 60.0):
        from tvm.support.popen_pool import PopenPoolExecutor

        self.spec, self.target, self.timeout = spec, target, timeout
        self.servers = count_servers(spec, timeout)
        if self.servers == 0:
            raise RPCUnavailable(
                f"the RPC tracker at {spec.address} has no server of key {spec.key!r} "
                f"(start one with: tvm-sparse rpc-server --tracker {spec.address} --key {spec.key})"
            )
        self.directory = tempfile.TemporaryDirectory(
            prefix="tvm-sparse-rpc-"
        )  # the libraries on their way out
        self.pool = PopenPoolExecutor(max_workers=self.servers, timeout=timeout)
        self.pending: set[concurrent.futures.Future] = set()
        self.in_a_row = 0
        self.count = 0
        try:
            self.pool.submit(_probe, spec, timeout).result()
        except TimeoutError:
            self.close()
            raise RPCUnavailable(
                f"no server of key {spec.key!r} at {spec.address} gave a session within {timeout:g} s"
            ) from None
        except Exception as err:  # noqa: BLE001 - whatever the first session met, as one line
            self.close()
            line = last_line(err)
            raise RPCUnavailable(
                line.partition(": ")[2]
                if isinstance(err, RPCUnavailable)
                else f"no session with a server of key {spec.key!r}: {line}"
            ) from None

    def submit(self, candidate) -> _Remote:
        """Start measuring ``candidate`` (:class:`~tvm_sparse.kernels.tasks.KernelCandidate`: built here
        for the target; :class:`~tvm_sparse.codegen.gemm_task.ProgramCandidate`: sent as it is)."""
        from ..kernels.tasks import KernelCandidate

        if isinstance(candidate, KernelCandidate):
            self.count += 1
            library = os.path.join(self.directory.name, f"kernel-{self.count}.so")
            candidate.build(self.target).export_library(library)
            future = self.pool.submit(
                _run_kernel,
                self.spec,
                self.timeout,
                library,
                candidate.args,
                candidate.expected.shape,
            )
        else:
            library = None
            future = self.pool.submit(
                _run_program,
                self.spec,
                self.timeout,
                candidate.program.to_bytes(),
                candidate.device.dumps(),
                candidate.out_addr,
                candidate.expected.size,
            )
        self.pending.add(future)

        def finished(done):
            self.pending.discard(done)
            if library is not None and os.path.exists(library):
                os.remove(library)

        future.add_done_callback(finished)
        return _Remote(self, candidate, future)

    def answered(self) -> None:
        self.in_a_row = 0

    def failed(self, reason: str) -> None:
        """A measurement got no result: raise :class:`RPCUnavailable` when the servers are gone, else return
        (the candidate counts as failed)."""
        self.in_a_row += 1
        if count_servers(self.spec, min(self.timeout, 10.0)) == 0:
            raise RPCUnavailable(
                f"no server of key {self.spec.key!r} is left at {self.spec.address} (last error: {reason})"
            )
        if self.in_a_row >= 3 * self.servers:
            raise RPCUnavailable(
                f"{self.in_a_row} measurements in a row failed on the servers of key {self.spec.key!r} (last: {reason})"
            )

    def close(self) -> None:
        """Cancel what has not started, stop the workers (a measurement in flight is dropped)."""
        for future in list(self.pending):
            future.cancel()
        self.pool.shutdown(wait=False)
        self.directory.cleanup()
