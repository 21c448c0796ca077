"""Builders shared by the balancer tests."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from sidecar.policy.balancer import Balancer, EndpointSlot, make_balancer
from skein.config.model import Algorithm, EndpointConfig, HashConfig, LoadBalancerConfig

ALL = list(Algorithm)
HASHING = [Algorithm.RING_HASH, Algorithm.MAGLEV]


def endpoint(k: int, weight: int = 1, healthy: bool = True) -> EndpointConfig:
    return EndpointConfig(f"i{k}", f"10.0.{k // 250}.{k % 250}", 9000 + k, weight, healthy)


def endpoints(
    n: int, weights: Sequence[int] | None = None, healthy: bool = True
) -> list[EndpointConfig]:
    return [endpoint(k, weights[k] if weights is not None else 1, healthy) for k in range(n)]


def config(algorithm: Algorithm, **kw: object) -> LoadBalancerConfig:
    hashing = HashConfig(header="x-user") if algorithm in HASHING else None
    return LoadBalancerConfig(algorithm=algorithm, hash=hashing, **kw)  # type: ignore[arg-type]


def build(
    algorithm: Algorithm,
    eps: Iterable[EndpointConfig],
    seed: int = 0,
    previous: Balancer | None = None,
    **kw: object,
) -> Balancer:
    return make_balancer(config(algorithm, **kw), list(eps), random.Random(seed), previous)


def keys(n: int, prefix: str = "user") -> list[bytes]:
    return [f"{prefix}-{k}".encode() for k in range(n)]


def route(balancer: Balancer, key_list: Iterable[bytes]) -> dict[bytes, str]:
    """Which instance each key goes to (each attempt released at once)."""
    out: dict[bytes, str] = {}
    for key in key_list:
        slot = balancer.acquire(key)
        assert slot is not None
        slot.done(True, 0.0, 0.001)
        out[key] = slot.endpoint.instance
    return out


def release(
    slot: EndpointSlot | None, ok: bool = True, now: float = 0.0, elapsed: float = 0.001
) -> str:
    assert slot is not None
    slot.done(ok, now, elapsed)
    return slot.endpoint.instance
