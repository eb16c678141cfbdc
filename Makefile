# Two entry points, each of which sets everything up from nothing:
#   make demo   build the example project and render it
#   make test   run the test suite
#   make lint   ruff's checks and its formatter, as CI runs them
VENV ?= .venv
# e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu" for the CPU build
TORCH_PIP_ARGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, so that kokoro's plain `torch` requirement takes this build
	$(PY) -m pip install -q torch==2.13.0 $(TORCH_PIP_ARGS)
	$(PY) -m pip install -q -e '.[test,pypi,quality,epub,export,onnx,ray]'
	touch $@

setup: $(STAMP)

demo: $(STAMP)
	NARRATOR=$(abspath $(VENV))/bin/narrator examples/demo.sh

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check narrator tests bench
	$(PY) -m ruff format --check narrator tests bench

bench: $(STAMP)
	$(PY) bench/startup.py
	$(PY) bench/batch.py
