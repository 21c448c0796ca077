"""In-memory mirror of the resources and endpoints under the prefix (sans-IO).

Invariants:
- `revision` is the etcd revision the mirror is current for: the header
  revision of the last full load, then the mod_revision of each relevant
  event applied since. Status keys are not relevant: writing them must not
  trigger rebuilds (that would loop: push -> status -> rebuild -> status).
- `config_revision` is the newest revision at which a resource or endpoint
  changed, as far as this mirror has seen (never a status write): the
  largest relevant mod_revision of a load, then of every relevant event
  (a delete event carries its own revision). It never goes down, so a
  reload after compaction keeps the deletes seen before it. Sidecars in
  sync have `synced_revision >= config_revision`; it is what `skein wait`
  can wait for, where `revision` may be a status write no sidecar sees.
- values are stored as parsed, never validated: the control daemon pushes
  whatever etcd holds, and the sidecar's validation decides (NACK). A value
  that is not even JSON of the right message is reported through `on_bad`
  and left out (the key then counts as absent).
- every stored message carries metadata.version = its mod_revision.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from google.protobuf import json_format  # type: ignore[import-untyped]

from control.store import KeyLayout, KeyValue, WatchBatch
from skein.v1 import resources_pb2

__all__ = ["BadValueHandler", "Mirror"]

BadValueHandler = Callable[[bytes, str], None]
M = TypeVar(
    "M",
    resources_pb2.Service,
    resources_pb2.TrafficPolicy,
    resources_pb2.Endpoint,
    resources_pb2.AuthorizationPolicy,
    resources_pb2.ApiKey,
)
# Kinds kept by name and indexed by the service they name (spec.service).
_BY_SERVICE = ("AuthorizationPolicy", "ApiKey")


_Named = resources_pb2.AuthorizationPolicy | resources_pb2.ApiKey


def _ignore(_key: bytes, _error: str) -> None:
    pass


class Mirror:
    """Services and policies by name, endpoints by service and instance."""

    def __init__(self, layout: KeyLayout, on_bad: BadValueHandler = _ignore) -> None:
        self.layout = layout
        self.on_bad = on_bad
        self.revision = 0
        self.config_revision = 0
        self.loaded = False
        self.services: dict[str, resources_pb2.Service] = {}
        self.policies: dict[str, resources_pb2.TrafficPolicy] = {}
        self.endpoints: dict[str, dict[str, resources_pb2.Endpoint]] = {}
        # policy names per target service, for translate's lookup
        self._policy_index: dict[str, set[str]] = {}
        # AuthorizationPolicy and ApiKey: kind -> name -> message, and
        # kind -> service -> names (both protect the service they name)
        self.by_service: dict[str, dict[str, _Named]] = {kind: {} for kind in _BY_SERVICE}
        self._service_index: dict[str, dict[str, set[str]]] = {kind: {} for kind in _BY_SERVICE}
        # every CA sidecars must trust (PEM), pushed in snapshots so that a CA rotation
        # reaches every sidecar before any of them presents a certificate from the new CA
        self.trust_bundle = ""

    def load(self, revision: int, kvs: Iterable[KeyValue]) -> None:
        """Replace everything with a full range read taken at `revision`."""
        self.services.clear()
        self.policies.clear()
        self.endpoints.clear()
        self._policy_index.clear()
        self.trust_bundle = ""
        for kind in _BY_SERVICE:
            self.by_service[kind].clear()
            self._service_index[kind].clear()
        newest = self.config_revision
        for kv in kvs:
            if self._put(kv.key, kv.value, kv.mod_revision):
                newest = max(newest, kv.mod_revision)
        self.revision = revision
        self.config_revision = newest
        self.loaded = True

    def apply(self, batch: WatchBatch) -> bool:
        """Apply watch events; True when a resource or endpoint changed."""
        changed = False
        for key, value, mod_revision, deleted in batch.events:
            relevant = self._delete(key) if deleted else self._put(key, value, mod_revision)
            if relevant:
                changed = True
                self.revision = max(self.revision, mod_revision)
                self.config_revision = max(self.config_revision, mod_revision)
        return changed

    def policy_for(self, service: str) -> resources_pb2.TrafficPolicy | None:
        """The policy targeting `service`; with several, the first by name wins."""
        names = self._policy_index.get(service)
        if not names:
            return None
        return self.policies[min(names)]

    def for_service(self, kind: str, service: str) -> list[_Named]:
        """AuthorizationPolicies or ApiKeys naming `service`, sorted by name."""
        names = self._service_index[kind].get(service)
        if not names:
            return []
        stored = self.by_service[kind]
        return [stored[name] for name in sorted(names)]

    def counts(self) -> dict[str, int]:
        return {
            "services": len(self.services),
            "traffic_policies": len(self.policies),
            "endpoints": sum(len(v) for v in self.endpoints.values()),
        }

    # -- internals -------------------------------------------------------

    def _parse(self, key: bytes, value: bytes, message: object) -> bool:
        try:
            json_format.Parse(value, message, ignore_unknown_fields=True)
        except (json_format.ParseError, UnicodeDecodeError, ValueError) as err:
            self.on_bad(key, str(err).splitlines()[0] if str(err) else type(err).__name__)
            return False
        return True

    def _message(
        self, key: bytes, value: bytes, message: M, name: str, mod_revision: int
    ) -> M | None:
        """`message` parsed from value and stamped with name and version, or None (reported)."""
        if not self._parse(key, value, message):
            return None
        message.metadata.name = message.metadata.name or name
        message.metadata.version = mod_revision
        return message

    def _put(self, key: bytes, value: bytes, mod_revision: int) -> bool:
        """Store one value; True when the key is relevant (a bad value counts as absent)."""
        if key == self.layout.ca_bundle:
            self.trust_bundle = value.decode("ascii", errors="replace")
            return True
        parsed = self.layout.parse(key)
        name = parsed.name
        if parsed.section == "resources" and name:
            if parsed.kind == "Service":
                svc = self._message(key, value, resources_pb2.Service(), name, mod_revision)
                if svc is None:
                    self.services.pop(name, None)
                else:
                    self.services[name] = svc
                return True
            if parsed.kind == "TrafficPolicy":
                self._drop_policy(name)
                tp = self._message(key, value, resources_pb2.TrafficPolicy(), name, mod_revision)
                if tp is not None:
                    self.policies[name] = tp
                    self._policy_index.setdefault(tp.spec.service, set()).add(name)
                return True
            if parsed.kind in _BY_SERVICE:
                self._drop_named(parsed.kind, name)
                named: _Named | None = (
                    self._message(
                        key, value, resources_pb2.AuthorizationPolicy(), name, mod_revision
                    )
                    if parsed.kind == "AuthorizationPolicy"
                    else self._message(key, value, resources_pb2.ApiKey(), name, mod_revision)
                )
                if named is not None:
                    self.by_service[parsed.kind][name] = named
                    index = self._service_index[parsed.kind]
                    index.setdefault(named.spec.service, set()).add(name)
                return True
            return False
        if parsed.section == "endpoints" and parsed.service and name:
            ep = self._message(key, value, resources_pb2.Endpoint(), name, mod_revision)
            if ep is None:
                self._delete(key)
            else:
                self.endpoints.setdefault(parsed.service, {})[name] = ep
            return True
        return False

    def _drop_policy(self, name: str) -> None:
        old = self.policies.pop(name, None)
        if old is not None:
            names = self._policy_index.get(old.spec.service)
            if names is not None:
                names.discard(name)
                if not names:
                    del self._policy_index[old.spec.service]

    def _drop_named(self, kind: str, name: str) -> None:
        old = self.by_service[kind].pop(name, None)
        if old is not None:
            index = self._service_index[kind]
            names = index.get(old.spec.service)
            if names is not None:
                names.discard(name)
                if not names:
                    del index[old.spec.service]

    def _delete(self, key: bytes) -> bool:
        if key == self.layout.ca_bundle:
            self.trust_bundle = ""
            return True
        parsed = self.layout.parse(key)
        if parsed.section == "resources":
            if parsed.kind == "Service":
                self.services.pop(parsed.name, None)
                return True
            if parsed.kind == "TrafficPolicy":
                self._drop_policy(parsed.name)
                return True
            if parsed.kind in _BY_SERVICE:
                self._drop_named(parsed.kind, parsed.name)
                return True
            return False
        if parsed.section == "endpoints":
            instances = self.endpoints.get(parsed.service)
            if instances is not None:
                instances.pop(parsed.name, None)
                if not instances:
                    del self.endpoints[parsed.service]
            return True
        return False
