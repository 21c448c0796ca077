"""The etcd adapter: the only module that speaks to etcd.

aetcd's Client manages the channel to one endpoint; we call its KV, Lease
and Watch stubs directly because we need the response headers (revisions)
that its convenience methods drop. Every foreign exception is mapped here,
in `_mapped`, to a typed error (aetcd's idea, httpcore's boundary):

- UNAVAILABLE / DEADLINE_EXCEEDED / connection errors -> StoreUnavailableError,
  and the next call goes to the next endpoint of `--etcd a:1,b:2`;
- a compacted watch revision -> RevisionCompactedError (carries the revision);
- anything else from etcd -> StoreError.

The channel reconnects by itself when etcd comes back; callers retry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import aetcd
import grpc
from aetcd import rpc
from aetcd.utils import prefix_range_end

from skein.addr import HostPort, format_hostport
from skein.errors import SkeinError, StoreUnavailableError

__all__ = [
    "EtcdStore",
    "KeyValue",
    "RevisionCompactedError",
    "StoreError",
    "TxnOp",
    "WatchBatch",
]


class StoreError(SkeinError):
    """etcd answered with an error we do not expect."""


class RevisionCompactedError(StoreError):
    """A watch asked for history etcd has compacted away: reload."""

    def __init__(self, compacted: int) -> None:
        self.compacted = compacted
        super().__init__(f"etcd revision compacted up to {compacted}")


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    mod_revision: int
    create_revision: int = 0
    lease: int = 0


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """Events of one watch response (one or more revisions), in order.

    `events` holds (key, value, mod_revision, deleted); `revision` is the
    header revision, which also advances on progress notifications.
    """

    revision: int
    events: tuple[tuple[bytes, bytes, int, bool], ...]


@dataclass(frozen=True, slots=True)
class TxnOp:
    """A put (value not None) or delete (value None) inside a transaction."""

    key: bytes
    value: bytes | None = None
    lease: int = 0


_UNAVAILABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
}


# gRPC's reconnect backoff grows to 120 s by default: after a long etcd outage
# the daemon stayed not ready for up to two minutes after etcd was back (17 s
# after a 25 s outage). A connect attempt a second to a down etcd is cheap.
_CHANNEL_OPTIONS = {
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
}


class EtcdStore:
    """Typed, failing-over access to an etcd cluster."""

    def __init__(self, endpoints: Sequence[HostPort], *, timeout: float = 3.0) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is required")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._index = 0
        self._client: aetcd.Client | None = None
        self._kv: Any = None
        self._lease: Any = None
        self._channel: Any = None

    @property
    def endpoint(self) -> str:
        """The endpoint calls currently go to."""
        return format_hostport(self.endpoints[self._index])

    async def _connect(self) -> None:
        if self._client is not None:
            return
        host, port = self.endpoints[self._index]
        client = aetcd.Client(
            host=host, port=port, timeout=int(self.timeout) or 1, options=_CHANNEL_OPTIONS
        )
        try:
            await client.connect()
        except Exception as err:
            raise StoreUnavailableError(
                f"cannot connect to etcd at {self.endpoint}: {err}"
            ) from err
        self._client = client
        self._channel = client.channel
        self._kv = rpc.KVStub(client.channel)
        self._lease = rpc.LeaseStub(client.channel)

    async def _failover(self) -> None:
        """Drop the channel; the next call connects to the next endpoint."""
        if len(self.endpoints) == 1:
            return  # the channel reconnects by itself
        client, self._client = self._client, None
        self._index = (self._index + 1) % len(self.endpoints)
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    @contextlib.contextmanager
    def _mapped(self, op: str) -> Iterator[None]:
        try:
            yield
        except grpc.aio.AioRpcError as err:
            if err.code() in _UNAVAILABLE:
                self._needs_failover = True
                raise StoreUnavailableError(
                    f"etcd at {self.endpoint} did not answer {op}: {err.code().name} "
                    f"{err.details() or ''}".rstrip()
                ) from None
            raise StoreError(f"etcd {op} failed: {err.code().name} {err.details()}") from None
        except (OSError, aetcd.exceptions.ClientError) as err:
            self._needs_failover = True
            raise StoreUnavailableError(f"etcd at {self.endpoint}: {op}: {err}") from None

    _needs_failover = False

    async def _call(self, op: str, stub: str, method: str, request: Any) -> Any:
        await self._connect()
        try:
            with self._mapped(op):
                return await getattr(getattr(self, stub), method)(request, timeout=self.timeout)
        finally:
            if self._needs_failover:
                self._needs_failover = False
                await self._failover()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()

    # -- KV --------------------------------------------------------------

    async def revision(self) -> int:
        """Current store revision (a cheap, linearizable read: readiness checks)."""
        resp = await self._call(
            "revision", "_kv", "Range", rpc.RangeRequest(key=b"\0", count_only=True)
        )
        return int(resp.header.revision)

    async def get(self, key: bytes) -> KeyValue | None:
        resp = await self._call("get", "_kv", "Range", rpc.RangeRequest(key=key))
        if not resp.kvs:
            return None
        kv = resp.kvs[0]
        return KeyValue(kv.key, kv.value, kv.mod_revision, kv.create_revision, kv.lease)

    async def range_prefix(self, prefix: bytes) -> tuple[int, list[KeyValue]]:
        """(header revision, every key under prefix), as one consistent read."""
        req = rpc.RangeRequest(key=prefix, range_end=prefix_range_end(prefix))
        resp = await self._call("range", "_kv", "Range", req)
        kvs = [
            KeyValue(kv.key, kv.value, kv.mod_revision, kv.create_revision, kv.lease)
            for kv in resp.kvs
        ]
        return int(resp.header.revision), kvs

    async def newest_mod_revision(self, prefix: bytes) -> int:
        """The largest mod_revision of a key under prefix (0 when none): one key read."""
        req = rpc.RangeRequest(
            key=prefix,
            range_end=prefix_range_end(prefix),
            limit=1,
            keys_only=True,
            sort_order=rpc.RangeRequest.DESCEND,
            sort_target=rpc.RangeRequest.MOD,
        )
        resp = await self._call("range", "_kv", "Range", req)
        return int(resp.kvs[0].mod_revision) if resp.kvs else 0

    async def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        resp = await self._call(
            "put", "_kv", "Put", rpc.PutRequest(key=key, value=value, lease=lease)
        )
        return int(resp.header.revision)

    async def delete(self, key: bytes) -> tuple[int, int]:
        """(number deleted, revision)."""
        resp = await self._call("delete", "_kv", "DeleteRange", rpc.DeleteRangeRequest(key=key))
        return int(resp.deleted), int(resp.header.revision)

    async def txn(
        self,
        expect_mod: dict[bytes, int],
        ops: Sequence[TxnOp],
        *,
        unchanged_since: dict[bytes, int] | None = None,
    ) -> tuple[bool, int]:
        """All-or-nothing: apply `ops` only if every key's mod_revision is as expected.

        An expected mod_revision of 0 means "the key does not exist".
        `unchanged_since` maps a prefix to a revision: no key under it may
        have been written after that revision (deletes do not count).
        Returns (succeeded, revision).
        """
        compare = [
            rpc.Compare(key=key, result=rpc.Compare.EQUAL, target=rpc.Compare.MOD, mod_revision=mod)
            for key, mod in expect_mod.items()
        ]
        for prefix, revision in (unchanged_since or {}).items():
            compare.append(
                rpc.Compare(
                    key=prefix,
                    range_end=prefix_range_end(prefix),
                    result=rpc.Compare.LESS,
                    target=rpc.Compare.MOD,
                    mod_revision=revision + 1,
                )
            )
        success = []
        for op in ops:
            if op.value is None:
                success.append(
                    rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=op.key))
                )
            else:
                success.append(
                    rpc.RequestOp(
                        request_put=rpc.PutRequest(key=op.key, value=op.value, lease=op.lease)
                    )
                )
        req = rpc.TxnRequest(compare=compare, success=success)
        resp = await self._call("txn", "_kv", "Txn", req)
        return bool(resp.succeeded), int(resp.header.revision)

    # -- leases ----------------------------------------------------------

    async def grant(self, ttl: int) -> int:
        resp = await self._call(
            "lease grant", "_lease", "LeaseGrant", rpc.LeaseGrantRequest(TTL=ttl)
        )
        if resp.error:
            raise StoreError(f"etcd lease grant failed: {resp.error}")
        return int(resp.ID)

    async def keepalive(self, lease_id: int) -> int:
        """Refresh a lease; returns its TTL, 0 when the lease is gone."""
        await self._connect()
        try:
            with self._mapped("lease keepalive"):
                call = self._lease.LeaseKeepAlive(
                    iter([rpc.LeaseKeepAliveRequest(ID=lease_id)]), timeout=self.timeout
                )
                async for reply in call:
                    return int(reply.TTL)
                return 0
        finally:
            if self._needs_failover:
                self._needs_failover = False
                await self._failover()

    async def revoke(self, lease_id: int) -> bool:
        """Revoke a lease (its keys vanish at once); False when it was already gone."""
        try:
            await self._call(
                "lease revoke", "_lease", "LeaseRevoke", rpc.LeaseRevokeRequest(ID=lease_id)
            )
        except StoreError as err:
            if "not found" in str(err):
                return False
            raise
        return True

    # -- watch -----------------------------------------------------------

    async def watch(self, prefix: bytes, start_revision: int) -> AsyncIterator[WatchBatch]:
        """Events under prefix from start_revision on, batch by batch.

        Raises RevisionCompactedError when that history is gone and
        StoreUnavailableError when the stream breaks; the caller reloads.
        """
        await self._connect()
        create = rpc.WatchCreateRequest(
            key=prefix,
            range_end=prefix_range_end(prefix),
            start_revision=start_revision,
            progress_notify=True,
        )
        queue: asyncio.Queue[Any] = asyncio.Queue()
        queue.put_nowait(rpc.WatchRequest(create_request=create))

        async def requests() -> AsyncIterator[Any]:
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item

        call = rpc.WatchStub(self._channel).Watch(requests())
        try:
            with self._mapped("watch"):
                async for resp in call:
                    if resp.compact_revision:
                        raise RevisionCompactedError(int(resp.compact_revision))
                    if resp.canceled:
                        raise StoreUnavailableError(
                            f"etcd cancelled the watch: {resp.cancel_reason or 'no reason'}"
                        )
                    if resp.created and not resp.events:
                        continue
                    events = tuple(
                        (ev.kv.key, ev.kv.value, int(ev.kv.mod_revision), ev.type == 1)
                        for ev in resp.events
                    )
                    yield WatchBatch(int(resp.header.revision), events)
            raise StoreUnavailableError(f"etcd at {self.endpoint} ended the watch stream")
        finally:
            queue.put_nowait(None)
            call.cancel()
            if self._needs_failover:
                self._needs_failover = False
                await self._failover()
