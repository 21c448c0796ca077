from __future__ import annotations

import pytest

from skein.addr import format_hostport, parse_hostport, parse_hostport_list
from skein.errors import AddressError


def test_parses_host_and_port() -> None:
    assert parse_hostport("127.0.0.1:15010") == ("127.0.0.1", 15010)
    assert parse_hostport("[::1]:80") == ("::1", 80)
    assert parse_hostport_list("a:1, b:2") == [("a", 1), ("b", 2)]


@pytest.mark.parametrize("bad", ["nohost", ":80", "host:", "host:http", "host:70000"])
def test_rejects_with_flag_and_value(bad: str) -> None:
    with pytest.raises(AddressError) as err:
        parse_hostport(bad, flag="--control")
    assert "--control" in str(err.value)
    assert "HOST:PORT" in str(err.value) or "port" in str(err.value)


def test_empty_list_is_an_error() -> None:
    with pytest.raises(AddressError, match="--etcd"):
        parse_hostport_list(" , ", flag="--etcd")


def test_format_round_trips() -> None:
    for text in ("10.0.0.1:8080", "[fe80::1]:443"):
        assert format_hostport(parse_hostport(text)) == text
