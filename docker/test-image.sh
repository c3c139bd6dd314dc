#!/usr/bin/env bash
# Runs the container image as CI does: no network (--network none), a read-only root filesystem with
# a tmpfs on /tmp (what a pod's emptyDir gives). Checks: not root, no build tools or pip, every baked
# pipeline config validates, and `cni-pipeline demo` runs end to end inside it. Prints the size.
# Usage: docker/test-image.sh IMAGE   (make docker-metrics-test; .ci/run)
set -euo pipefail

image=${1:?usage: test-image.sh IMAGE}
run=(docker run --rm --network none --read-only --tmpfs /tmp:rw,size=64m)

size=$(docker image inspect -f '{{.Size}}' "$image")
echo "== $image: $size bytes ($((size / 1024 / 1024)) MiB)"

# One container for every check but the demo: with the vfs storage driver each container copies
# the whole image, which takes a while.
echo "== not root; no compiler, build tools or pip; imports; every baked pipeline config validates"
"${run[@]}" --entrypoint /bin/sh "$image" -c '
  status=0
  uid=$(id -u)
  if [ "$uid" = 0 ]; then echo "FAIL: the image runs as root" >&2; status=1; else echo "uid $uid"; fi
  for tool in gcc cc c++ make ld as pip pip3; do
    if command -v "$tool" >/dev/null 2>&1; then echo "FAIL: $tool in the image" >&2; status=1; fi
  done
  for dir in /root/.cache/pip /tmp/.cache/pip /wheels; do
    if [ -e "$dir" ]; then echo "FAIL: $dir in the image" >&2; status=1; fi
  done
  # What drop-in mode needs (the image leaves kubernetes/aio out).
  python3 -c "import kubernetes.client, kubernetes.config, receivers.prometheus._k8s_sd" || status=1
  cni-pipeline print-config >/dev/null || status=1
  # Recursive; Kubernetes manifests (an apiVersion key) under configs/ are not pipeline configs.
  count=0
  for f in $(find /etc/cni-pipeline/configs -name "*.yaml" -o -name "*.yml" | sort); do
    if grep -q "^apiVersion:" "$f"; then continue; fi
    count=$((count + 1))
    if cni-pipeline validate --config "$f" >/dev/null; then echo "ok   validate $f"
    else echo "FAIL validate $f" >&2; status=1; fi
  done
  if [ "$count" = 0 ]; then echo "FAIL: no pipeline config in the image" >&2; status=1; fi
  exit $status'

echo "== cni-pipeline demo, offline"
"${run[@]}" -e AWS_EC2_METADATA_DISABLED=true "$image" demo

echo "== $image passed ($size bytes)"
