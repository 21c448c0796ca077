"""The control addresses a sidecar may talk to: fail-over order and one connection per address.

`ControlChannels` holds one gRPC channel (one HTTP/2 connection, dialled on
use and again after it is lost) per control address, shared by the
discovery stream and registration, so a sidecar keeps one connection to its
control replica. `ControlEndpoints` is one component's position in the
fail-over list: `fail()` moves it to the next address, so a component that
saw a failure steers away from a dead replica without tearing down a
connection another component may still be using.

The channels are `skein.grpcclient`, not grpcio: see that package for why.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

from skein.addr import HostPort, format_hostport
from skein.grpcclient import GrpcChannel

__all__ = ["ControlChannels", "ControlEndpoints"]

# Snapshots of a large mesh can be big; the control daemon's own limit is the same.
MAX_MESSAGE = 64 * 1024 * 1024


class ControlChannels:
    """One channel per control address, created on first use."""

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self._tls = tls
        self._channels: dict[str, GrpcChannel] = {}

    @property
    def tls(self) -> ssl.SSLContext | None:
        """The client context verifying control (None: plaintext h2c)."""
        return self._tls

    def get(self, address: str) -> GrpcChannel:
        channel = self._channels.get(address)
        if channel is None:
            channel = GrpcChannel(
                address, ssl=self._tls, max_message=MAX_MESSAGE, user_agent="skein-sidecar/1"
            )
            self._channels[address] = channel
        return channel

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()


class ControlEndpoints:
    """A rotating list of control HOST:PORTs; `current` is the one in use.

    Without a shared `channels`, it owns a private set and closes it in `close()`.
    """

    def __init__(
        self, addresses: Sequence[HostPort], channels: ControlChannels | None = None
    ) -> None:
        if not addresses:
            raise ValueError("at least one control address is needed")
        self.addresses = [format_hostport(a) for a in addresses]
        self._index = 0
        self._owned = channels is None
        self._channels = channels if channels is not None else ControlChannels()

    @property
    def current(self) -> str:
        return self.addresses[self._index]

    def channel(self) -> GrpcChannel:
        return self._channels.get(self.current)

    async def fail(self) -> None:
        """Move to the next address (the connection stays for whoever else uses it)."""
        self._index = (self._index + 1) % len(self.addresses)

    async def close(self) -> None:
        if self._owned:
            await self._channels.close()
