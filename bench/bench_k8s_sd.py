"""Cost of Kubernetes discovery on a cluster of N aws-node pods (against the test API server).

- decoding one list: raw JSON plus the six fields discovery keeps, against the ``kubernetes``
  client's typed ``V1PodList`` (why ``_k8s_sd`` reads raw JSON);
- start to synced (one paged list, the client's import included);
- ``targets()``: the first build after a change, and the cached copy every cycle gets;
- how soon a pod added to the cluster shows in ``targets()`` (through the watch).

    .venv/bin/python bench/bench_k8s_sd.py [--pods 2000]

Numbers are noisy on a shared machine; compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from receivers.prometheus._k8s_sd import KubernetesDiscovery  # noqa: E402
from receivers.prometheus._k8s_stores import scrapeable_pod  # noqa: E402
from receivers.prometheus.config import KubernetesSDConfig  # noqa: E402
from tests.support.kube_apiserver import KubeAPIServer  # noqa: E402


def pod_ip(i: int) -> str:
    return f"127.{i // 65536}.{(i // 256) % 256}.{i % 256 or 1}"


def decode_list(api: KubeAPIServer, kubeconfig: Path) -> None:
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(str(kubeconfig), client_configuration=cfg, persist_config=False)
    api_client = client.ApiClient(cfg)
    core = client.CoreV1Api(api_client)
    raw = core.list_namespaced_pod("kube-system", label_selector="k8s-app=aws-node",
                                   _preload_content=False).data
    started = time.perf_counter()
    body = json.loads(raw)
    pods = [scrapeable_pod(obj, False) for obj in body["items"]]
    raw_s = time.perf_counter() - started
    started = time.perf_counter()
    typed = api_client.deserialize(raw.decode(), "V1PodList", "application/json")
    typed_s = time.perf_counter() - started
    assert len(pods) == len(typed.items)
    print(f"list of {len(pods)} pods, {len(raw) / 1e6:.1f} MB: raw JSON {raw_s * 1000:.0f} ms, "
          f"typed V1PodList {typed_s * 1000:.0f} ms")


async def discovery_costs(api: KubeAPIServer, kubeconfig: Path, pods: int) -> None:
    discovery = KubernetesDiscovery(KubernetesSDConfig(kubeconfig=str(kubeconfig)),
                                    logging.LoggerAdapter(logging.getLogger("bench"), {}))
    started = time.perf_counter()
    await discovery.start()
    assert await discovery.wait_synced(120)
    synced_s = time.perf_counter() - started
    started = time.perf_counter()
    discovery.targets()
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(1000):
        discovery.targets()
    cached_s = (time.perf_counter() - started) / 1000
    added_at = time.perf_counter()
    api.add_pod("aws-node-new", "127.0.0.2", "n-new")
    while len(discovery.targets()) != pods + 1:
        await asyncio.sleep(0.0005)
    seen_s = time.perf_counter() - added_at
    await discovery.shutdown()
    print(f"start -> synced {synced_s * 1000:.0f} ms (client import included); targets(): "
          f"first build {first_s * 1000:.1f} ms, cached {cached_s * 1e6:.1f} us; "
          f"a new pod in targets() after {seen_s * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=2000)
    args = parser.parse_args()
    with KubeAPIServer() as api, tempfile.TemporaryDirectory() as tmp:
        for i in range(args.pods):
            api.add_pod(f"aws-node-{i:05d}", pod_ip(i), f"node-{i}")
        kubeconfig = api.write_kubeconfig(Path(tmp) / "kubeconfig")
        asyncio.run(discovery_costs(api, kubeconfig, args.pods))
        decode_list(api, kubeconfig)


if __name__ == "__main__":
    main()
