"""One shop service instance: `python -m examples.shop.server --service orders ...`.

Serves the service's gRPC API plus grpc.health.v1 on --listen. Orders also
needs --upstream inventory=HOST:PORT and --upstream payments=HOST:PORT: the
local ports its sidecar opens for those services. Stops cleanly on SIGTERM:
health turns NOT_SERVING first, then in-flight calls drain.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

import grpc

from examples.shop import services
from examples.shop.health import HealthServicer
from examples.shop.v1 import shop_pb2_grpc
from skein.addr import parse_hostport
from skein.errors import ConfigError
from skein.v1 import health_pb2

__all__ = ["main", "serve"]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.shop.server")
    parser.add_argument("--service", required=True, choices=sorted(services.SERVICE_NAMES))
    parser.add_argument("--instance", required=True, help="instance id, e.g. orders-1")
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="NAME=HOST:PORT",
        help="where to call another service (orders: inventory and payments)",
    )
    args = parser.parse_args(argv)
    try:
        parse_hostport(args.listen, flag="--listen")
        ups: dict[str, str] = {}
        for item in args.upstream:
            name, sep, addr = item.partition("=")
            if not sep:
                raise ConfigError("--upstream", f"expected NAME=HOST:PORT, got {item!r}")
            parse_hostport(addr, flag=f"--upstream {name}")
            ups[name] = addr
    except ConfigError as err:
        parser.error(str(err))
    if args.service == "orders" and not {"inventory", "payments"} <= ups.keys():
        parser.error("orders needs --upstream inventory=HOST:PORT and --upstream payments=...")
    args.upstreams = ups
    return args


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
    """Serve until `stop` is set, then drain in-flight calls for up to 2 s."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    channels: list[grpc.aio.Channel] = []
    name, instance = args.service, args.instance
    if name == "users":
        shop_pb2_grpc.add_UsersServicer_to_server(services.UsersService(instance), server)
    elif name == "products":
        shop_pb2_grpc.add_ProductsServicer_to_server(services.ProductsService(instance), server)
    elif name == "inventory":
        shop_pb2_grpc.add_InventoryServicer_to_server(services.InventoryService(instance), server)
    elif name == "payments":
        shop_pb2_grpc.add_PaymentsServicer_to_server(services.PaymentsService(instance), server)
    else:
        channels = [grpc.aio.insecure_channel(args.upstreams[n]) for n in ("inventory", "payments")]
        servicer = services.OrdersService(instance, channels[0], channels[1])
        shop_pb2_grpc.add_OrdersServicer_to_server(servicer, server)
    health = HealthServicer([services.SERVICE_NAMES[name]])
    server.add_generic_rpc_handlers([health.handler()])
    if server.add_insecure_port(args.listen) == 0:
        raise SystemExit(f"{instance}: cannot listen on {args.listen}")
    await server.start()
    await stop.wait()
    health.set(health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.stop(2.0)
    for channel in channels:
        await channel.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(args, stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
