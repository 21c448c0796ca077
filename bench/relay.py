"""A bare Skein transport hop: one listener, a static dispatcher, no control plane.

The fallback when the full `skein sidecar` cannot start: it measures the data
plane alone (no discovery, registration or admin). Run as
`python -m bench.relay --listen HOST:PORT --upstream HOST:PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence

from sidecar.transport import Pick, UpstreamPool, start_listener
from skein.addr import HostPort, parse_hostport
from skein.runtime import run

__all__ = ["StaticDispatcher", "main"]


class StaticDispatcher:
    """Sends every stream to one address."""

    def __init__(self, address: HostPort) -> None:
        self.address = address

    def pick(
        self, authority: str, path: str, headers: Sequence[tuple[bytes, bytes]], peer_ip: str
    ) -> Pick:
        return Pick("bench", self.address)


async def _serve(listen: HostPort, upstream: HostPort) -> None:
    pool = UpstreamPool()
    listener = await start_listener(
        listen[0], listen[1], StaticDispatcher(upstream), pool, name="bench"
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await listener.close(grace=1.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--upstream", required=True, metavar="HOST:PORT")
    args = parser.parse_args(argv)
    run(
        _serve(
            parse_hostport(args.listen, flag="--listen"),
            parse_hostport(args.upstream, flag="--upstream"),
        )
    )


if __name__ == "__main__":
    main()
