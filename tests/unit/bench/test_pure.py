"""The benchmark's pure parts: frames, /proc parsing, h2load output, stats, ACK tracking."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.acktrack import AckTracker
from bench.envoy import envoy_config
from bench.grpcframe import FrameError, grpc_frame, parse_grpc_frame, payload
from bench.h2load import H2loadError, parse_log, parse_summary
from bench.markdown import BEGIN, END, MarkerError, replace_results
from bench.procstat import ProcStatError, cpu_seconds, memory, parse_cpu_ticks, parse_memory
from bench.report import LoadRun, aggregate, evaluate_targets
from bench.stats import median, percentile


def test_frame_has_the_grpc_prefix() -> None:
    frame = grpc_frame(payload(1024))
    assert frame[:5] == b"\x00\x00\x00\x04\x00"
    assert len(frame) == 1029


@given(st.binary(max_size=4096))
def test_frame_round_trips(message: bytes) -> None:
    assert parse_grpc_frame(grpc_frame(message)) == message


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00\x00\x00", "5-byte prefix"),
        (b"\x01\x00\x00\x00\x00", "compressed"),
        (b"\x00\x00\x00\x00\x02a", "prefix says 2"),
    ],
)
def test_bad_frames_say_why(data: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        parse_grpc_frame(data)


def test_payload_is_exact_and_deterministic() -> None:
    assert len(payload(1024)) == 1024
    assert payload(300) == payload(300)
    with pytest.raises(ValueError):
        payload(-1)


STAT = (
    "4818 (my (odd) proc) R 4812 4812 2667 0 -1 4194304 102 0 0 0 "
    "1234 56 0 0 20 0 1 0 43909 3133440 417 18446744073709551615"
)


def test_cpu_ticks_are_utime_plus_stime_even_with_parens_in_comm() -> None:
    assert parse_cpu_ticks(STAT) == 1234 + 56


def test_cpu_ticks_reject_truncated_text() -> None:
    with pytest.raises(ProcStatError, match="need at least 15"):
        parse_cpu_ticks("1 (x) R 1 2 3")
    with pytest.raises(ProcStatError, match="no '\\)'"):
        parse_cpu_ticks("garbage")


def test_memory_reads_rss_and_peak() -> None:
    text = "Name:\tpython\nVmHWM:\t   40960 kB\nVmRSS:\t   20480 kB\nThreads:\t3\n"
    mem = parse_memory(text)
    assert (mem.rss_kib, mem.peak_kib) == (20480, 40960)
    assert mem.rss_mib == 20.0
    with pytest.raises(ProcStatError, match="VmHWM"):
        parse_memory("VmRSS:\t1 kB\n")


def test_reading_this_process_from_proc() -> None:
    assert cpu_seconds(os.getpid()) > 0
    mem = memory(os.getpid())
    assert 0 < mem.rss_kib <= mem.peak_kib


H2LOAD_OUTPUT = """
finished in 4.42s, 4525.96 req/s, 4.98MB/s
requests: 20000 total, 20000 started, 20000 done, 19990 succeeded, 10 failed, 10 errored, 0 timeout
status codes: 19990 2xx, 0 3xx, 0 4xx, 0 5xx
"""


def test_h2load_summary() -> None:
    summary = parse_summary(H2LOAD_OUTPUT)
    assert summary.elapsed_s == pytest.approx(4.42)
    assert summary.rps == pytest.approx(4525.96)
    assert (summary.total, summary.succeeded, summary.failed) == (20000, 19990, 10)
    ms = parse_summary(H2LOAD_OUTPUT.replace("4.42s", "1.40ms"))
    assert ms.elapsed_s == pytest.approx(0.0014)


def test_h2load_summary_missing_says_what_it_saw() -> None:
    with pytest.raises(H2loadError, match="connect refused"):
        parse_summary("connect refused\n")


def test_h2load_log_skips_failed_streams_and_counts_non_200() -> None:
    text = "1700000000000000\t200\t512\n1700000000000600\t-1\t0\n1700000000000700\t503\t90\n"
    latencies, non_200 = parse_log(text)
    assert latencies == [512.0, 90.0]
    assert non_200 == 1
    with pytest.raises(H2loadError, match="line 1"):
        parse_log("1\t200\n")


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=200), st.floats(0.01, 100))
def test_percentile_is_an_observed_value_and_monotone(values: list[float], pct: float) -> None:
    value = percentile(values, pct)
    assert value in values
    assert percentile(values, 100) == max(values)
    assert value <= percentile(values, min(100.0, pct + 10))
    share = sum(1 for v in values if v <= value) / len(values)
    assert share >= pct / 100 - 1e-9


def test_percentile_and_median_examples() -> None:
    assert percentile(list(range(1, 101)), 50) == 50
    assert percentile(list(range(1, 101)), 99) == 99
    assert median([3, 1, 2]) == 2
    assert median([4, 1, 2, 3]) == 2.5
    with pytest.raises(ValueError):
        percentile([], 50)


def test_acks_before_the_write_returns_count_once_its_revision_is_known() -> None:
    tracker = AckTracker(3)
    tracker.begin()
    assert not tracker.ack(0, 7, at=1.0)  # pushed before Apply returned
    assert not tracker.ack(1, 6, at=1.1)  # an older version: does not count
    assert not tracker.set_target(7)
    assert tracker.missing() == [1, 2]
    assert not tracker.ack(1, 7, at=2.0)
    assert tracker.ack(2, 8, at=3.0)  # a newer version covers the write too
    assert tracker.last_at == 3.0
    tracker.begin()
    assert not tracker.complete and tracker.reached == 0


def _run(path: str, rps: float, cpu: float, lat: float) -> LoadRun:
    return LoadRun(path, 64, 1000, 1.0, rps, 0, 0, [lat] * 10, {"p": cpu, "echo": 0.3}, {"p": 30})


def test_aggregate_ratios_and_targets() -> None:
    runs = [
        _run("direct", 4000, 0.0, 1000),
        _run("skein-pair", 1900, 0.35, 3000),
        _run("skein-pair", 2100, 0.25, 3000),
        _run("skein-pair", 1000, 0.30, 3000),
        _run("envoy-pair", 2000, 0.2, 2000),
    ]
    cases = {c.path: c for c in aggregate(runs)}
    pair = cases["skein-pair"]
    assert pair.rps == 1900  # the median round
    assert pair.rps_vs_envoy == pytest.approx(0.95)
    assert pair.rps_vs_direct == pytest.approx(0.475)
    assert pair.cpu_us_per_request["p"] == pytest.approx(300)  # 0.9 s over 3000 requests
    assert pair.p50_added_ms == pytest.approx(2.0)
    targets = {t.name: t for t in evaluate_targets(list(cases.values()), 120.0, 64, 1, "echo")}
    assert targets["Skein pair rps vs Envoy pair, c=64"].met is True
    assert targets["sidecar CPU per request, c=64"].met is True
    assert targets["config push to 100 streams, p99"].met is False
    assert targets["one Skein hop added p50, c=1"].met is None


def test_envoy_config_routes_everything_to_one_h2c_upstream() -> None:
    config = envoy_config(("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3))
    cluster = config["static_resources"]["clusters"][0]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 3}
    opts = cluster["typed_extension_protocol_options"]
    assert "http2_protocol_options" in next(iter(opts.values()))["explicit_http_config"]


def test_results_section_is_replaced_between_markers_only() -> None:
    doc = f"intro\n{BEGIN}\nold figures\n{END}\nprose after\n"
    new = replace_results(doc, "new figures")
    assert new == f"intro\n{BEGIN}\nnew figures\n{END}\nprose after\n"
    assert replace_results(new, "new figures") == new
    with pytest.raises(MarkerError, match="results:begin"):
        replace_results("no markers here", "x")
