# Two entry points: `make demo` and `make test`. Each builds .venv on a fresh clone first.
PYTHON ?= python3
# The CPU build of torch 2.13 (on disk on the project's machines). On a GPU machine name the
# CUDA wheel index: `make test TORCH_INDEX=<index url>`.
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
# lmms-eval (`plphp[lmms]`) declares torchvision as a dependency, and torchvision's wheels do not load
# next to the CPU build of torch 2.13; lmms-eval's evaluator, tasks and model registry import without
# it. So this environment installs lmms-eval with --no-deps, plus what those modules import (the
# `lmms-nodeps` extra). On a GPU machine `pip install "plphp[lmms]"` installs it whole.
LMMS_EVAL ?= lmms-eval>=0.7.3,<0.8
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint docs clean gpu-wheels gpu-check peer-kvpress

# Wheels for a GPU machine without a registry (benchmarks/gpu/check.sh installs the missing ones):
# CPython $(GPU_PYTHON), Linux x86_64; GPU_WHEELS_SKIP names packages the machine surely has.
GPU_PYTHON ?= 3.12
GPU_WHEELS ?= .gpu-wheels
GPU_WHEELS_SKIP ?= numpy

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev,docs,lmms-nodeps]"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps "$(LMMS_EVAL)"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/plphp demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check plphp tests benchmarks
	$(BIN)/ruff format --check plphp tests benchmarks

docs: $(STAMP)
	$(BIN)/mkdocs build --strict

gpu-wheels:
	$(PYTHON) benchmarks/gpu/wheels.py download --python $(GPU_PYTHON) --dest $(GPU_WHEELS) --skip "$(GPU_WHEELS_SKIP)"

# On the GPU machine (no registry needed): PYTHON=python3 by default.
gpu-check:
	benchmarks/gpu/check.sh $(if $(OUT),$(OUT))

# The peer of docs/benchmarks.md's kvpress comparison, in a virtualenv of its own (kvpress pins an older
# transformers): `make peer-kvpress`, then `python benchmarks/peers/kvpress.py`.
PEER_VENV := .peer/kvpress-venv
PEER_STAMP := $(PEER_VENV)/.installed-stamp

$(PEER_STAMP): benchmarks/peers/kvpress-requirements.txt
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PEER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r benchmarks/peers/kvpress-requirements.txt
	touch $(PEER_STAMP)

peer-kvpress: $(PEER_STAMP)

clean:
	rm -rf $(VENV) site .pytest_cache .hypothesis
