# cni-pipeline developer commands. `make install` first; everything runs from .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install test lint bench soak demo manifests docker-base docker-wheels docker-metrics \
        docker-metrics-test clean

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

# Fresh each time, so the image gets exactly the pinned set; setuptools' in-tree build/lib goes
# too (it would carry deleted modules into the wheel).
docker-wheels: $(BIN)/python
	rm -rf $(WHEELS) build/lib build/bdist.*
	$(BIN)/python -m pip wheel --quiet --disable-pip-version-check -c constraints.txt \
	  -w $(WHEELS) '.[demo]' "pip==$$($(BIN)/python -m pip --version | cut -d' ' -f2)"

docker-metrics: docker-wheels $(if $(filter $(LOCAL_BASE),$(BASE_IMAGE)),docker-base)
	$(DOCKER_BUILD) --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg VERSION=$(TAG) \
	  -t $(IMAGE):$(TAG) .
	@echo "$(IMAGE):$(TAG): $$(docker image inspect -f '{{.Size}}' $(IMAGE):$(TAG)) bytes"

# Runs the image as CI does: offline (--network none), read-only root filesystem.
docker-metrics-test:
	docker/test-image.sh $(IMAGE):$(TAG)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
