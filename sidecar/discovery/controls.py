"""The control addresses a sidecar may talk to, with fail-over to the next one.

One channel is open at a time: `channel()` opens (or reuses) the channel to
the current address; `fail()` closes it and moves on to the next address, so
every component that saw a failure steers away from a dead replica.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from skein.addr import HostPort, format_hostport

__all__ = ["ControlEndpoints"]

_OPTIONS = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.enable_retries", 0),
)


class ControlEndpoints:
    """A rotating list of control HOST:PORTs; `current` is the one in use."""

    def __init__(self, addresses: Sequence[HostPort]) -> None:
        if not addresses:
            raise ValueError("at least one control address is needed")
        self.addresses = [format_hostport(a) for a in addresses]
        self._index = 0
        self._channel: grpc.aio.Channel | None = None

    @property
    def current(self) -> str:
        return self.addresses[self._index]

    def channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.current, options=_OPTIONS)
        return self._channel

    async def fail(self) -> None:
        """Drop the channel and move to the next address."""
        await self.close()
        self._index = (self._index + 1) % len(self.addresses)

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close(grace=None)
