"""The sidecar data plane: an HTTP/2 frame relay (own sans-IO codec + asyncio), HTTP/1.1 too.

Public API: `UpstreamPool`, `start_listener`, `Listener`; the dispatcher seam
is in `sidecar.transport.contract`.
"""

from __future__ import annotations

from sidecar.transport.contract import Dispatcher, NoRoute, Pick
from sidecar.transport.listener import Listener, start_listener
from sidecar.transport.upstream import UpstreamPool

__all__ = ["Dispatcher", "Listener", "NoRoute", "Pick", "UpstreamPool", "start_listener"]
