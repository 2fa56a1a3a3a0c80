import os
import subprocess
import sys

from tvm_sparse.threads import THREADS_ENV, available_cpus

PROBE = "import tvm_sparse, tvm; print(tvm.get_global_func('runtime.NumThreads')())"


def _threads_in_fresh_process(env_value: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != THREADS_ENV}
    if env_value is not None:
        env[THREADS_ENV] = env_value
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


def test_import_uses_every_available_cpu():
    assert _threads_in_fresh_process(None) == available_cpus()


def test_user_setting_wins():
    assert _threads_in_fresh_process("1") == 1
