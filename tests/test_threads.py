"""Thread settings are explicit: importing changes nothing, building sizes TVM's pool to every CPU."""

import os
import subprocess
import sys

import pytest

from tvm_sparse.threads import THREADS_ENV, available_cpus, set_threads, use_available_cpus

IMPORT_ONLY = "import os, tvm_sparse; print(os.environ.get('TVM_NUM_THREADS'))"
BUILD_AND_RUN = (
    "import os, numpy as np, tvm, tvm_sparse\n"
    "from tvm import relax\n"
    "from tvm_sparse.testing import mlp\n"
    "exe = tvm_sparse.build(mlp(batch=2, sizes=(8, 4)))\n"
    "relax.VirtualMachine(exe, tvm.cpu())['main'](tvm.runtime.tensor(np.ones((2, 8), 'float32')))\n"
    "print(os.environ.get('TVM_NUM_THREADS'), tvm.get_global_func('runtime.NumThreads')())\n"
)


def _fresh_process(code: str, env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != THREADS_ENV}
    if env_value is not None:
        env[THREADS_ENV] = env_value
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip().splitlines()[-1]


def test_import_leaves_the_environment_alone():
    assert _fresh_process(IMPORT_ONLY, None) == "None"


def test_a_build_then_a_plain_vm_uses_every_available_cpu():
    cpus = available_cpus()
    assert _fresh_process(BUILD_AND_RUN, None) == f"{cpus} {cpus}"


def test_user_setting_wins():
    assert _fresh_process(BUILD_AND_RUN, "1") == "1 1"


def test_explicit_settings(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    use_available_cpus()
    assert os.environ[THREADS_ENV] == str(available_cpus())
    monkeypatch.setenv(THREADS_ENV, "3")
    use_available_cpus()  # the user's value stays
    assert os.environ[THREADS_ENV] == "3"
    set_threads(2)  # an explicit count overrides it
    assert os.environ[THREADS_ENV] == "2"
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="positive integer"):
            set_threads(bad)
