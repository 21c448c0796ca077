"""The policy pipeline's own CPU per call, in process: `python -m bench.pipeline`.

End-to-end rps on a shared 2-core machine moves by ±15% between identical
runs, more than the pipeline is allowed to cost (10% of a sidecar's ~100 µs
per request). This times only the policy work a sidecar does per call, with
the same TrafficPolicy protobufs the benchmark's policy pairs run:

- outbound: `UpstreamDispatcher.pick` (rate limit, request limit, breaker,
  budget deposit, route, balancer) and the attempt's `done` (balancer, breaker,
  outlier detection), for one call that succeeds;
- inbound: `InboundDispatcher.pick` (inbound rate limits, per-method route).

Config goes through `parse_snapshot` and `ConfigHolder.apply`, as pushed
config does. Time is a fake clock advanced per call (a call every 100 µs),
so the windows, buckets and decays move as they do under load.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from collections.abc import Callable

from bench.stacks import PolicyPair, full_policy, off_policy
from sidecar.dispatch import ConfigHolder, InboundDispatcher, UpstreamDispatcher
from skein.config.snapshot import parse_snapshot
from skein.v1 import discovery_pb2
from skein.v1 import resources_pb2 as res

__all__ = ["main", "measure_pair"]

PATH = "/skein.bench.Echo/Echo"
HEADERS = (
    (b":method", b"POST"),
    (b":path", PATH.encode()),
    (b"content-type", b"application/grpc"),
    (b"te", b"trailers"),
)
ENDPOINTS = 3
STEP = 100e-6  # fake seconds between calls


class _Clock:
    __slots__ = ("t",)

    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t


def _snapshot(pair: PolicyPair) -> discovery_pb2.Snapshot:
    policy = pair.policy.traffic_policy
    endpoints = [
        res.Endpoint(
            metadata=res.ObjectMeta(name=f"{pair.prefix}-{i}"),
            spec=res.EndpointSpec(service=pair.service, address=f"127.0.0.1:{20000 + i}"),
        )
        for i in range(ENDPOINTS)
    ]
    cluster = discovery_pb2.Cluster(name=pair.service, policy=policy, endpoints=endpoints)
    return discovery_pb2.Snapshot(clusters=[cluster], local_policy=policy)


def _calls(pair: PolicyPair) -> tuple[Callable[[], None], Callable[[], None]]:
    """One outbound call (pick + done) and one inbound pick, on a fresh holder."""
    clock = _Clock()
    holder = ConfigHolder(now=clock.now)
    holder.apply(parse_snapshot("1", _snapshot(pair)), "bench")
    outbound = UpstreamDispatcher(holder, pair.service).pick
    inbound = InboundDispatcher(holder, ("127.0.0.1", 1)).pick
    authority = pair.service

    def outbound_call() -> None:
        clock.t += STEP
        pick = outbound(authority, PATH, HEADERS, "127.0.0.1")
        done = pick.done
        if done is not None:
            done(True, clock.t, 0.0005)

    def inbound_call() -> None:
        clock.t += STEP
        inbound(authority, PATH, HEADERS, "127.0.0.1")

    return outbound_call, inbound_call


def _defaults() -> PolicyPair:
    """skein-pair's case: a service with no TrafficPolicy runs every default."""
    spec = res.TrafficPolicySpec(service="bench-echo")
    policy = res.Resource(
        traffic_policy=res.TrafficPolicy(metadata=res.ObjectMeta(name="bench-echo"), spec=spec)
    )
    return PolicyPair("skein-pair (defaults)", "pair", "bench-echo", policy, "ROUND_ROBIN")


def _best_us(call: Callable[[], None], number: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


def measure_pair(pair: PolicyPair, number: int) -> dict[str, float]:
    outbound_call, inbound_call = _calls(pair)
    return {
        "outbound": _best_us(outbound_call, number),
        "inbound": _best_us(inbound_call, number),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__)
    parser.add_argument("--calls", type=int, default=100_000, help="calls per timing")
    args = parser.parse_args(argv)
    noop = _best_us(lambda: None, args.calls)
    print(f"µs per call (best of 5 x {args.calls}; a no-op call costs {noop:.2f} µs)")
    print(f"{'pair':<22} {'outbound pick+done':>18} {'inbound pick':>13}")
    for pair in (off_policy(), _defaults(), full_policy()):
        cost = measure_pair(pair, args.calls)
        print(f"{pair.path:<22} {cost['outbound']:>18.2f} {cost['inbound']:>13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
