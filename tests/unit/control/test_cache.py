"""SnapshotCache: slots, shared bytes, ACK/NACK, stale nonces, synced revisions."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from control.cache import Outcome, SnapshotCache, StreamState
from control.translate import NodeKey
from skein.clock import ManualClock
from skein.v1 import discovery_pb2


class World:
    """What the builder sees: per-service content a test edits by hand."""

    def __init__(self) -> None:
        self.timeouts: dict[str, int] = {}

    def build(self, key: NodeKey) -> discovery_pb2.Snapshot:
        snap = discovery_pb2.Snapshot()
        for name in key[1]:
            c = snap.clusters.add(name=name)
            if name in self.timeouts:
                c.policy.spec.timeout.seconds = self.timeouts[name]
        return snap


class Notified:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def node(instance: str, *upstreams: str) -> Any:
    return discovery_pb2.Node(service="web", instance=instance, upstreams=list(upstreams))


def setup() -> tuple[World, SnapshotCache, ManualClock]:
    world, clock = World(), ManualClock()
    return world, SnapshotCache(world.build, clock, ManualClock(1000.0)), clock


def response(data: bytes) -> Any:
    return discovery_pb2.DiscoveryResponse.FromString(data)


def ack(state: StreamState, resp: Any) -> Any:
    return discovery_pb2.DiscoveryRequest(version_info=resp.version_info, response_nonce=resp.nonce)


def test_open_pushes_and_ack_syncs() -> None:
    world, cache, clock = setup()
    world.timeouts["orders"] = 1
    cache.rebuild(5)
    wake = Notified()
    s = cache.open(node("a", "orders"), "", wake)
    assert wake.count == 1
    data = cache.take(s)
    assert data is not None and cache.take(s) is None
    resp = response(data)
    assert (resp.version_info, resp.nonce) == ("5", "1")
    assert resp.snapshot == world.build(("web", ("orders",)))
    clock.advance(0.25)
    assert cache.on_request(s, ack(s, resp)) == (Outcome.ACK, 0.25)
    assert (s.acked_version, s.synced_revision) == ("5", 5)


def test_open_with_current_version_is_not_resent() -> None:
    _world, cache, _ = setup()
    cache.rebuild(9)
    wake = Notified()
    s = cache.open(node("a", "orders"), "9", wake)
    assert wake.count == 0 and cache.take(s) is None
    assert (s.acked_version, s.synced_revision) == ("9", 9)


def test_open_before_first_load_waits_for_rebuild() -> None:
    _world, cache, _ = setup()
    wake = Notified()
    s = cache.open(node("a", "orders"), "", wake)
    assert cache.take(s) is None
    cache.rebuild(3)
    assert wake.count == 1 and response(cache.take(s) or b"").version_info == "3"


def test_unchanged_content_not_pushed_but_synced_revision_advances() -> None:
    world, cache, _ = setup()
    cache.rebuild(1)
    s = cache.open(node("a", "orders"), "", Notified())
    resp = response(cache.take(s) or b"")
    cache.on_request(s, ack(s, resp))
    world.timeouts["users"] = 3  # a service this node does not call
    assert cache.rebuild(2) == 0
    assert cache.take(s) is None
    assert (s.acked_version, s.synced_revision) == ("1", 2)
    assert s.id in cache.dirty


def test_slot_keeps_only_newest_version() -> None:
    world, cache, _ = setup()
    cache.rebuild(1)
    wake = Notified()
    s = cache.open(node("slow", "orders"), "", wake)
    for rev in range(2, 12):
        world.timeouts["orders"] = rev
        cache.rebuild(rev)
    assert wake.count == 1  # notified once; the slot was overwritten, not queued
    resp = response(cache.take(s) or b"")
    assert resp.version_info == "11"
    assert resp.snapshot.clusters[0].policy.spec.timeout.seconds == 11
    assert cache.take(s) is None


def test_identical_nodes_share_serialized_bytes() -> None:
    world, cache, _ = setup()
    cache.rebuild(1)
    streams = [cache.open(node(f"i{i}", "orders", "users"), "", Notified()) for i in range(50)]
    other = cache.open(node("x", "users", "orders", "orders"), "", Notified())
    assert cache.builds == 1
    for s in [*streams, other]:
        cache.take(s)
    world.timeouts["orders"] = 2
    before = cache.builds
    cache.rebuild(2)
    assert cache.builds == before + 1
    assert len({id(s.target) for s in [*streams, other]}) == 1


def test_stale_nonce_is_ignored() -> None:
    world, cache, _ = setup()
    cache.rebuild(1)
    s = cache.open(node("a", "orders"), "", Notified())
    first = response(cache.take(s) or b"")
    world.timeouts["orders"] = 4
    cache.rebuild(2)
    second = response(cache.take(s) or b"")
    assert cache.on_request(s, ack(s, first))[0] is Outcome.STALE
    assert s.acked_version == ""
    assert cache.on_request(s, ack(s, second))[0] is Outcome.ACK
    assert s.synced_revision == 2


def test_nack_recorded_and_same_content_not_repushed() -> None:
    world, cache, _ = setup()
    cache.rebuild(1)
    s = cache.open(node("a", "orders"), "", Notified())
    cache.on_request(s, ack(s, response(cache.take(s) or b"")))
    world.timeouts["orders"] = -1
    cache.rebuild(2)
    resp = response(cache.take(s) or b"")
    nack = discovery_pb2.DiscoveryRequest(
        version_info="1",
        response_nonce=resp.nonce,
        error_detail=discovery_pb2.ErrorDetail(code=3, message="TrafficPolicy/orders: bad"),
    )
    assert cache.on_request(s, nack)[0] is Outcome.NACK
    assert (s.acked_version, s.nack_version, s.nack_error) == (
        "1",
        "2",
        "TrafficPolicy/orders: bad",
    )
    assert cache.rebuild(3) == 0 and cache.take(s) is None
    assert s.synced_revision == 1
    world.timeouts["orders"] = 5
    cache.rebuild(4)
    resp = response(cache.take(s) or b"")
    cache.on_request(s, ack(s, resp))
    assert (s.acked_version, s.nack_error, s.synced_revision) == ("4", "", 4)


def test_close_forgets_stream() -> None:
    _world, cache, _ = setup()
    cache.rebuild(1)
    s = cache.open(node("a", "orders"), "", Notified())
    cache.close(s)
    assert len(cache) == 0 and cache.drain_dirty() == []


@given(st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=30))
def test_latest_content_always_reaches_an_acking_sidecar(steps: list[tuple[int, bool]]) -> None:
    """Whatever the interleaving of changes and takes, the last content ends up ACKed."""
    world, cache, _ = setup()
    cache.rebuild(1)
    s = cache.open(node("a", "orders"), "", Notified())
    revision = 1
    for timeout, deliver in steps:
        revision += 1
        world.timeouts["orders"] = timeout
        cache.rebuild(revision)
        if deliver and (data := cache.take(s)) is not None:
            cache.on_request(s, ack(s, response(data)))
    while (data := cache.take(s)) is not None:
        cache.on_request(s, ack(s, response(data)))
    assert s.synced_revision == revision
    expected = world.build(("web", ("orders",))).SerializeToString()
    assert s.sent_content == expected and s.in_sync
