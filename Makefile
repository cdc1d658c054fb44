# FemurScreen: two commands for a fresh machine.
#   make demo   -> bootstraps .venv, then runs the main job (scripts/demo.sh)
#   make test   -> bootstraps .venv, then ruff + the pytest suite
# Everything is installed from the package registries (offline otherwise); torch is the
# pinned CPU build 2.13.0 and pyradiomics 3.0.1 is built from its sdist without build isolation.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.femurscreen-installed

.PHONY: demo test lint venv bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q "torch==2.13.0" "numpy>=1.26" versioneer
	$(BIN)/python -m pip install -q --no-build-isolation "pyradiomics==3.0.1"
	$(BIN)/python -m pip install -q -e ".[dev,dask,slicer]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q Testing

bench: $(STAMP)
	$(BIN)/python scripts/benchmark_phantom.py

clean:
	rm -rf $(VENV) output
