# dlrs-bench: `make demo` and `make test` each bootstrap .venv first (pinned CPU set).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip --disable-pip-version-check
CPU_STAMP := $(VENV)/.installed-cpu
GPU_STAMP := $(VENV)/.installed-gpu
# a .venv made by `make install-gpu` is kept; otherwise the pinned CPU set is installed
STAMP  := $(if $(wildcard $(GPU_STAMP)),$(GPU_STAMP),$(CPU_STAMP))

TORCH_CUDA_INDEX ?= https://download.pytorch.org/whl/cu130

.PHONY: install install-gpu demo test test-gpu bench clean

install: $(STAMP)

$(CPU_STAMP): pyproject.toml requirements-cpu.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements-cpu.txt
	$(PIP) install -q --no-deps torchrec==1.8.0
	$(PIP) install -q --no-deps -e .
	$(PIP) install -q -e '.[mlperf]'  # MLPerf's checkers, for tests/test_mlperf.py
	touch $(CPU_STAMP)

# CUDA machines: the CUDA 13 set (torch 2.11.0+cu130, fbgemm-gpu 1.6.0, torchrec 1.6.1) in .venv.
install-gpu: $(GPU_STAMP)

$(GPU_STAMP): pyproject.toml requirements-gpu.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --extra-index-url $(TORCH_CUDA_INDEX) -r requirements-gpu.txt
	$(PIP) install -q --no-deps torchrec==1.6.1
	$(PIP) install -q --no-deps -e .
	$(PIP) install -q -e '.[mlperf]'
	touch $(GPU_STAMP)

demo: $(STAMP)
	$(VENV)/bin/dlrs-bench run suites/quickstart.yaml

test: $(STAMP)
	$(PY) -m pytest -q

# Benchmarks (pytest-benchmark): JSON comparable across commits in build/bench/<git sha>.json
bench: $(STAMP)
	mkdir -p build/bench
	$(PY) -m pytest benchmarks -q --benchmark-enable --benchmark-only \
		--benchmark-json=build/bench/$$(git rev-parse --short HEAD 2>/dev/null || echo local).json

test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu

clean:
	rm -rf $(VENV) results .pytest_cache
