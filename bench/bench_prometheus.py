"""Us beside real Prometheus: CPU per scrape of the same loopback fleet, in the same run.

Starts Debian's ``prometheus`` (when installed) scraping every node of a fleet of 40 KB gzip'd
aws-node pages, measures its CPU (user + sys, /proc) over the warm scrape rounds and divides by
the scrapes it made (its ``prometheus_target_interval_length_seconds_count``); then runs
``cni-pipeline`` (``prometheus -> cni_aggregate -> prometheus exporter``, unscraped) on the same
fleet the same way (scrapes: ``cni_pipeline_cycles_total`` x targets). Prints both and the ratio.

Prometheus does more per scrape than we do (it stores every sample in its TSDB); we do what the
job needs (parse the wanted families, aggregate). The ratio is what a user saves by running this
instead of a Prometheus per cluster for the same numbers.

    .venv/bin/python bench/bench_prometheus.py [--nodes 1000] [--interval 5s] [--rounds 6]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._procs import Proc, cpu_seconds, free_port, page, peak_rss_mib, value  # noqa: E402
from pipeline import Duration  # noqa: E402
from simfleet import FleetProcess  # noqa: E402

PIPELINE = """\
receivers:
  prometheus:
    scrape_interval: {interval}
    scrape_timeout: {timeout}
    static_targets: [{targets}]
processors:
  cni_aggregate: {{}}
exporters:
  prometheus: {{endpoint: "127.0.0.1:{served}"}}
service:
  telemetry: {{endpoint: "127.0.0.1:{port}"}}
  pipelines:
    metrics: {{receivers: [prometheus], processors: [cni_aggregate], exporters: [prometheus]}}
"""
PROMETHEUS_CONFIG = """\
global: {{scrape_interval: {interval}, scrape_timeout: {timeout}}}
scrape_configs:
  - job_name: aws-node
    static_configs:
      - targets: [{targets}]
"""


def measure(pid: int, scrapes: Callable[[], float], interval: float, rounds: int
            ) -> tuple[float, float]:
    """(CPU seconds, scrapes) over ``rounds`` intervals, after two to warm up."""
    time.sleep(interval * 2.5)
    cpu0, n0 = cpu_seconds(pid), scrapes()
    time.sleep(interval * rounds)
    return cpu_seconds(pid) - cpu0, scrapes() - n0


def run_prometheus(binary: str, addresses: list[str], interval: float, rounds: int,
                   workdir: Path) -> tuple[float, float, float]:
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(PROMETHEUS_CONFIG.format(
        interval=Duration(interval), timeout=Duration(interval * 0.8),
        targets=", ".join(f'"{a}"' for a in addresses)))
    with (workdir / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        def scrapes() -> float:
            return value(page(port), "prometheus_target_interval_length_seconds_count") or 0.0
        cpu, count = measure(process.pid, scrapes, interval, rounds)
        return cpu, count, peak_rss_mib(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def run_pipeline(addresses: list[str], interval: float, rounds: int, workdir: Path
                 ) -> tuple[float, float, float]:
    port = free_port()
    proc = Proc("pipeline", PIPELINE.format(
        interval=Duration(interval), timeout=Duration(interval * 0.8), served=free_port(),
        port=port, targets=", ".join(f'"{a}"' for a in addresses)), workdir, port)
    try:
        def scrapes() -> float:
            return proc.metric("cycles_total") * len(addresses)
        cpu, count = measure(proc.process.pid, scrapes, interval, rounds)
        return cpu, count, peak_rss_mib(proc.process.pid)
    finally:
        proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--interval", default="5s")
    parser.add_argument("--rounds", type=int, default=6, help="warm scrape rounds measured")
    parser.add_argument("--base", default="127.62.0.1")
    args = parser.parse_args()
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        print("prometheus is not installed (Debian package 'prometheus'): nothing to compare")
        return
    interval = float(Duration.from_config(args.interval))
    fleet = FleetProcess(args.nodes, base_address=args.base, page_bytes=40_000,
                         start_time=time.time() - 3600)
    fleet.start(300.0)
    workdir = Path(tempfile.mkdtemp(prefix="bench-prometheus-"))
    try:
        version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                 check=False).stdout.splitlines()[0]
        rows = [("prometheus", *run_prometheus(binary, fleet.addresses, interval, args.rounds,
                                               workdir)),
                ("cni-pipeline", *run_pipeline(fleet.addresses, interval, args.rounds, workdir))]
    finally:
        fleet.stop()
    print(f"{args.nodes} nodes, 40 KB gzip'd pages, interval {Duration(interval)}, "
          f"{args.rounds} warm rounds each; {version}")
    print(f"{'scraper':>13} {'scrapes':>8} {'cpu s':>8} {'ms/scrape':>10} {'peak MiB':>9}")
    per_scrape = {}
    for name, cpu, count, rss in rows:
        per_scrape[name] = cpu / count * 1e3 if count else float("nan")
        print(f"{name:>13} {count:>8.0f} {cpu:>8.2f} {per_scrape[name]:>10.3f} {rss:>9.0f}")
    ratio = per_scrape["cni-pipeline"] / per_scrape["prometheus"]
    print(f"cni-pipeline / prometheus CPU per scrape: {ratio:.2f}x")


if __name__ == "__main__":
    main()
