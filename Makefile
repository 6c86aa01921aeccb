# dlrs-bench: `make demo` and `make test` each bootstrap .venv first (pinned CPU set).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip --disable-pip-version-check
STAMP  := $(VENV)/.installed-cpu

.PHONY: install demo test test-gpu clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements-cpu.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -r requirements-cpu.txt
	$(PIP) install -q --no-deps torchrec==1.8.0
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dlrs-bench run suites/quickstart.yaml

test: $(STAMP)
	$(PY) -m pytest -q

test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu

clean:
	rm -rf $(VENV) results .pytest_cache
