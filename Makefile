# Two commands set everything up: `make run` (the pipeline) and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
export PATH := $(BIN):$(PATH)

.PHONY: setup run test test-fast ui bench clean

setup: $(STAMP)

# Reinstall only when the dependencies change; constraints.txt pins every version.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $@

run: $(STAMP)  ## the whole pipeline on params.yaml
	dvc repro

test: $(STAMP)  ## unit and end-to-end tests
	pytest

test-fast: $(STAMP)  ## unit tests only
	pytest -m "not e2e"

ui: $(STAMP)  ## the MLflow UI over the project's store, on 127.0.0.1:5000
	mlflow ui --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///$(CURDIR)/mlflow.db

bench: $(STAMP)  ## speed benchmarks, printed as ratios against baselines
	python -m benchmarks

clean:  ## remove pipeline outputs, the DVC cache and the MLflow store (keeps .venv)
	rm -rf data/*/ models metrics plots reports mlflow.db mlartifacts dvc.lock .dvc/cache
