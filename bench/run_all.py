"""``make bench``: every benchmark in turn, with the figures the issues ask for.

Figures are measured, never asserted; on a shared or loaded machine they vary, so compare runs
taken on the same machine. Each script can also be run alone (see its docstring).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = [
    ("parser: MB/s and µs per 40 KB page, ours beside prometheus_client", ["bench_parse.py"]),
    ("HTTP client: CPU µs per 40 KB scrape, plain and gzip'd", ["bench_scrape.py"]),
    ("aggregation: one 5,000-target cycle, seconds and allocations",
     ["bench_aggregate.py", "--targets", "5000"]),
    ("whole cycle: loopback fleets of 1,000 and 5,000 targets, 40 KB gzip'd pages",
     ["bench_cycle.py", "--targets", "1000", "5000"]),
    ("beside real Prometheus: CPU per scrape of the same 1,000-node fleet, and the ratio",
     ["bench_prometheus.py", "--nodes", "1000", "--interval", "5s"]),
    ("apiserver_proxy against direct: CPU per scrape, connections to and bytes through the "
     "API server (TLS)", ["bench_proxy.py", "--nodes", "500", "--interval", "5s"]),
    ("sharded: 4 shards + a gateway over 20,000 nodes, CPU per process, result checked exact",
     ["bench_sharded.py", "--nodes", "20000", "--shards", "4", "--interval", "20s"]),
    ("CloudWatch exporter: datum encoding and batching", ["bench_awscloudwatch.py"]),
    ("simulated fleet: requests/s it can serve (it must outrun the scraper)",
     ["bench_fleet.py", "--nodes", "1000"]),
]


def main() -> int:
    failed = 0
    for title, argv in BENCHES:
        script = HERE / argv[0]
        if not script.exists():
            continue
        print(f"\n=== {title}\n$ python bench/{' '.join(argv)}", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(script), *argv[1:]])
        print(f"({time.monotonic() - started:.0f}s, exit {code})", flush=True)
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
