"""etcd storage: key layout and the typed adapter."""

from control.store.etcd import (
    EtcdStore,
    KeyValue,
    RevisionCompactedError,
    StoreError,
    TxnOp,
    WatchBatch,
)
from control.store.keys import DEFAULT_PREFIX, KeyLayout, ParsedKey

__all__ = [
    "DEFAULT_PREFIX",
    "EtcdStore",
    "KeyLayout",
    "KeyValue",
    "ParsedKey",
    "RevisionCompactedError",
    "StoreError",
    "TxnOp",
    "WatchBatch",
]
