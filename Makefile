# Two commands set everything up: `make run` (the pipeline) and `make test`.
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
# uv installs the wheels in parallel, compiling them to bytecode as pip does: where PYTHONDONTWRITEBYTECODE
# is set, nothing else would, and every start would compile them again.
uv      = $(BIN)/uv pip $(1) --python $(BIN)/python
export PATH := $(BIN):$(PATH)

# .venv's Python: PYTHON if given, else the first of these that runs Python 3.11 to 3.13; 3.11 first, the
# version dvc.lock's committed figures were produced with.
SUPPORTED := 3.11 3.12 3.13
CANDIDATES := python3.11 python3.12 python3.13 python3
version = $(if $(1),$(shell $(1) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null))
PYTHON ?= $(firstword $(foreach p,$(CANDIDATES),$(if $(filter $(SUPPORTED),$(call version,$(p))),$(p))))
PYTHON_VERSION = $(call version,$(PYTHON))
found = $(if $(PYTHON),$(PYTHON) is $(or $(PYTHON_VERSION),not a Python that runs),none of $(CANDIDATES) is one)
no_python = adder needs Python 3.11, 3.12 or 3.13 but $(found); install one, or name it: make setup PYTHON=/path/to/python3.12

# The build: GPU=1 installs the CUDA build of the backend params.yaml selects (JAX's CUDA plugin, or
# TensorFlow's), GPU=0 the CPU builds; without GPU= .venv keeps the build it has (CPU when new). TensorFlow's
# two builds both install the module `tensorflow`, so a switch between them removes the other first.
comma   := ,
BACKEND := $(or $(shell sed -n 's/^backend: *\([a-z]*\).*/\1/p' params.yaml 2>/dev/null),jax)
HAS     := $(patsubst gpu,tensorflow-gpu,$(shell cat $(STAMP) 2>/dev/null))
BUILD   := $(if $(GPU),$(if $(filter 0,$(GPU)),cpu,$(BACKEND)-gpu),$(or $(HAS),cpu))
EXTRAS  := $(if $(filter jax-gpu,$(BUILD)),cpu$(comma)jax-gpu,$(if $(filter tensorflow-gpu,$(BUILD)),gpu,cpu))
tf_of    = $(if $(filter tensorflow-gpu,$(1)),gpu,cpu)

.PHONY: setup run run-gpu test test-fast lint ui plots exps bench clean postgres chromium

setup: $(STAMP)

# Reinstall only when the dependencies or the TensorFlow build change; constraints.txt pins every version.
$(STAMP): pyproject.toml constraints.txt $(if $(filter $(BUILD),$(HAS)),,FORCE)
	$(if $(wildcard $(BIN)/python)$(filter $(SUPPORTED),$(PYTHON_VERSION)),,$(error $(no_python)))
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $$(grep "^uv==" constraints.txt)
	$(if $(filter-out $(call tf_of,$(BUILD)),$(call tf_of,$(or $(HAS),cpu))),$(call uv,uninstall) --quiet tensorflow tensorflow-cpu)
	$(if $(filter jax-gpu,$(HAS)),$(if $(filter-out jax-gpu,$(BUILD)),$(call uv,uninstall) --quiet jax-cuda12-plugin jax-cuda12-pjrt))
	$(call uv,install) --quiet --compile-bytecode -c constraints.txt -e '.[test,scale,sweep,$(EXTRAS)]'
	@echo $(BUILD) > $@

FORCE:

run: $(STAMP)  ## the whole pipeline on params.yaml
	dvc repro

# GPU-sized settings: the brackets transformers (both framings, so that their study still changes one setting)
# at two blocks of width 128, batches of 256 and 100,000 samples an epoch, on 500,000 training problems: about
# 80x the CPU default's compute, minutes on a GPU.
GPU_SIZED    := brackets-transformer brackets-transformer-reversed
GPU_SETTINGS := tasks.brackets.train_size=500000 $(foreach e,$(GPU_SIZED),experiments.$(e).units=[128,128] \
	experiments.$(e).batch_size=256 experiments.$(e).learning_rate=0.003 experiments.$(e).epochs=40 \
	experiments.$(e).samples_per_epoch=100000)
run-gpu: $(STAMP)  ## the pipeline with GPU-sized settings, as the DVC experiment gpu-sized (the defaults untouched)
	dvc exp run -n gpu-sized $(foreach setting,$(GPU_SETTINGS),-S '$(setting)')

# Three workers, each taking whole test files (their module fixtures build one project each): on two cores
# the third overlaps the end-to-end tests' waits on their subprocesses.
PYTEST := pytest -n 3 --dist loadfile
test: lint  ## lint, then the unit and end-to-end tests
	$(PYTEST)

test-fast: lint  ## lint, then the unit tests only
	$(PYTEST) -m "not e2e"

# ruff (zero findings) and import-linter (the layering in pyproject.toml: no import circles, stages never run
# the CLI, codecs stay numpy, model kinds independent).
lint: $(STAMP)  ## ruff and import-linter
	ruff check pipeline tests benchmarks
	lint-imports

ui: $(STAMP)  ## the MLflow UI over the project's store, on 127.0.0.1:5000
	@echo "runs: http://127.0.0.1:5000/#/experiments?workflowType=machine_learning"
	mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///$(CURDIR)/mlflow.db

exps: $(STAMP)  ## dvc exp show narrowed to the changed params and their experiments' exact match
	adder exps

# dvc plots renders with vega from a CDN; these local copies let the page render offline.
VEGA := .vega/node_modules/.package-lock.json
$(VEGA):
	npm install --prefix .vega --no-save --no-audit --no-fund --loglevel=error vega@5.33.1 vega-lite@5.23.0 vega-embed@6.29.0

plots: $(STAMP) $(VEGA)  ## dvc_plots/index.html (and plots.png, with Debian's chromium): every comparison chart
	dvc plots show --html-template .dvc/plots/page.html -o dvc_plots
	@if command -v chromium >/dev/null; then \
	  chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
	    --disable-component-update --disable-sync --user-data-dir=$$(mktemp -d) --allow-file-access-from-files \
	    --window-size=1400,4200 --virtual-time-budget=10000 --screenshot=dvc_plots/plots.png dvc_plots/index.html \
	    2>/dev/null && echo "dvc_plots/plots.png"; fi

bench: $(STAMP)  ## speed benchmarks, printed as ratios against baselines
	python -m benchmarks

# Debian's PostgreSQL server programs, for the PostgreSQL-backed tracking server test (tests/test_scaleout.py
# starts its own throwaway cluster; without them that one test skips). Installing needs root.
# Debian's Chromium, for the test that renders `make plots`' page (without it, that test skips). Needs root.
chromium:  ## install Chromium from Debian's packages unless it is there
	@command -v chromium >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

postgres:  ## install PostgreSQL from Debian's packages unless it is there
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

clean:  ## remove pipeline outputs, the DVC cache and the MLflow store (keeps .venv)
	rm -rf data/*/ models metrics evaluation plots reports dvc_plots mlflow.db mlartifacts dvc.lock .dvc/cache
