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

.PHONY: demo test lint docs clean

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

clean:
	rm -rf $(VENV) site .pytest_cache .hypothesis
