"""PERMISSIVE or STRICT: whether the inbound side still accepts plaintext callers.

Set from `TrafficPolicySpec.mtls` of the sidecar's own service (unset and
MTLS_MODE_UNSPECIFIED are PERMISSIVE, the migration default); read by the
inbound listener once per accepted connection, so a change applies to new
connections while open ones finish.
"""

from __future__ import annotations

from skein.v1 import discovery_pb2, resources_pb2

__all__ = ["MtlsPolicy"]


class MtlsPolicy:
    """The own service's mTLS mode, replaced whole on every applied snapshot."""

    __slots__ = ("strict",)

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict

    def update(self, snapshot: discovery_pb2.Snapshot) -> None:
        """Take the mode from the snapshot's own-service policy."""
        mode = snapshot.local_policy.spec.mtls if snapshot.HasField("local_policy") else 0
        self.strict = mode == resources_pb2.STRICT

    @property
    def name(self) -> str:
        return "STRICT" if self.strict else "PERMISSIVE"
