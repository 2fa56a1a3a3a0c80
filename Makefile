# Both entry points create (or reuse) .venv and install the project with pinned dependencies.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: demo test bench clean

$(VENV)/.installed-%: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$*]'
	touch $@

demo: $(VENV)/.installed-test
	$(PY) -m tvm_sparse.demo

test: $(VENV)/.installed-test
	$(PY) -m ruff check tvm_sparse tests benchmarks tutorials
	$(PY) -m ruff format --check tvm_sparse tests benchmarks tutorials
	$(PY) -m pytest -q

bench: $(VENV)/.installed-bench
	$(PY) benchmarks/bsr_matmul.py
	$(PY) benchmarks/bert_encoder.py
	$(PY) benchmarks/structured_sparsity.py
	$(PY) benchmarks/dense_ops.py
	$(PY) benchmarks/dense_models.py
	$(PY) benchmarks/sparse_models.py
	$(PY) benchmarks/accel_sim.py
	$(PY) benchmarks/accel_models.py --layers 2 --image 112
	$(PY) benchmarks/tune_cpu.py
	$(PY) benchmarks/tune_device.py
	$(PY) benchmarks/compression.py
	$(PY) benchmarks/bad_inputs.py

clean:
	rm -rf $(VENV) build *.egg-info
