"""Map an outbound `:authority` / `Host` to a cluster name (sans-IO).

Accepted forms, all naming cluster `orders`: `orders`, `orders:8003`,
`orders.skein`, `orders.default.svc.cluster.local[:port]`. The full host is
tried first (a cluster may be named with dots), then its first DNS label.
Anything not naming a known cluster (an IP, another name) yields None.
"""

from __future__ import annotations

from collections.abc import Container

__all__ = ["AuthorityRouter", "cluster_for_authority"]


def _host(authority: str) -> str:
    text = authority.strip().lower()
    if text.startswith("["):  # [v6]:port — never a service name
        return text[1 : text.find("]")] if "]" in text else text
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit():
        return host
    return text


def cluster_for_authority(authority: str, clusters: Container[str]) -> str | None:
    """The cluster `authority` names, or None when it names none of `clusters`."""
    host = _host(authority).rstrip(".")
    if not host:
        return None
    if host in clusters:
        return host
    label = host.split(".", 1)[0]
    if label != host and label in clusters:
        return label
    return None


class AuthorityRouter:
    """Memoises `cluster_for_authority` for one cluster set (bounded).

    Build a new router when the cluster set changes; the cache then starts
    empty, so a stale answer can never outlive its configuration.
    """

    __slots__ = ("_cache", "_clusters", "_limit")

    def __init__(self, clusters: Container[str], limit: int = 1024) -> None:
        self._clusters = clusters
        self._cache: dict[str, str | None] = {}
        self._limit = limit

    def route(self, authority: str) -> str | None:
        try:
            return self._cache[authority]
        except KeyError:
            pass
        result = cluster_for_authority(authority, self._clusters)
        if len(self._cache) < self._limit:
            self._cache[authority] = result
        return result
