"""The demo's traffic generator: a gateway calling the shop through its sidecar.

It reaches its upstreams both ways the sidecar offers: `users` through a
per-upstream local port (`--upstream users=...`), `products` and `orders`
through the one outbound port, routed by `:authority`. Orders' own calls to
inventory and payments are reported from the timings orders returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable

import grpc

from examples.shop.stats import Recorder
from examples.shop.v1 import shop_pb2, shop_pb2_grpc

__all__ = ["Gateway"]

_TIMEOUT = 5.0


class Gateway:
    """Drives about `rate` calls/s with `workers` concurrent callers until `stop` is set."""

    def __init__(
        self, recorder: Recorder, users_port: str, outbound: str, *, rate: float, workers: int
    ) -> None:
        self.recorder = recorder
        self._channels = [
            grpc.aio.insecure_channel(users_port),
            grpc.aio.insecure_channel(outbound, options=[("grpc.default_authority", "products")]),
            grpc.aio.insecure_channel(outbound, options=[("grpc.default_authority", "orders")]),
        ]
        self._users = shop_pb2_grpc.UsersStub(self._channels[0])
        self._products = shop_pb2_grpc.ProductsStub(self._channels[1])
        self._orders = shop_pb2_grpc.OrdersStub(self._channels[2])
        self._rate = rate
        self._workers = workers
        self._seq = itertools.count(1)

    async def _get_user(self) -> None:
        n = next(self._seq)
        await self._users.GetUser(shop_pb2.GetUserRequest(id=f"u-{n % 50}"), timeout=_TIMEOUT)

    async def _get_product(self) -> None:
        n = next(self._seq)
        await self._products.GetProduct(
            shop_pb2.GetProductRequest(id=f"p-{n % 5 + 1}"), timeout=_TIMEOUT
        )

    async def _list_products(self) -> None:
        call = self._products.ListProducts(shop_pb2.ListProductsRequest(limit=3), timeout=_TIMEOUT)
        got = [p async for p in call]
        if len(got) != 3:
            raise RuntimeError(f"ListProducts streamed {len(got)} products, expected 3")

    async def _place_order(self, record: bool = True) -> None:
        n = next(self._seq)
        order = await self._orders.PlaceOrder(
            shop_pb2.PlaceOrderRequest(
                user_id=f"u-{n % 50}", product_id=f"p-{n % 5 + 1}", quantity=1
            ),
            timeout=_TIMEOUT,
        )
        if record:
            self.recorder.record("inventory", order.inventory_ms, True)
            self.recorder.record("payments", order.payments_ms, True)

    async def _timed(
        self, service: str, call: Callable[[], Awaitable[None]], stop: asyncio.Event
    ) -> None:
        started = time.perf_counter()
        try:
            await call()
        except grpc.aio.AioRpcError as err:
            if stop.is_set():
                # Ctrl-C reaches the whole terminal process group, so the
                # mesh may be going down under calls still in flight.
                return
            message = f"{err.code().name}: {err.details()}"
            self.recorder.record(service, 0.0, False, message)
            # orders names the upstream that failed it ("inventory: ...").
            upstream = (err.details() or "").partition(":")[0]
            if service == "orders" and upstream in ("inventory", "payments"):
                self.recorder.record(upstream, 0.0, False, message)
            return
        except RuntimeError as err:
            self.recorder.record(service, 0.0, False, str(err))
            return
        self.recorder.record(service, (time.perf_counter() - started) * 1000.0, True)

    async def probe(self, deadline: float) -> None:
        """Until every upstream answers once (the mesh is converged) or `deadline` passes."""
        pending: dict[str, Callable[[], Awaitable[None]]] = {
            "users": self._get_user,
            "products": self._get_product,
            "orders": lambda: self._place_order(record=False),
        }
        last = ""
        while pending:
            for name, call in list(pending.items()):
                try:
                    await call()
                    del pending[name]
                except grpc.aio.AioRpcError as err:
                    last = f"{name}: {err.code().name}: {err.details()}"
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"the mesh did not answer in time; last error: {last}")
            if pending:
                await asyncio.sleep(0.2)

    async def run(self, stop: asyncio.Event) -> None:
        plan: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("users", self._get_user),
            ("products", self._get_product),
            ("orders", self._place_order),
            ("products", self._list_products),
        ]
        interval = self._workers / self._rate

        async def worker(offset: int) -> None:
            steps = itertools.cycle(plan[offset % len(plan) :] + plan[: offset % len(plan)])
            next_at = time.monotonic()
            while not stop.is_set():
                service, call = next(steps)
                await self._timed(service, call, stop)
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                else:
                    next_at = time.monotonic()  # running late: do not burst to catch up

        await asyncio.gather(*(worker(i) for i in range(self._workers)))

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
