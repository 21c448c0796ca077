"""The shop's services: small, deterministic gRPC servicers.

Each answer carries `served_by` (the instance id) so balancing across
instances is visible. Orders is the only service that calls others: it
reserves stock in inventory and charges payments, through the local ports
its sidecar opens for them (`--upstream inventory=...`, `--upstream payments=...`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc

from examples.shop.v1 import shop_pb2, shop_pb2_grpc

__all__ = [
    "CATALOG",
    "SERVICE_NAMES",
    "InventoryService",
    "OrdersService",
    "PaymentsService",
    "ProductsService",
    "UsersService",
]

# Mesh service name -> full gRPC service name.
SERVICE_NAMES = {
    "users": "shop.v1.Users",
    "products": "shop.v1.Products",
    "orders": "shop.v1.Orders",
    "inventory": "shop.v1.Inventory",
    "payments": "shop.v1.Payments",
}

CATALOG = {
    "p-1": ("Hand-spun wool skein", 1800),
    "p-2": ("Knitting needles 4 mm", 650),
    "p-3": ("Pattern book", 2400),
    "p-4": ("Stitch markers", 300),
    "p-5": ("Yarn swift", 5200),
}

# grpc ships no type hints; servicer contexts are grpc.aio.ServicerContext.
Context: TypeAlias = Any


class UsersService:
    def __init__(self, instance: str) -> None:
        self.instance = instance

    async def GetUser(self, request: shop_pb2.GetUserRequest, context: Context) -> shop_pb2.User:
        if not request.id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "id: required")
        return shop_pb2.User(
            id=request.id,
            name=f"User {request.id}",
            email=f"{request.id}@shop.example",
            served_by=self.instance,
        )


class ProductsService:
    def __init__(self, instance: str) -> None:
        self.instance = instance

    def _product(self, pid: str) -> shop_pb2.Product:
        title, price = CATALOG[pid]
        return shop_pb2.Product(id=pid, title=title, price_cents=price, served_by=self.instance)

    async def GetProduct(
        self, request: shop_pb2.GetProductRequest, context: Context
    ) -> shop_pb2.Product:
        if request.id not in CATALOG:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no product {request.id!r}")
        return self._product(request.id)

    async def ListProducts(
        self, request: shop_pb2.ListProductsRequest, context: Context
    ) -> AsyncIterator[shop_pb2.Product]:
        ids = sorted(CATALOG)
        for pid in ids[: request.limit or None]:
            yield self._product(pid)


class InventoryService:
    def __init__(self, instance: str) -> None:
        self.instance = instance
        self._ids = itertools.count(1)

    async def Reserve(
        self, request: shop_pb2.ReserveRequest, context: Context
    ) -> shop_pb2.Reservation:
        if request.product_id not in CATALOG:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no product {request.product_id!r}")
        if not 1 <= request.quantity <= 100:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"quantity: must be 1-100, got {request.quantity}",
            )
        rid = f"{self.instance}-r{next(self._ids)}"
        return shop_pb2.Reservation(id=rid, reserved=True, served_by=self.instance)


class PaymentsService:
    def __init__(self, instance: str) -> None:
        self.instance = instance
        self._ids = itertools.count(1)

    async def Charge(self, request: shop_pb2.ChargeRequest, context: Context) -> shop_pb2.Payment:
        if request.amount_cents <= 0:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"amount_cents: must be positive, got {request.amount_cents}",
            )
        pid = f"{self.instance}-p{next(self._ids)}"
        return shop_pb2.Payment(id=pid, approved=True, served_by=self.instance)


class OrdersService:
    """Calls inventory then payments; an upstream failure names the upstream."""

    def __init__(
        self, instance: str, inventory: grpc.aio.Channel, payments: grpc.aio.Channel
    ) -> None:
        self.instance = instance
        self._inventory = shop_pb2_grpc.InventoryStub(inventory)
        self._payments = shop_pb2_grpc.PaymentsStub(payments)
        self._ids = itertools.count(1)

    async def PlaceOrder(
        self, request: shop_pb2.PlaceOrderRequest, context: Context
    ) -> shop_pb2.Order:
        if request.product_id not in CATALOG:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no product {request.product_id!r}")
        order_id = f"{self.instance}-o{next(self._ids)}"
        remaining = context.time_remaining()
        timeout = min(remaining, 5.0) if remaining is not None else 5.0
        started = time.perf_counter()
        try:
            reservation = await self._inventory.Reserve(
                shop_pb2.ReserveRequest(product_id=request.product_id, quantity=request.quantity),
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as err:
            await context.abort(err.code(), f"inventory: {err.details()}")
        reserved = time.perf_counter()
        amount = CATALOG[request.product_id][1] * request.quantity
        try:
            payment = await self._payments.Charge(
                shop_pb2.ChargeRequest(
                    order_id=order_id, user_id=request.user_id, amount_cents=amount
                ),
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as err:
            await context.abort(err.code(), f"payments: {err.details()}")
        charged = time.perf_counter()
        return shop_pb2.Order(
            id=order_id,
            reservation_id=reservation.id,
            payment_id=payment.id,
            served_by=self.instance,
            inventory_ms=(reserved - started) * 1000.0,
            payments_ms=(charged - reserved) * 1000.0,
        )
