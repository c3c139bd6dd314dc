"""Forecasts on synthetic series whose answers are known in closed form."""

from __future__ import annotations

import math
import random

import pytest

from pipeline import Batch, Cycle, Metric, MetricKind
from processors.ip_forecast._fit import MAX_POINTS, theil_sen_slope, thin
from processors.ip_forecast._forecast import Forecaster
from processors.ip_forecast.config import ForecastConfig, default_forecasts

HOUR = 3600.0
STEP = 30.0
CLUSTER = ForecastConfig(metric="ipExhaustionHours", used="assignIPAddresses",
                         capacity="maxIPAddresses")
SUBNET = ForecastConfig(metric="subnetExhaustionHours", available="subnetAvailableIPs")


def gauge(name: str, value: float, **attributes: str) -> Metric:
    return Metric(name=name, kind=MetricKind.GAUGE, value=value,
                  attributes=tuple(sorted(attributes.items())))


def cycle(t: float, *metrics: Metric) -> Batch:
    return Batch(cycle=Cycle(time=t, previous=t - STEP, index=int(t // STEP)), metrics=metrics)


def run(forecaster: Forecaster, until: float, metrics_at) -> list[list[Metric]]:  # type: ignore[no-untyped-def]
    """Feed cycles every STEP from 0 to ``until`` inclusive; the forecasts of each cycle."""
    out = []
    t = 0.0
    while t <= until + 1e-9:
        out.append(forecaster.observe(cycle(t, *metrics_at(t))))
        t += STEP
    return out


def cluster_at(used_per_hour: float, capacity: float = 1000.0, start: float = 100.0):  # type: ignore[no-untyped-def]
    return lambda t: [gauge("assignIPAddresses", start + used_per_hour * t / HOUR),
                      gauge("maxIPAddresses", capacity)]


def test_a_steady_rise_gives_remaining_over_rate_exactly() -> None:
    forecaster = Forecaster([CLUSTER], window=HOUR, max_horizon=30 * 24 * HOUR)
    (last,) = run(forecaster, 2 * HOUR, cluster_at(10.0))[-1]
    # at 2 h: used 120 of 1000, rising 10 an hour: 88 hours left
    assert last.name == "ipExhaustionHours"
    assert last.value == pytest.approx(88.0, rel=1e-9)
    assert last.unit == "None" and "Theil-Sen" in last.description


def test_nothing_until_the_window_is_full() -> None:
    forecaster = Forecaster([CLUSTER], window=HOUR, max_horizon=30 * 24 * HOUR)
    results = run(forecaster, HOUR, cluster_at(10.0))
    assert all(r == [] for r in results[:-1])  # 0 .. 59.5 min
    assert len(results[-1]) == 1  # at 60 min the first point is the window's start
    assert results[-1][0].value == pytest.approx((1000 - 110) / 10)


@pytest.mark.parametrize("rate", [0.0, -25.0, 0.5])  # flat, falling, under one IP an hour
def test_flat_or_falling_publishes_nothing(rate: float) -> None:
    forecaster = Forecaster([CLUSTER], window=HOUR, max_horizon=30 * 24 * HOUR)
    assert run(forecaster, 2 * HOUR, cluster_at(rate))[-1] == []


def test_a_one_cycle_spike_barely_moves_the_forecast() -> None:
    def spiky(t: float) -> list[Metric]:
        metrics = cluster_at(10.0)(t)
        if t == 1.5 * HOUR:  # 500 pods for one cycle, e.g. a job burst
            metrics[0] = gauge("assignIPAddresses", 600.0 + 10 * t / HOUR)
        return metrics

    forecaster = Forecaster([CLUSTER], window=HOUR, max_horizon=30 * 24 * HOUR)
    (last,) = run(forecaster, 2 * HOUR, spiky)[-1]
    # The median of pairwise slopes moves by at most a step: within a fraction of a percent,
    # where a least-squares slope would be several times too steep.
    assert last.value == pytest.approx(88.0, rel=0.02)


def test_a_new_node_group_lengthens_the_forecast_at_once() -> None:
    def grown(t: float) -> list[Metric]:
        return cluster_at(10.0, capacity=1000.0 if t < 2 * HOUR else 2000.0)(t)

    forecaster = Forecaster([CLUSTER], window=HOUR, max_horizon=30 * 24 * HOUR)
    results = run(forecaster, 2 * HOUR, grown)
    assert results[-2][0].value == pytest.approx((1000 - (100 + 10 * (2 * HOUR - STEP) / HOUR))
                                                 / 10)
    assert results[-1][0].value == pytest.approx(188.0)  # capacity is read, not fitted


def test_a_scale_down_frees_addresses_at_once_and_keeps_the_rate() -> None:
    def scaled_down(t: float) -> list[Metric]:
        used = 500 + 10 * t / HOUR if t < 2 * HOUR else 200 + 10 * t / HOUR
        return [gauge("assignIPAddresses", used), gauge("maxIPAddresses", 1000.0)]

    def expected(minute: float) -> float:
        return (1000 - (200 + 10 * minute / 60)) / 10

    forecaster = Forecaster([CLUSTER], window=HOUR, max_horizon=30 * 24 * HOUR)
    results = run(forecaster, 3.5 * HOUR, scaled_down)
    by_minute = {i * STEP / 60: r for i, r in enumerate(results)}
    # Five minutes after 300 addresses were freed: the drop is one step among the fitted
    # points, so the rate stays 10 an hour and the remaining addresses are read at once.
    assert by_minute[125][0].value == pytest.approx(expected(125), rel=0.01)
    # While the drop sits near the middle of the window, half the pairs straddle it and the fit
    # may read flat for a few cycles (published: nothing); never a wrong, shorter forecast.
    for minute in range(120, 181):
        for metric in by_minute[minute]:
            assert metric.value == pytest.approx(expected(minute), rel=0.01)
    assert by_minute[181][0].value == pytest.approx(expected(181))


def test_a_subnet_read_by_what_is_left() -> None:
    def subnets(t: float) -> list[Metric]:
        return [gauge("subnetAvailableIPs", 500 - 20 * t / HOUR, SubnetId="subnet-a"),
                gauge("subnetAvailableIPs", 4000.0, SubnetId="subnet-b")]  # untouched: flat

    forecaster = Forecaster([SUBNET], window=HOUR, max_horizon=30 * 24 * HOUR)
    (only,) = run(forecaster, HOUR, subnets)[-1]
    assert only.attributes == (("SubnetId", "subnet-a"),)
    assert only.value == pytest.approx(480 / 20)


def test_an_empty_pool_reads_zero_and_far_futures_are_left_out() -> None:
    empty = Forecaster([SUBNET], window=HOUR, max_horizon=30 * 24 * HOUR)
    # available falls to 0 and stays there; the window's trend is still a fall
    result = run(empty, HOUR, lambda t: [gauge("subnetAvailableIPs", max(0.0, 60 - 60 * t / HOUR))])
    assert result[-1][0].value == 0.0
    far = Forecaster([CLUSTER], window=HOUR, max_horizon=24 * HOUR)
    assert run(far, HOUR, cluster_at(10.0))[-1] == []  # 89 h > 24 h


def test_each_attribute_set_has_its_own_series_and_gone_ones_are_forgotten() -> None:
    def zones(t: float) -> list[Metric]:
        metrics = [gauge("assignIPAddresses", 100 + 10 * t / HOUR, zone="a"),
                   gauge("maxIPAddresses", 1000.0, zone="a")]
        if t < HOUR:
            metrics += [gauge("assignIPAddresses", 50.0, zone="b"),
                        gauge("maxIPAddresses", 500.0, zone="b")]
        return metrics

    forecaster = Forecaster([CLUSTER], window=HOUR, max_horizon=30 * 24 * HOUR)
    results = run(forecaster, 2.5 * HOUR, zones)
    assert [m.attributes for m in results[-1]] == [(("zone", "a"),)]
    assert len(forecaster) == 1  # zone b left the cycles over a window ago


def test_a_replayed_cycle_does_not_count_twice() -> None:
    forecaster = Forecaster([CLUSTER], window=HOUR, max_horizon=30 * 24 * HOUR)
    run(forecaster, HOUR, cluster_at(10.0))
    again = forecaster.observe(cycle(HOUR, *cluster_at(10.0)(HOUR)))
    assert again[0].value == pytest.approx(89.0)


def test_thin_keeps_the_newest_and_at_most_the_limit() -> None:
    points = [(float(i), float(i)) for i in range(500)]
    thinned = thin(points)
    assert len(thinned) == MAX_POINTS
    assert thinned[-1] == points[-1] and thinned[0] == points[0]
    assert thinned == sorted(thinned)


def test_theil_sen_resists_outliers_that_least_squares_follows() -> None:
    rng = random.Random(7)
    points = [(float(t), 2.0 * t + rng.uniform(-1, 1)) for t in range(40)]
    for i in range(0, 40, 5):  # an eighth of the points wild
        points[i] = (points[i][0], 500.0)
    slope = theil_sen_slope(points)
    assert slope is not None and math.isclose(slope, 2.0, rel_tol=0.1)
    assert theil_sen_slope([(1.0, 5.0)]) is None


def test_default_forecasts_cover_the_cluster_and_the_subnets() -> None:
    assert [f.metric for f in default_forecasts()] == ["ipExhaustionHours",
                                                       "subnetExhaustionHours"]
