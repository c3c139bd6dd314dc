"""Benchmark: the awscloudwatch exporter's per-cycle CPU (conversion + packing) and its
throughput into moto on loopback.

    .venv/bin/python bench/bench_awscloudwatch.py [--metrics 100000] [--moto-datums 20000]

Conversion and packing run in the event loop on every cycle, so their cost per metric bounds how
long a large group-by cycle holds the loop. The moto figure is loopback round trips through
botocore (gzip, JSON protocol), not CloudWatch's latency.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporters.awscloudwatch import CloudWatchExporter, CloudWatchExporterConfig  # noqa: E402
from exporters.awscloudwatch._convert import DatumOptions, RequestBuilder, to_datums  # noqa: E402
from pipeline import (  # noqa: E402
    Batch,
    ComponentID,
    ComponentSettings,
    Cycle,
    Kind,
    Metric,
    MetricKind,
    Telemetry,
)


def per_node_metrics(count: int) -> list[Metric]:
    return [Metric(f"metric{i % 20}", MetricKind.GAUGE, float(i),
                   attributes=(("Node", f"ip-10-0-{i // 20 // 250}-{i // 20 % 250}"),))
            for i in range(count)]


def bench_conversion(count: int, rounds: int = 3) -> None:
    metrics = per_node_metrics(count)
    options = DatumOptions(cluster_id="bench-cluster")
    best_convert = best_pack = float("inf")
    for r in range(rounds):
        started = time.perf_counter()
        datums = to_datums(metrics, 1_700_000_000.0 + r, options).datums
        best_convert = min(best_convert, time.perf_counter() - started)
        started = time.perf_counter()
        builder = RequestBuilder()
        full = sum(1 for d in datums if builder.add(d) is not None)
        requests = full + (builder.take() is not None)
        best_pack = min(best_pack, time.perf_counter() - started)
    print(f"to_datums: {count:,} metrics in {best_convert * 1000:.0f} ms "
          f"({best_convert / count * 1e6:.2f} us/metric, best of {rounds})")
    print(f"packing:   {count:,} datums into {requests} requests in {best_pack * 1000:.0f} ms "
          f"({best_pack / count * 1e6:.2f} us/datum)")


async def bench_moto(datums: int) -> None:
    from tests.support.moto_server import running_moto

    for var, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_EC2_METADATA_DISABLED": "true"}.items():
        os.environ[var] = value
    with running_moto() as moto:
        settings = ComponentSettings(
            id=ComponentID("awscloudwatch"), kind=Kind.EXPORTER,
            logger=logging.LoggerAdapter(logging.getLogger("bench"), {}),
            telemetry=Telemetry(), started_at=time.time())
        config = CloudWatchExporterConfig(endpoint_url=moto.endpoint, region=moto.region,
                                          cluster_id="bench", max_datums_held=datums * 2)
        exporter = CloudWatchExporter(settings, config)
        await exporter.start(_Host())
        batch = Batch(cycle=Cycle(time=time.time() - 600, previous=time.time() - 630),
                      metrics=tuple(per_node_metrics(datums)))
        started = time.perf_counter()
        await exporter.consume(batch)
        await exporter.shutdown()
        elapsed = time.perf_counter() - started
    print(f"moto:      {datums:,} datums ({datums // 1000} requests, 2 workers) delivered in "
          f"{elapsed:.2f} s ({datums / elapsed:,.0f} datums/s)")


class _Host:
    def report_status(self, healthy: bool, message: str = "") -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=int, default=100_000)
    parser.add_argument("--moto-datums", type=int, default=20_000)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    bench_conversion(args.metrics)
    if args.moto_datums:
        asyncio.run(bench_moto(args.moto_datums))


if __name__ == "__main__":
    main()
