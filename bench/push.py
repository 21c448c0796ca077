"""Config push: time from an operator write until N discovery streams have ACKed it.

N grpc.aio clients in this process each open their own connection and one
discovery stream to the control daemon, as N sidecars would, name the same
upstream, and ACK every response at once. Each sample applies a changed
TrafficPolicy through the Operator API (an etcd write) and waits until every
stream has ACKed a version at or above the revision the write returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import grpc

from bench.acktrack import AckTracker
from skein.v1 import discovery_pb2, discovery_pb2_grpc, operator_pb2, operator_pb2_grpc
from skein.v1 import resources_pb2 as res

__all__ = ["PushResult", "measure_push"]

TARGET_SERVICE = "bench-push-target"


@dataclass
class PushResult:
    streams: int
    # Milliseconds from the Apply call until the last stream ACKed, per write.
    samples_ms: list[float] = field(default_factory=list)
    # Writes that did not reach every stream within the timeout.
    failures: list[str] = field(default_factory=list)


def _policy(sample: int) -> res.Resource:
    """A TrafficPolicy that differs on every sample, so every write changes the snapshot."""
    spec = res.TrafficPolicySpec(service=TARGET_SERVICE)
    spec.timeout.seconds = 1
    spec.timeout.nanos = (sample % 1000) * 1_000_000
    return res.Resource(
        traffic_policy=res.TrafficPolicy(metadata=res.ObjectMeta(name=TARGET_SERVICE), spec=spec)
    )


def _service() -> res.Resource:
    return res.Resource(
        service=res.Service(
            metadata=res.ObjectMeta(name=TARGET_SERVICE),
            spec=res.ServiceSpec(protocol=res.GRPC, port=1),
        )
    )


async def _stream(
    index: int,
    control: str,
    tracker: AckTracker,
    first: asyncio.Event,
    all_acked: asyncio.Event,
    connected: list[int],
) -> None:
    """One simulated sidecar: identify, then ACK every response as soon as it arrives."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(control, options=options) as channel:
        stub = discovery_pb2_grpc.DiscoveryStub(channel)
        call = stub.Stream()
        node = discovery_pb2.Node(
            service=f"bench-push-{index:04d}",
            instance=f"bench-push-{index:04d}",
            upstreams=[TARGET_SERVICE],
        )
        await call.write(discovery_pb2.DiscoveryRequest(node=node))
        seen_first = False
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                return
            await call.write(
                discovery_pb2.DiscoveryRequest(
                    version_info=response.version_info, response_nonce=response.nonce
                )
            )
            if tracker.ack(index, int(response.version_info or 0), time.perf_counter()):
                all_acked.set()
            if not seen_first:
                seen_first = True
                connected[0] += 1
                if connected[0] == tracker.streams:
                    first.set()


async def _measure(control: str, streams: int, writes: int, write_timeout: float) -> PushResult:
    result = PushResult(streams=streams)
    tracker = AckTracker(streams)
    first = asyncio.Event()
    all_acked = asyncio.Event()
    connected = [0]
    async with grpc.aio.insecure_channel(control) as op_channel:
        operator = operator_pb2_grpc.OperatorStub(op_channel)
        await operator.Apply(operator_pb2.ApplyRequest(resources=[_service(), _policy(0)]))
        tasks = [
            asyncio.create_task(_stream(i, control, tracker, first, all_acked, connected))
            for i in range(streams)
        ]
        try:
            try:
                await asyncio.wait_for(first.wait(), timeout=max(write_timeout, 30.0))
            except TimeoutError:
                failed = [t.exception() for t in tasks if t.done() and not t.cancelled()]
                raise RuntimeError(
                    f"only {connected[0]} of {streams} discovery streams got a first "
                    f"snapshot; stream errors: {failed[:1]}"
                ) from None
            await asyncio.sleep(0.2)
            for sample in range(1, writes + 1):
                tracker.begin()
                all_acked.clear()
                started = time.perf_counter()
                reply = await operator.Apply(operator_pb2.ApplyRequest(resources=[_policy(sample)]))
                if reply.version <= 0:
                    raise RuntimeError(f"write {sample} changed nothing (version {reply.version})")
                if tracker.set_target(reply.version):
                    all_acked.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(all_acked.wait(), timeout=write_timeout)
                if tracker.complete:
                    result.samples_ms.append((tracker.last_at - started) * 1000)
                else:
                    missing = tracker.missing()
                    result.failures.append(
                        f"write {sample} (version {reply.version}): {len(missing)} of {streams} "
                        f"streams had not ACKed after {write_timeout}s"
                    )
                await asyncio.sleep(0.05)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return result


def measure_push(
    control: str, *, streams: int = 100, writes: int = 30, timeout: float = 5.0
) -> PushResult:
    """Run the push measurement against the control daemon at `control` (HOST:PORT)."""
    return asyncio.run(_measure(control, streams, writes, timeout))
