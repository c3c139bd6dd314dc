# cni-pipeline developer commands. `make install` first; everything runs from .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install test lint bench demo docker-metrics clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Editable install with dev extras, pinned by constraints.txt so a fresh machine resolves quickly
# and gets what CI tested.
install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'

test:
	$(BIN)/pytest -q

lint:
	$(BIN)/ruff check .
	$(BIN)/mypy

bench:
	$(BIN)/python bench/run_all.py

# The main job on its embedded default: a simulated fleet, the real pipeline, a local CloudWatch.
demo:
	$(BIN)/cni-pipeline demo

docker-metrics:
	docker build -t cni-pipeline:latest .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
