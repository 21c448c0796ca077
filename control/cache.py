"""Per-stream snapshot state, xDS-style (sans-IO; go-control-plane's cache).

The discovery adapter drives it: `open` a stream, `rebuild` when the mirror
moved, `take` the bytes to write when notified, `on_request` for every
ACK/NACK. Nothing here awaits, so the watch handler never waits on a slow
sidecar.

Invariants:
- a snapshot is serialized once per distinct node key per rebuild; streams
  with equal keys share the same bytes object;
- a stream holds at most one pending push (a slot): a newer rebuild replaces
  the pending one, so a slow sidecar skips versions and never blocks others;
- a stream is pushed only when its content differs from what it was last
  given (pushed or found in sync at open); a NACKed content is not re-pushed
  until the content changes;
- version_info is the decimal store revision the snapshot was built from;
- `synced_revision` is the newest revision the ACKed content is current for:
  it advances on rebuilds that leave the content unchanged, as long as the
  sidecar has ACKed what it was last sent;
- a request whose nonce is not the last one sent is stale and ignored;
- every status change puts the stream id in `dirty` for the status writer.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from control.translate import NodeKey, node_key
from skein.clock import Clock
from skein.v1 import operator_pb2

__all__ = ["Outcome", "SnapshotCache", "StreamState", "encode_response"]

Builder = Callable[[NodeKey], Any]  # NodeKey -> discovery_pb2.Snapshot


class Outcome(enum.Enum):
    ACK = "ack"
    NACK = "nack"
    STALE = "stale"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(tag: int, data: bytes) -> bytes:
    return bytes((tag,)) + _varint(len(data)) + data


def encode_response(version: str, nonce: str, framed_snapshot: bytes) -> bytes:
    """A serialized DiscoveryResponse around an already framed snapshot field.

    Protobuf messages are concatenations of fields, so the snapshot's bytes
    are reused as they are and only version_info (1) and nonce (2) are new.
    """
    return _field(0x0A, version.encode()) + _field(0x12, nonce.encode()) + framed_snapshot


class StreamState:
    """One sidecar stream: what it should have, was sent, ACKed or NACKed."""

    __slots__ = (
        "acked_current",
        "acked_version",
        "connected_at",
        "id",
        "key",
        "nack_error",
        "nack_version",
        "node",
        "nonce_counter",
        "notify",
        "pending",
        "sent_at",
        "sent_content",
        "sent_nonce",
        "sent_version",
        "synced_revision",
        "target",
        "target_revision",
        "updated_at",
    )

    def __init__(self, stream_id: int, node: Any, notify: Callable[[], None], wall: float) -> None:
        self.id = stream_id
        self.node = node
        self.key: NodeKey = node_key(node.service, node.upstreams)
        self.notify = notify
        self.connected_at = wall
        self.updated_at = wall
        self.target: bytes | None = None
        self.target_revision = 0
        self.pending = False
        self.sent_version = ""
        self.sent_nonce = ""
        self.sent_content: bytes | None = None
        self.sent_at = 0.0
        self.nonce_counter = 0
        self.acked_version = ""
        self.acked_current = False  # the last content given was ACKed
        self.synced_revision = 0
        self.nack_version = ""
        self.nack_error = ""

    @property
    def in_sync(self) -> bool:
        """Nothing pending and the last thing sent was ACKed."""
        return not self.pending and self.acked_current

    def status(self, control: str) -> Any:
        """The SidecarStatus record the operator API shows."""
        return operator_pb2.SidecarStatus(
            node=self.node,
            control=control,
            acked_version=self.acked_version,
            synced_revision=self.synced_revision,
            nack_version=self.nack_version,
            nack_error=self.nack_error,
            connected_at=self.connected_at,
            updated_at=self.updated_at,
        )

    def dump(self) -> dict[str, Any]:
        return {
            "service": self.node.service,
            "instance": self.node.instance,
            "upstreams": list(self.key[1]),
            "sent_version": self.sent_version,
            "sent_nonce": self.sent_nonce,
            "acked_version": self.acked_version,
            "synced_revision": self.synced_revision,
            "pending_revision": self.target_revision if self.pending else None,
            "nack_version": self.nack_version,
            "nack_error": self.nack_error,
        }


class SnapshotCache:
    """All streams of one control replica and the snapshots they get."""

    def __init__(self, build: Builder, clock: Clock, wall: Clock) -> None:
        self._build = build
        self._clock = clock
        self._wall = wall
        self.revision: int | None = None  # None until the mirror first loaded
        self._streams: dict[int, StreamState] = {}
        self._content: dict[NodeKey, bytes] = {}
        self._framed: dict[int, bytes] = {}  # id(content) -> framed field 3
        self._next_id = 0
        self.dirty: set[int] = set()
        self.builds = 0  # snapshots serialized (tests check coalescing by it)

    def __len__(self) -> int:
        return len(self._streams)

    def streams(self) -> list[StreamState]:
        return list(self._streams.values())

    def get(self, stream_id: int) -> StreamState | None:
        return self._streams.get(stream_id)

    def _content_for(self, key: NodeKey) -> bytes:
        content = self._content.get(key)
        if content is None:
            content = self._build(key).SerializeToString()
            self.builds += 1
            self._content[key] = content
            self._framed[id(content)] = _field(0x1A, content)
        return content

    def open(self, node: Any, version_info: str, notify: Callable[[], None]) -> StreamState:
        """Register a stream; pushes unless the node already runs what we would send."""
        self._next_id += 1
        state = StreamState(self._next_id, node, notify, self._wall.now())
        self._streams[state.id] = state
        self.dirty.add(state.id)
        if self.revision is not None:
            content = self._content_for(state.key)
            state.target = content
            state.target_revision = self.revision
            if version_info and version_info == str(self.revision):
                state.acked_version = version_info
                state.acked_current = True
                state.synced_revision = self.revision
            else:
                state.pending = True
                notify()
        return state

    def close(self, state: StreamState) -> None:
        self._streams.pop(state.id, None)
        self.dirty.discard(state.id)

    def rebuild(self, revision: int) -> int:
        """The mirror is now at `revision`: give every stream its new content.

        Returns how many streams got a new pending push.
        """
        self.revision = revision
        self._content = {}
        self._framed = {}
        pushed = 0
        for state in self._streams.values():
            content = self._content_for(state.key)
            if content is state.target or content == state.target:
                state.target = content
                state.target_revision = revision
                if state.in_sync and state.synced_revision != revision:
                    state.synced_revision = revision
                    state.updated_at = self._wall.now()
                    self.dirty.add(state.id)
                continue
            state.target = content
            state.target_revision = revision
            if not state.pending:
                state.pending = True
                state.notify()
            pushed += 1
        return pushed

    def take(self, state: StreamState) -> bytes | None:
        """Bytes of the DiscoveryResponse to write now, or None; records the send."""
        if not state.pending or state.target is None:
            return None
        state.pending = False
        state.nonce_counter += 1
        state.sent_nonce = str(state.nonce_counter)
        state.sent_version = str(state.target_revision)
        state.sent_content = state.target
        state.acked_current = False
        state.sent_at = self._clock.now()
        framed = self._framed.get(id(state.target))
        if framed is None:  # content from an earlier rebuild still pending
            framed = _field(0x1A, state.target)
        return encode_response(state.sent_version, state.sent_nonce, framed)

    def on_request(self, state: StreamState, req: Any) -> tuple[Outcome, float]:
        """Apply an ACK or NACK; returns the outcome and push-to-answer seconds."""
        if not state.sent_nonce or req.response_nonce != state.sent_nonce:
            return Outcome.STALE, 0.0
        latency = self._clock.now() - state.sent_at
        state.updated_at = self._wall.now()
        self.dirty.add(state.id)
        detail = req.error_detail if req.HasField("error_detail") else None
        if detail is not None and (detail.code or detail.message):
            state.nack_version = state.sent_version
            state.nack_error = detail.message or f"rejected with code {detail.code}"
            return Outcome.NACK, latency
        state.acked_version = state.sent_version
        state.acked_current = True
        state.nack_version = ""
        state.nack_error = ""
        if state.pending:  # a newer content is already queued
            state.synced_revision = int(state.sent_version)
        else:
            state.synced_revision = state.target_revision
        return Outcome.ACK, latency

    def drain_dirty(self) -> list[StreamState]:
        """Streams whose status changed since the last call."""
        out = [self._streams[i] for i in self.dirty if i in self._streams]
        self.dirty.clear()
        return out

    def dump(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "streams": [s.dump() for s in self._streams.values()],
        }
