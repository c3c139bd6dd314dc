# cni-pipeline container image: `make docker-metrics` (see the Makefile for how to build it by hand).
# Air-gapped: the build reaches no network. The wheels of the package, its `demo` extra and pip
# itself are taken on the host from requirements.lock, each checked against the lock's sha256
# (`make docker-wheels`), into build/image/wheels, and installed here with --no-index, so the same
# lock gives the same image.
# BASE_IMAGE: a Debian-like image with python3 (3.11) at the same path in both stages; by default
# the local Debian bookworm base that `make docker-base` builds with debootstrap.
ARG BASE_IMAGE=cni-pipeline-base:bookworm

FROM ${BASE_IMAGE} AS build
COPY build/image/wheels /wheels
# A venv without pip (pip runs from its wheel). kubernetes/aio, the client's asyncio copy (68 MB
# with its .pyc), goes: cni-pipeline uses the synchronous client only. Then every .py is compiled
# once, to .pyc that are not checked against mtimes, so nothing is written at run time (read-only
# root filesystem) and the kubernetes client's thousand modules are not recompiled at each start.
RUN python3 -m venv --without-pip /opt/cni-pipeline \
 && /opt/cni-pipeline/bin/python "$(ls /wheels/pip-*.whl)/pip" install --quiet --no-index \
      --find-links /wheels --no-cache-dir --no-compile --disable-pip-version-check 'cni-pipeline[demo]' \
 && rm -rf /opt/cni-pipeline/lib/python3*/site-packages/kubernetes/aio \
 && /opt/cni-pipeline/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash \
      /opt/cni-pipeline/lib >/dev/null

FROM ${BASE_IMAGE}
ARG BASE_IMAGE
ARG VERSION=unknown
# The metadata first, the files last: with the vfs storage driver every step copies the whole
# image so far, and these steps then copy the base only.
LABEL org.opencontainers.image.title="cni-pipeline" \
      org.opencontainers.image.description="Cluster-level Amazon VPC CNI metrics: scrape aws-node, aggregate correctly, publish to CloudWatch, OTLP or Prometheus." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
# An imported base carries no PATH of its own, so it is spelt out. HOME and TMPDIR: /tmp is the only
# place the process writes (an emptyDir or tmpfs under a read-only root filesystem).
ENV PATH=/opt/cni-pipeline/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8 HOME=/tmp TMPDIR=/tmp
# `--config configs/<name>.yaml` works as in a checkout.
WORKDIR /etc/cni-pipeline
# nobody: the files below stay root's, read-only to the process.
USER 65534:65534
# 8888: self-metrics, /healthz, /readyz; 61681: the prometheus exporter (USE_PROMETHEUS).
EXPOSE 8888 61681
# No default arguments: with none, cni-pipeline runs in drop-in mode (the Go helper's environment
# variables), so an existing cni-metrics-helper Deployment works unchanged; ConfigMap users pass
# `--config /etc/cni-pipeline/configs/<name>.yaml` or their own mounted file.
ENTRYPOINT ["cni-pipeline"]
COPY --from=build /opt/cni-pipeline /opt/cni-pipeline
COPY configs /etc/cni-pipeline/configs
