"""Stable hashes for the hashing balancers, and where a request's hash key comes from.

Every sidecar must map a key to the same endpoint, so nothing here may depend
on the process: Python's `hash()` is salted per process and is never used.

- request keys (per pick, hot path): CRC-32 (`zlib.crc32`, C, ~70 ns for a
  short key). It is not a cryptographic hash and needs not be: keys only have
  to spread over 32 bits, and the ring points and table preferences they are
  compared with come from unrelated functions.
- ring points (build time): SHAKE-256 of the endpoint's name, read as 32-bit
  words. An extendable-output function gives any number of points in one call,
  and the first n points stay the same whatever n, so changing one endpoint's
  weight adds or removes only its own points.
- Maglev preferences (build time): BLAKE2b of the endpoint's name, split into
  the (offset, skip) pair.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Sequence

from skein.config.model import HashConfig

__all__ = [
    "HashKeySource",
    "endpoint_name",
    "key_hash",
    "maglev_preferences",
    "ring_points",
]

key_hash = zlib.crc32
"""key_hash(data: bytes) -> int in [0, 2**32): the stable hash of a request's key."""


def endpoint_name(key: tuple[str, str, int]) -> bytes:
    """What the build-time hashes of an endpoint are computed from: `instance@host:port`.

    The instance name is part of it so that a new instance reusing an old
    address does not inherit the old one's keys by accident of the address.
    """
    instance, host, port = key
    return f"{instance}@{host}:{port}".encode()


def ring_points(name: bytes, count: int) -> tuple[int, ...]:
    """`count` pseudo-random 32-bit ring positions for `name`; a prefix of any longer run."""
    return struct.unpack(f"<{count}I", hashlib.shake_256(name).digest(4 * count))


def maglev_preferences(name: bytes, table_size: int) -> tuple[int, int]:
    """(offset, skip) of `name`'s permutation of a prime-sized table: offset + j * skip."""
    digest = hashlib.blake2b(name, digest_size=16, person=b"skein-maglev").digest()
    offset = int.from_bytes(digest[:8], "little") % table_size
    skip = int.from_bytes(digest[8:], "little") % (table_size - 1) + 1
    return offset, skip


class HashKeySource:
    """Extracts a request's hash key: a header's value (first occurrence) or the caller's IP.

    None when the request has no such header or the IP is unknown; the
    balancer then picks a random endpoint.
    """

    __slots__ = ("_header", "_source_ip")

    def __init__(self, config: HashConfig) -> None:
        self._header = config.header.encode("ascii")
        self._source_ip = config.source_ip

    def __call__(self, headers: Sequence[tuple[bytes, bytes]], peer_ip: str) -> bytes | None:
        if self._source_ip:
            return peer_ip.encode("ascii") if peer_ip else None
        name = self._header
        for header, value in headers:
            if header == name:
                return value
        return None
