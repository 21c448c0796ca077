"""Header handling: request scan, HTTP/1.1 <-> HTTP/2 translation, synthetic answers."""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.transport.headers import (
    HeaderError,
    grpc_error_headers,
    grpc_status_of,
    h1_request_to_h2,
    h2_response_to_h1,
    http_error_response,
    parse_pushback,
    percent_encode_grpc_message,
    scan_request,
    status_of,
    trailers_error,
)


def test_scan_request_finds_everything_in_one_pass() -> None:
    headers = [
        (b":method", b"POST"),
        (b":path", b"/pkg.Svc/M"),
        (b":authority", b"orders:9000"),
        (b"content-type", b"application/grpc+proto"),
        (b"grpc-timeout", b"1S"),
    ]
    head = scan_request(headers)
    assert (head.authority, head.path, head.is_grpc, head.timeout_index) == (
        b"orders:9000",
        b"/pkg.Svc/M",
        True,
        4,
    )


def test_scan_request_falls_back_to_host_and_plain_http() -> None:
    head = scan_request([(b":path", b"/"), (b"host", b"shop"), (b"content-type", b"text/html")])
    assert (head.authority, head.is_grpc, head.timeout_index) == (b"shop", False, -1)


@given(st.text())
def test_grpc_message_encoding_round_trips(message: str) -> None:
    encoded = percent_encode_grpc_message(message)
    assert all(0x20 <= b < 0x7F for b in encoded)
    assert urllib.parse.unquote_to_bytes(encoded).decode("utf-8", "surrogatepass") == message


def test_grpc_error_headers_are_trailers_only() -> None:
    headers = dict(grpc_error_headers(14, "no endpoints for 'orders' 100%"))
    assert headers[b":status"] == b"200"
    assert headers[b"grpc-status"] == b"14"
    assert headers[b"grpc-message"] == b"no endpoints for 'orders' 100%25"


def test_http_error_response() -> None:
    headers, body = http_error_response(503, "down")
    assert dict(headers)[b"content-length"] == b"5" and body == b"down\n"


def test_synthetic_answers_carry_extra_fields_last() -> None:
    extra = [(b"retry-after", b"2")]
    assert grpc_error_headers(8, "slow down", extra)[-1] == (b"retry-after", b"2")
    headers, _ = http_error_response(429, "slow down", extra)
    assert headers[0] == (b":status", b"429") and headers[-1] == (b"retry-after", b"2")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (b"0", 0.0),
        (b"300", 0.3),
        (b"1500", 1.5),
        (b"-1", -1.0),
        (b"-300", -1.0),
        (b"", -1.0),
        (b"1.5", -1.0),
        (b" 300", -1.0),
        (b"+300", -1.0),
        (b"3e2", -1.0),
        (b"\xd9\xa3", -1.0),  # a non-ASCII digit
        (b"9" * 40, -1.0),  # absurdly long
    ],
)
def test_pushback_is_milliseconds_or_do_not_retry(value: bytes, seconds: float) -> None:
    """gRFC A6: a non-negative integer is the delay; anything else means "do not retry"."""
    assert parse_pushback(value) == seconds


def test_status_helpers() -> None:
    assert status_of([(b":status", b"404")]) == 404
    assert status_of([]) == 0
    assert grpc_status_of([(b"grpc-status", b"0")]) == 0
    assert grpc_status_of([(b"grpc-status", b"x")]) == 2
    assert grpc_status_of([]) == -1


def test_h1_request_drops_hop_by_hop_and_connection_named_fields() -> None:
    headers = h1_request_to_h2(
        b"POST",
        b"/a?b=1",
        [
            (b"Host", b"shop"),
            (b"Connection", b"keep-alive, X-Secret"),
            (b"X-Secret", b"1"),
            (b"Keep-Alive", b"5"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Upgrade", b"h2c"),
            (b"TE", b"trailers"),
            (b"Content-Type", b"application/json"),
        ],
    )
    assert headers == [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"shop"),
        (b":path", b"/a?b=1"),
        (b"te", b"trailers"),
        (b"content-type", b"application/json"),
    ]


def test_h1_absolute_form_target() -> None:
    headers = dict(h1_request_to_h2(b"GET", b"http://api.local:8080/x", [(b"Host", b"other")]))
    assert headers[b":authority"] == b"api.local:8080"
    assert headers[b":path"] == b"/x"


@pytest.mark.parametrize(
    ("method", "target", "fields", "fragment"),
    [
        (b"GET", b"/", [], "without Host"),
        (b"CONNECT", b"x:443", [(b"Host", b"x")], "CONNECT"),
        (b"GET", b"relative", [(b"Host", b"x")], "origin-form"),
    ],
)
def test_h1_request_errors(
    method: bytes, target: bytes, fields: list[tuple[bytes, bytes]], fragment: str
) -> None:
    with pytest.raises(HeaderError, match=fragment):
        h1_request_to_h2(method, target, fields)


def test_h2_response_to_h1_chunked_and_length() -> None:
    head, chunked = h2_response_to_h1(
        [(b":status", b"200"), (b"x-a", b"1")], keep_alive=True, body_allowed=True
    )
    assert chunked and head == b"HTTP/1.1 200 OK\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n"
    head, chunked = h2_response_to_h1(
        [(b":status", b"204"), (b"content-length", b"0")], keep_alive=False, body_allowed=True
    )
    assert not chunked
    assert head == b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


GOOD = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/p"),
    (b":authority", b"svc"),
    (b"te", b"trailers"),
]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ([(b"X-Up", b"1")], "lowercase token"),
        ([(b"bad name", b"1")], "lowercase token"),
        ([(b"x-a", b"v\r\nx: y")], "CR, LF, NUL"),
        ([(b"x-a", b" lead")], "edge whitespace"),
        ([(b"connection", b"close")], "connection-specific"),
        ([(b"upgrade", b"h2c")], "connection-specific"),
        ([(b"te", b"gzip")], "connection-specific"),
        ([(b":path", b"/again")], "unknown or repeated"),
        ([(b"x-a", b"1"), (b":method", b"GET")], "after a regular header"),
        ([(b":protocol", b"ws")], "unknown or repeated"),
        ([(b"host", b"other")], "differs from :authority"),
    ],
)
def test_scan_request_names_what_is_malformed(
    extra: list[tuple[bytes, bytes]], fragment: str
) -> None:
    assert fragment in scan_request([*GOOD[:4], *extra, GOOD[4]]).error


def test_scan_request_accepts_well_formed_and_connect() -> None:
    assert scan_request([*GOOD, (b"host", b"svc"), (b"x-a-bin", b"AAEC")]).error == ""
    assert scan_request([(b":method", b"CONNECT"), (b":authority", b"h:1")]).error == ""
    assert "CONNECT" in scan_request([(b":method", b"CONNECT"), *GOOD[1:]]).error
    assert ":path" in scan_request([h for h in GOOD if h[0] != b":scheme"]).error


def test_trailers_error() -> None:
    assert trailers_error([(b"grpc-status", b"0")]) == ""
    assert "pseudo-header" in trailers_error([(b":status", b"200")])
    assert "not allowed" in trailers_error([(b"Grpc-Status", b"0")])


def test_scan_request_memo_never_accepts_a_field_it_rejected() -> None:
    # Well-formed fields are remembered; a malformed one never is, however often it is seen.
    for _ in range(3):
        assert scan_request(GOOD).error == ""
        assert "CR, LF, NUL" in scan_request([*GOOD, (b"x-a", b"a\nb")]).error
        assert "connection-specific" in scan_request([*GOOD, (b"te", b"gzip")]).error
        assert "lowercase" in scan_request([*GOOD, (b"X-A", b"1")]).error
    assert scan_request([*GOOD, (b"te", b"trailers")]).error == ""
    # a pseudo-header's value is checked like any other
    assert "CR, LF, NUL" in scan_request([(b":method", b"PO\x00ST"), *GOOD[1:]]).error


def test_trailers_error_memo_keeps_rejecting() -> None:
    for _ in range(2):  # the second round may answer from the memo
        assert trailers_error([(b"grpc-status", b"0"), (b"grpc-message", b"ok")]) == ""
        assert "not allowed" in trailers_error([(b"te", b"trailers")])
        assert "not allowed" in trailers_error([(b"Grpc-Status", b"0")])
        assert "CR, LF" in trailers_error([(b"grpc-message", b"a\r\nb")])
    assert scan_request([*GOOD, (b"te", b"trailers")]).error == ""  # memoised as well-formed
    assert "not allowed" in trailers_error([(b"te", b"trailers")])  # still not in trailers
