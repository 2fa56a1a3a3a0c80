"""Every ONNX backend node test through tvm-sparse and through plain TVM, against the expected outputs.

    python benchmarks/onnx_node_suite.py [--jobs 2] [--timeout 120] [-k REGEX] [--json results.json] [--behind-conv]

``--behind-conv`` runs each case with its float32 inputs passed through an
identity 1x1 convolution first (cases without such an input are left out), so
that tvm-sparse converts the op's layout as it does inside a CNN.

Each (case, backend) runs in a worker process; a worker that crashes (SIGFPE,
segfault) or exceeds the timeout (per case and backend, not counting the
worker's start) is killed, the item is counted as failed and a fresh worker
takes the next item. Prints how many cases pass under both
backends, under TVM only, under tvm-sparse only and under neither, then the
"TVM only" cases with tvm-sparse's failure.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import selectors
import signal
import subprocess
import sys
import threading

from tvm_sparse.testing.onnx_nodes import BACKENDS, behind_conv, check_case, node_cases

PASS = "pass"


#: Seconds a worker may take to start (importing TVM and generating every case), outside the per-case timeout.
STARTUP_TIMEOUT = 600.0


def _worker(conv: bool) -> None:
    """Say ``ready``, then answer ``case<TAB>backend`` lines on stdin with one JSON line each (``PASS`` or
    the failure)."""
    reply = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(
        devnull, 1
    )  # TVM and the importer print diagnostics; the replies have their own descriptor
    cases = node_cases()
    reply.write(json.dumps("ready") + "\n")
    reply.flush()
    for line in sys.stdin:
        name, backend = line.rstrip("\n").split("\t")
        case = behind_conv(cases[name]) if conv else cases[name]
        reply.write(json.dumps(check_case(case, backend) or PASS) + "\n")
        reply.flush()


class _Worker:
    """One worker process, started on first use and again after it dies."""

    def __init__(self, conv: bool):
        self.proc = None
        self.args = [sys.executable, __file__, "--worker"] + (["--behind-conv"] if conv else [])

    def _reply(self, timeout: float) -> str:
        """The worker's next reply, or why there is none (the worker is then stopped)."""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            line = self.proc.stdout.readline() if sel.select(timeout) else None
        if line:
            return json.loads(line)
        code = self.stop()
        if line is None:
            return f"timeout after {timeout:.0f} s"
        return (
            f"crash ({signal.Signals(-code).name})"
            if code < 0
            else f"worker exited with status {code}"
        )

    def ask(self, name: str, backend: str, timeout: float) -> str:
        if self.proc is None:
            self.proc = subprocess.Popen(
                self.args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=dict(os.environ, TVM_NUM_THREADS="1"),
                text=True,
                start_new_session=True,
            )
            started = self._reply(STARTUP_TIMEOUT)
            if started != "ready":
                return f"worker did not start: {started}"
        self.proc.stdin.write(f"{name}\t{backend}\n")
        self.proc.stdin.flush()
        return self._reply(timeout)

    def stop(self) -> int | None:
        """Kill the worker (if any) and return its exit status."""
        if self.proc is None:
            return None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        code, self.proc = self.proc.wait(), None
        return code


def run_suite(
    names: list[str], jobs: int, timeout: float, conv: bool = False, progress=None
) -> dict[str, dict[str, str]]:
    """``{case: {backend: PASS or why it failed}}`` for every case in ``names``."""
    todo = queue.Queue()
    for name in names:
        todo.put(name)
    results: dict[str, dict[str, str]] = {}
    lock = threading.Lock()

    def serve():
        worker = _Worker(conv)
        try:
            while True:
                try:
                    name = todo.get_nowait()
                except queue.Empty:
                    return
                outcome = {backend: worker.ask(name, backend, timeout) for backend in BACKENDS}
                with lock:
                    results[name] = outcome
                    if progress:
                        progress(len(results), len(names))
        finally:
            worker.stop()

    threads = [threading.Thread(target=serve) for _ in range(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def summarize(results: dict[str, dict[str, str]]) -> str:
    """The pass/fail table of the two backends and the cases that only plain TVM passes."""
    groups = {"both": [], "TVM only": [], "tvm-sparse only": [], "neither": []}
    for name, outcome in sorted(results.items()):
        tvm_ok, ours_ok = outcome["tvm"] == PASS, outcome["tvm-sparse"] == PASS
        key = (
            "both"
            if tvm_ok and ours_ok
            else "TVM only"
            if tvm_ok
            else "tvm-sparse only"
            if ours_ok
            else "neither"
        )
        groups[key].append(name)
    lines = [f"{len(results)} node test cases", "", "| passed by | cases |", "|---|---|"]
    lines += [f"| {key} | {len(names)} |" for key, names in groups.items()]
    for key in ("TVM only", "tvm-sparse only"):
        if groups[key]:
            lines += ["", f"{key}:"]
            failing = "tvm-sparse" if key == "TVM only" else "tvm"
            lines += [f"  {name}: {results[name][failing]}" for name in groups[key]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds per case and backend (default 120)"
    )
    parser.add_argument("-k", metavar="REGEX", help="only the cases whose name matches")
    parser.add_argument(
        "--json", metavar="FILE", help="also write {case: {backend: outcome}} to FILE"
    )
    parser.add_argument(
        "--behind-conv", action="store_true", help="run each case behind an identity convolution"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.behind_conv)
        return
    if args.jobs < 1 or args.timeout <= 0:
        parser.error("--jobs and --timeout must be positive")
    try:
        pattern = re.compile(args.k or "")
    except re.error as err:
        parser.error(f"-k: not a regular expression ({err})")
    cases = node_cases()
    names = sorted(
        n for n, case in cases.items() if not args.behind_conv or behind_conv(case) is not None
    )
    names = [n for n in names if pattern.search(n)]
    if not names:
        parser.error("no node test case matches")

    def progress(done, total):
        if done % 50 == 0 or done == total:
            print(f"  {done}/{total}", file=sys.stderr, flush=True)

    results = run_suite(names, args.jobs, args.timeout, args.behind_conv, progress)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, sort_keys=True)
    print(summarize(results))


if __name__ == "__main__":
    main()
