# cni-pipeline container image: `make docker-metrics`.
# The entrypoint takes no default arguments, so an existing cni-metrics-helper Deployment (configured
# by environment variables) works unchanged; ConfigMap users pass `--config /path/to/config.yaml`.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY pipeline ./pipeline
COPY receivers ./receivers
COPY processors ./processors
COPY exporters ./exporters
COPY simfleet ./simfleet
RUN python -m venv /opt/cni-pipeline \
 && /opt/cni-pipeline/bin/pip install --no-cache-dir --quiet -c constraints.txt '.[demo]'

FROM python:3.11-slim
COPY --from=build /opt/cni-pipeline /opt/cni-pipeline
COPY configs /etc/cni-pipeline/configs
ENV PATH=/opt/cni-pipeline/bin:$PATH PYTHONUNBUFFERED=1
WORKDIR /etc/cni-pipeline
USER 65534:65534
# 8888: self-metrics, /healthz, /readyz; 61681: the prometheus exporter (USE_PROMETHEUS).
EXPOSE 8888 61681
ENTRYPOINT ["cni-pipeline"]
