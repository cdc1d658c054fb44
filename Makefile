# FemurScreen: two commands for a fresh machine.
#   make demo       -> bootstraps .venv, then runs the main job (scripts/demo.sh)
#   make test       -> bootstraps .venv and .venv-312, then ruff + mypy + the pytest suite (Python 3.11+)
#                      + the Slicer-side tests on Python 3.12 (Slicer 5.10's), what CI runs
#   make test-fast  -> ruff + the suite without the tests marked slow (daily habit)
#   make test-312   -> only the Slicer-side tests on Python 3.12
# Everything is installed from the package registries (offline otherwise); torch is the
# pinned CPU build 2.13.0; pyradiomics-bhklab 3.1.4 (the `radiomics` import) is built from its
# sdist by a plain pip install (two C extensions: needs a C compiler).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.femurscreen-installed

# Python 3.12: pyenv's 3.12.1 if there, else python3.12 on PATH (override: make PYTHON312=...).
PYTHON312 ?= $(shell PYENV_VERSION=3.12.1 pyenv which python3.12 2>/dev/null || command -v python3.12 2>/dev/null)
VENV312 ?= .venv-312
STAMP312 := $(VENV312)/.femurscreen-installed
# The Slicer-side tests (test_review.py only once it exists).
SLICER_TESTS = $(wildcard Testing/test_slicer_logic.py Testing/test_widget_ui.py \
	Testing/test_dependencies.py Testing/test_review.py Testing/test_extension_files.py)

.PHONY: demo test test-fast test-312 lint venv venv-312 bench clean system-deps

# Debian packages the tests need: a real DICOM server (Orthanc with its DICOMweb plugin) for the
# PACS round trip and dicom3tools' dciodvfy to validate every DICOM object written. Installed
# with apt-get when missing (CI runs as root on Debian); elsewhere the message says what to do.
SYSTEM_TOOLS = /usr/sbin/Orthanc /usr/share/orthanc/plugins/libOrthancDicomWeb.so /usr/bin/dciodvfy
system-deps:
	@missing=""; for f in $(SYSTEM_TOOLS); do test -e $$f || missing="$$missing $$f"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing orthanc orthanc-dicomweb dicom3tools (missing:$$missing)"; \
	    (apt-get install -y -q orthanc orthanc-dicomweb dicom3tools >/dev/null 2>&1 || \
	     { apt-get update -q >/dev/null && apt-get install -y -q orthanc orthanc-dicomweb dicom3tools >/dev/null; }) && \
	    { service orthanc stop >/dev/null 2>&1 || true; }; \
	  else echo "missing:$$missing -- install the Debian packages orthanc orthanc-dicomweb dicom3tools"; exit 1; fi; \
	fi

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	@# pyradiomics 3.0.1 (older environments) owns the same `radiomics` files as its replacement
	$(BIN)/python -m pip uninstall -y -q pyradiomics 2>/dev/null || true
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev,dask,slicer]"
	touch $(STAMP)

venv: $(STAMP)

# Built the way the module installs inside Slicer: Slicer's own packages, then the module's
# installer (FemurScreenLib.dependencies) with the confirmation answered yes.
$(STAMP312): pyproject.toml Makefile scripts/install_like_slicer.py FemurScreen/FemurScreenLib/dependencies.py
	@test -n "$(PYTHON312)" || { echo "Python 3.12 (Slicer 5.10's) not found: install it (pyenv install 3.12.1, or a python3.12 on PATH) or run make PYTHON312=/path/to/python3.12"; exit 1; }
	$(PYTHON312) scripts/install_like_slicer.py $(VENV312)
	touch $(STAMP312)

venv-312: $(STAMP312)

demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint system-deps
	$(BIN)/python -m pytest -q Testing
	$(MAKE) --no-print-directory test-312

test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow" Testing

# On 3.12 the tests marked slow are left out: they run on 3.11 above, and some need torch, which
# .venv-312 does not get (PyPI's torch for 3.12 is the CUDA build; PyTorch's CPU index is not
# reachable from CI; Resources/DEPENDENCIES.md). The install route itself is what built .venv-312.
test-312: $(STAMP312)
	$(VENV312)/bin/python -m pytest -q -m "not slow" $(SLICER_TESTS)

bench: $(STAMP)
	$(BIN)/python scripts/benchmark_phantom.py

clean:
	rm -rf $(VENV) $(VENV312) output
