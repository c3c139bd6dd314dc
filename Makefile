# cni-pipeline developer commands. `make install` first; everything runs from .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install lock test lint bench soak demo manifests dashboards docker-base docker-wheels docker-metrics \
        docker-metrics-test clean

# requirements.lock: every package CI installs (runtime, demo and dev extras, pip, the build
# backend), pinned with the sha256 of each of its files. Refreshed by `make lock`.
LOCK := requirements.lock

# pip itself comes from the lock (make install), so nothing unhashed is fetched.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The locked set with every file's hash checked, then the project itself: an editable checkout has
# no hash, so it goes in with --no-deps (its dependencies are the locked set) and no build
# isolation (the build backend is locked too, not fetched). pip check: the lock matches pyproject.
install: $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check >/dev/null

# Re-resolves pyproject.toml's dependencies (runtime + dev, which includes demo), its build-system
# requires and pip into $(LOCK), with hashes. Pins already in the lock are kept while they still
# fit; LOCK_ARGS=--upgrade moves everything to the newest, LOCK_ARGS='-P boto3' one package.
# pip-tools runs from a venv of its own under build/, so it is no dependency of the project;
# cni-pipeline itself is left out of the lock (--unsafe-package: listed as a comment only).
LOCK_VENV  := build/lock-venv
LOCK_TOOLS := pip==26.3 pip-tools==7.6.2
LOCK_ARGS  ?=
$(LOCK_VENV)/bin/pip-compile:
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet $(LOCK_TOOLS)

lock: $(LOCK_VENV)/bin/pip-compile
	$(PYTHON) -c 'import tomllib; print("pip", *tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' \
	  | CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes \
	      --extra dev --strip-extras --unsafe-package cni-pipeline --no-emit-index-url \
	      --no-emit-find-links $(LOCK_ARGS) -o $(LOCK) pyproject.toml -

test:
	$(BIN)/pytest -q

lint:
	$(BIN)/ruff check .
	$(BIN)/mypy

bench:
	$(BIN)/python bench/run_all.py

# A bounded soak: the simulated fleet with restarts and faults for SOAK_MINUTES; RSS over time,
# cycle p50/p99 and exact-value checks (bench/soak.py; exit 1 on a mismatch or RSS growth >= 5%).
SOAK_MINUTES ?= 10
SOAK_NODES   ?= 2000
soak:
	$(BIN)/python bench/soak.py --minutes $(SOAK_MINUTES) --nodes $(SOAK_NODES)

# The main job on its embedded default: a simulated fleet, the real pipeline, a local CloudWatch.
demo:
	$(BIN)/cni-pipeline demo

# Rendered Kubernetes manifests from the Helm chart.
manifests:
	$(BIN)/python scripts/render_manifests.py

# The Grafana dashboard for configs/prometheus.yaml (a test checks it is up to date).
dashboards:
	$(BIN)/cni-pipeline dashboard --format grafana --config configs/prometheus.yaml \
		> configs/grafana/cni-pipeline.json

# The container image, built with no image registry and no package index inside the build.
#   IMAGE       image name (default cni-pipeline)
#   TAG         image tag (default the package version in pyproject.toml, the Helm chart's default)
#   BASE_IMAGE  the image both stages start from. Default: cni-pipeline-base:bookworm, a local
#               Debian bookworm + python3 built by `make docker-base` (debootstrap, then docker
#               import; the root filesystem is cached under build/docker-base/). Where a registry
#               is reachable, BASE_IMAGE=python:3.11-slim works as well (pulled by docker build).
# The wheels are built on the host with the venv's Python (3.11, like the base's python3).
IMAGE      ?= cni-pipeline
TAG        ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
BASE_IMAGE ?= cni-pipeline-base:bookworm
LOCAL_BASE := cni-pipeline-base:bookworm
WHEELS     := build/image/wheels
# The daemon is run with --bridge=none, and the build needs no network: RUN steps get none.
DOCKER_BUILD := DOCKER_BUILDKIT=0 docker build --network none

docker-base:
	docker/build-base.sh $(LOCAL_BASE) build/docker-base

# Two steps, so that every wheel is checked against the lock and the image gets only what it needs:
# the whole lock is downloaded with its hashes checked (binary wheels: nothing is built) into
# $(LOCKED_WHEELS); then '.[demo]' and pip are resolved offline from those files alone (one
# version of each: the locked one), which copies the needed subset to $(WHEELS) and builds the
# project's wheel with the locked setuptools. The subset is 54 MB of the lock's 194 MB: the build
# context and the build stage stay small. Fresh each time, so no file of an older lock stays;
# setuptools' in-tree build/lib goes too (it would carry deleted modules into the wheel).
LOCKED_WHEELS := build/image-locked-wheels
docker-wheels: $(BIN)/python
	rm -rf $(WHEELS) $(LOCKED_WHEELS) build/lib build/bdist.*
	$(BIN)/python -m pip download --quiet --require-hashes --only-binary :all: -r $(LOCK) \
	  -d $(LOCKED_WHEELS)
	$(BIN)/python -m pip wheel --quiet --no-index --find-links $(LOCKED_WHEELS) -w $(WHEELS) \
	  '.[demo]' pip

docker-metrics: docker-wheels $(if $(filter $(LOCAL_BASE),$(BASE_IMAGE)),docker-base)
	$(DOCKER_BUILD) --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg VERSION=$(TAG) \
	  -t $(IMAGE):$(TAG) .
	@echo "$(IMAGE):$(TAG): $$(docker image inspect -f '{{.Size}}' $(IMAGE):$(TAG)) bytes"

# Runs the image as CI does: offline (--network none), read-only root filesystem.
docker-metrics-test:
	docker/test-image.sh $(IMAGE):$(TAG)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
