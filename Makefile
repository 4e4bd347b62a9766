# Two entry points: `make demo` and `make test`. Each builds .venv on a fresh clone first.
PYTHON ?= python3
# The CPU build of torch 2.13 (on disk on the project's machines). On a GPU machine name the
# CUDA wheel index: `make test TORCH_INDEX=<index url>`.
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint docs clean peer-kvpress

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev,docs]"
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
