"""HOST:PORT parsing for flags, with errors that say how to fix them."""

from __future__ import annotations

from skein.errors import AddressError

__all__ = ["HostPort", "format_hostport", "parse_hostport", "parse_hostport_list"]

HostPort = tuple[str, int]


def parse_hostport(value: str, *, flag: str = "") -> HostPort:
    """Parse `host:port` or `[v6]:port`; port 0 means "pick a free one"."""
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise AddressError(flag, f"expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise AddressError(flag, f"port must be a number 0-65535, got {port_text!r} in {value!r}")
    return host, int(port_text)


def parse_hostport_list(value: str, *, flag: str = "") -> list[HostPort]:
    """Parse `host:port[,host:port...]` (at least one)."""
    items = [item for item in value.split(",") if item.strip()]
    if not items:
        raise AddressError(flag, "expected HOST:PORT[,HOST:PORT...], got nothing")
    return [parse_hostport(item, flag=flag) for item in items]


def format_hostport(address: HostPort) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
