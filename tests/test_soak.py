"""``bench/soak.py``: a short soak on a small fleet runs its whole code path (the real pipeline in
its own process, restarts and faults between cycles), its exact-value checks pass against the
fleet's truth and it reports RSS samples. No speed or memory threshold is asserted here."""

from __future__ import annotations

import io
import math

from bench._soak_checks import Check, exact_checks, percentile, rss_growth, served_values
from bench.soak import Options, report, run
from simfleet import FleetProcess


def test_short_soak_passes_its_exact_checks_and_samples_rss() -> None:
    options = Options(minutes=0.35, nodes=30, interval=2.0, base="127.62.0.1",
                      restart_every=4, fault_every=3, fault_cycles=2, sample_every=2.0,
                      advance_every=1)
    result = run(options, out=io.StringIO())
    counters = [c for c in result.checks if c.name.endswith("_total")]
    gauges = [c for c in result.checks if not c.name.endswith("_total")]
    assert len(counters) == 11 and len(gauges) >= 6
    assert all(check.ok for check in result.checks), [c for c in result.checks if not c.ok]
    # the window moved the counters: an exporter that published nothing would fail the checks
    assert sum(check.expected for check in counters) > 0
    assert result.restarts >= 1 and result.faults >= 1
    assert len(result.rss) >= 5 and all(mib > 0 for _, mib in result.rss)
    assert result.durations and all(d > 0 for d in result.durations)
    assert math.isfinite(result.growth[2])
    out = io.StringIO()
    report(result, options, out)
    assert "RSS growth" in out.getvalue() and "MISMATCH" not in out.getvalue()


def test_a_missing_or_different_served_value_fails_its_check() -> None:
    with FleetProcess(2, base_address="127.62.1.1") as fleet:
        truth = fleet.client.truth()
    counted = {"awscni_add_ip_req_count": 5.0}
    counted.update({name: 0.0 for name in (
        "awscni_aws_api_error_count", "awscni_aws_utils_error_count", "awscni_del_ip_req_count",
        "awscni_ipamd_error_count", "awscni_pod_eni_error_count", "awscni_reconcile_count",
        "awscni_force_removed_enis", "awscni_force_removed_ips", "awscni_ec2api_req_count",
        "awscni_ec2api_error_count")})
    page = ("# TYPE awscni_add_ip_req_count counter\nawscni_add_ip_req_count_total 4\n"
            f"# TYPE awscni_eni_max gauge\nawscni_eni_max {truth.gauge_sum('awscni_eni_max')}\n")
    checks = {c.name: c for c in exact_checks(served_values(page), counted, truth)}
    assert not checks["awscni_add_ip_req_count_total"].ok  # 4 served, 5 true
    assert not checks["awscni_reconcile_count_total"].ok  # absent from the page
    assert checks["awscni_eni_max"].ok


def test_growth_compares_the_windows_after_warm_up_and_at_the_end() -> None:
    samples = [(0.0, 50.0), (10.0, 100.0), (20.0, 100.0), (30.0, 104.0), (40.0, 106.0)]
    # medians of the window after warm-up [100, 100] and of the last one [104, 106]
    assert rss_growth(samples, warmup=10.0) == (100.0, 105.0, 5.0)
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert math.isnan(percentile([], 0.99))
    assert Check("x", math.nan, math.nan).ok and not Check("x", math.nan, 1.0).ok
