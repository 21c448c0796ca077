from __future__ import annotations

import pytest

from skein.metrics import Registry


def test_counter_and_gauge_render_prometheus_text() -> None:
    registry = Registry()
    requests = registry.counter("skein_requests_total", "Requests.", ["cluster"])
    requests.labels("orders").inc()
    requests.labels("orders").inc(2)
    requests.labels('we"ird').inc()
    inflight = registry.gauge("skein_in_flight", "In flight.")
    inflight.set(3)
    text = registry.render()
    assert "# TYPE skein_requests_total counter" in text
    assert 'skein_requests_total{cluster="orders"} 3' in text
    assert 'skein_requests_total{cluster="we\\"ird"} 1' in text
    assert "skein_in_flight 3" in text


def test_histogram_buckets_are_cumulative() -> None:
    registry = Registry()
    latency = registry.histogram("lat_seconds", "Latency.", buckets=(0.1, 1.0))
    for value in (0.05, 0.5, 0.5, 5.0):
        latency.observe(value)
    text = registry.render()
    assert 'lat_seconds_bucket{le="0.1"} 1' in text
    assert 'lat_seconds_bucket{le="1"} 3' in text
    assert 'lat_seconds_bucket{le="+Inf"} 4' in text
    assert "lat_seconds_count 4" in text
    assert "lat_seconds_sum 6.05" in text


def test_label_count_and_duplicates_are_errors() -> None:
    registry = Registry()
    family = registry.counter("c_total", "C.", ["a", "b"])
    with pytest.raises(ValueError, match="expected labels"):
        family.labels("only-one")
    with pytest.raises(ValueError, match="registered twice"):
        registry.counter("c_total", "again")
