"""Config: resource kinds, validation, manifests and the sidecar's frozen model.

One implementation serves the control daemon (validate on Apply), the sidecar
(parse every snapshot, NACK on ConfigError) and the CLI (load manifests).
The manifest functions load on first use, so the sidecar never imports yaml.
"""

from typing import TYPE_CHECKING, Any

from skein.config.kinds import (
    KINDS,
    kind_message_class,
    make_resource,
    parse_kind,
    resource_kind,
    resource_message,
    resource_name,
)
from skein.config.model import (
    Algorithm,
    ClusterConfig,
    EndpointConfig,
    Protocol,
    SidecarConfig,
)
from skein.config.snapshot import parse_snapshot
from skein.config.validate import check_name, format_duration, validate_resource

if TYPE_CHECKING:
    from skein.config.manifest import load_manifests, parse_manifest, resource_to_manifest

_MANIFEST = ("load_manifests", "parse_manifest", "resource_to_manifest")


def __getattr__(name: str) -> Any:
    if name in _MANIFEST:
        from skein.config import manifest

        return getattr(manifest, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "KINDS",
    "Algorithm",
    "ClusterConfig",
    "EndpointConfig",
    "Protocol",
    "SidecarConfig",
    "check_name",
    "format_duration",
    "kind_message_class",
    "load_manifests",
    "make_resource",
    "parse_kind",
    "parse_manifest",
    "parse_snapshot",
    "resource_kind",
    "resource_message",
    "resource_name",
    "resource_to_manifest",
    "validate_resource",
]
