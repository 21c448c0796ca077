"""The benchmark's application: a grpc.aio server echoing raw request bytes.

A generic handler with no (de)serializers, so the server does the least work a
real gRPC service can do and the proxies' cost stands out. Run as
`python -m bench.echo_server --listen HOST:PORT`; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import grpc

from bench.grpcframe import ECHO_METHOD
from skein.addr import format_hostport, parse_hostport

__all__ = ["main", "serve"]

_SERVICE, _METHOD = ECHO_METHOD.strip("/").split("/")


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def serve(listen: str) -> None:
    """Serve until SIGTERM or SIGINT."""
    host, port = parse_hostport(listen, flag="--listen")
    handler = grpc.method_handlers_generic_handler(
        _SERVICE, {_METHOD: grpc.unary_unary_rpc_method_handler(_echo)}
    )
    # SO_REUSEPORT off: a second server on the same port must fail, not split traffic.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(format_hostport((host, port)))
    if bound == 0:
        raise SystemExit(f"echo server: cannot listen on {listen}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"listening {format_hostport((host, bound))}", flush=True)
    await stop.wait()
    await server.stop(grace=0.5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True, help="HOST:PORT to serve on")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.listen))


if __name__ == "__main__":
    main()
