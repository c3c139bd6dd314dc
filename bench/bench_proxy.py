"""``apiserver_proxy`` mode against direct mode: what scraping through the API server costs.

The drop-in default (like the Go helper) scrapes every aws-node pod through the API server's
``pods/proxy``; direct mode connects to each pod. Here both run as a real ``cni-pipeline``
process discovering the same fleet from the test API server over TLS (in its own process, so its
CPU is not ours), one mode after the other. Printed per mode: CPU per scrape (user + sys of the
pipeline process, over the warm cycles), the connections the pipeline holds to the API server
(from /proc/net/tcp), and, for proxy mode, the bytes and requests the API server proxied per
cycle and the mean body (gzip'd end to end: about the compressed page, not 40 KB). A third run
goes through a plain-HTTP API server (as behind ``kubectl proxy``), to tell what TLS costs from
what the proxy path costs.

    .venv/bin/python bench/bench_proxy.py [--nodes 500] [--interval 5s] [--rounds 5]

The test API server is Python's threading HTTP server: it takes far more CPU per proxied request
than kube-apiserver does, and with two cores shared it slows the proxied cycle's wall time; the
pipeline's own CPU per scrape is the figure to compare.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._procs import Proc, cpu_seconds, free_port, peak_rss_mib  # noqa: E402
from pipeline import Duration  # noqa: E402
from simfleet import FleetProcess  # noqa: E402

#: The test API server in its own process: pods for the fleet's addresses, a kubeconfig, then
#: one JSON line of proxy stats per line read on stdin.
SERVER = """\
import json, sys
from pathlib import Path
from tests.support.kube_apiserver import KubeAPIServer
api = KubeAPIServer(tls=sys.argv[3] == "tls").start()
for i, address in enumerate(json.loads(sys.argv[1])):
    ip, port = address.rsplit(":", 1)
    api.add_pod(f"aws-node-{i}", ip, f"node-{i}", port=int(port))
api.write_kubeconfig(Path(sys.argv[2]))
print(json.dumps({"port": api.port}), flush=True)
for line in sys.stdin:
    print(json.dumps({"bytes": api.proxied_bytes, "requests": api.proxied_requests}), flush=True)
"""

PIPELINE = """\
receivers:
  prometheus:
    scrape_interval: {interval}
    scrape_timeout: {timeout}
    kubernetes_sd: {{kubeconfig: "{kubeconfig}", mode: {mode}, proxy_connections: {conns}}}
processors:
  cni_aggregate: {{}}
exporters:
  debug: {{verbosity: basic}}
service:
  telemetry: {{endpoint: "127.0.0.1:{port}"}}
  pipelines:
    metrics: {{receivers: [prometheus], processors: [cni_aggregate], exporters: [debug]}}
"""


def connections_to(port: int) -> int:
    """Established TCP connections to ``port`` on this machine (IPv4 table)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state = fields[2], fields[3]
        if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port:
            count += 1
    return count


class Server:
    def __init__(self, addresses: list[str], kubeconfig: Path, tls: bool = True) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER, json.dumps(addresses), str(kubeconfig),
             "tls" if tls else "plain"], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.port = int(json.loads(self.process.stdout.readline())["port"])

    def stats(self) -> dict[str, int]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("stats\n")
        self.process.stdin.flush()
        return dict(json.loads(self.process.stdout.readline()))

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def run_mode(mode: str, server: Server, kubeconfig: Path, connections: int, nodes: int,
             interval: float, rounds: int, workdir: Path) -> dict[str, float]:
    port = free_port()
    proc = Proc(f"pipeline-{mode}-{server.port}", PIPELINE.format(
        interval=Duration(interval), timeout=Duration(interval * 0.8), kubeconfig=kubeconfig,
        mode=mode, port=port, conns=connections), workdir, port)
    try:
        time.sleep(interval * 2.5)
        cpu0, cycles0, stats0 = cpu_seconds(proc.process.pid), proc.metric("cycles_total"), \
            server.stats()
        held = []
        for _ in range(rounds):
            time.sleep(interval)
            held.append(connections_to(server.port))
        cpu1, cycles1, stats1 = cpu_seconds(proc.process.pid), proc.metric("cycles_total"), \
            server.stats()
        cycles = cycles1 - cycles0
        failures = proc.metric("scrape_failures_total")
        return {
            "cycles": cycles, "cpu": cpu1 - cpu0,
            "ms_per_scrape": (cpu1 - cpu0) / (cycles * nodes) * 1e3 if cycles else 0.0,
            "connections": max(held),
            "bytes_per_cycle": (stats1["bytes"] - stats0["bytes"]) / cycles if cycles else 0.0,
            "requests_per_cycle": ((stats1["requests"] - stats0["requests"]) / cycles
                                   if cycles else 0.0),
            "rss": peak_rss_mib(proc.process.pid), "failures": failures,
            "wall": (proc.metric("cycle_duration_seconds_sum")
                     / (proc.metric("cycle_duration_seconds_count") or 1.0)),
        }
    finally:
        proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--interval", default="5s")
    parser.add_argument("--rounds", type=int, default=5, help="warm cycles measured")
    parser.add_argument("--base", default="127.63.0.1")
    parser.add_argument("--proxy-connections", type=int, default=16,
                        help="kubernetes_sd.proxy_connections (default: the receiver's, 16)")
    args = parser.parse_args()
    interval = float(Duration.from_config(args.interval))
    fleet = FleetProcess(args.nodes, base_address=args.base, page_bytes=40_000,
                         start_time=time.time() - 3600)
    fleet.start(300.0)
    workdir = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    kubeconfig = workdir / "kubeconfig"
    plain_kubeconfig = workdir / "kubeconfig-plain"
    server = Server(fleet.addresses, kubeconfig)
    plain = Server(fleet.addresses, plain_kubeconfig, tls=False)
    try:
        conns = args.proxy_connections
        rows = {mode: run_mode(mode, server, kubeconfig, conns, args.nodes, interval,
                               args.rounds, workdir) for mode in ("direct", "apiserver_proxy")}
        # The same through a plain-HTTP API server (as behind kubectl proxy): what TLS costs.
        rows["proxy, plain HTTP"] = run_mode("apiserver_proxy", plain, plain_kubeconfig, conns,
                                             args.nodes, interval, args.rounds, workdir)
    finally:
        server.stop()
        plain.stop()
        fleet.stop()
    print(f"{args.nodes} nodes, 40 KB pages, interval {Duration(interval)}, test API server "
          f"(TLS unless said) in its own process; cpu = the pipeline process, user + sys")
    print(f"{'mode':>18} {'cycles':>7} {'ms/scrape':>10} {'wall s':>7} {'API conns':>10} "
          f"{'API KB/cycle':>13} {'API req/cycle':>14} {'KB/page':>8} {'peak MiB':>9} "
          f"{'failures':>9}")
    for mode, row in rows.items():
        per_page = (row["bytes_per_cycle"] / row["requests_per_cycle"] / 1e3
                    if row["requests_per_cycle"] else 0.0)
        print(f"{mode:>18} {row['cycles']:>7.0f} {row['ms_per_scrape']:>10.3f} "
              f"{row['wall']:>7.2f} {row['connections']:>10.0f} "
              f"{row['bytes_per_cycle'] / 1e3:>13.0f} {row['requests_per_cycle']:>14.0f} "
              f"{per_page:>8.1f} {row['rss']:>9.0f} {row['failures']:>9.0f}")
    direct, proxy = rows["direct"]["ms_per_scrape"], rows["apiserver_proxy"]["ms_per_scrape"]
    plain_proxy = rows["proxy, plain HTTP"]["ms_per_scrape"]
    print(f"apiserver_proxy / direct CPU per scrape: {proxy / direct:.2f}x over TLS, "
          f"{plain_proxy / direct:.2f}x over plain HTTP")


if __name__ == "__main__":
    main()
