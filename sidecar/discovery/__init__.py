"""The sidecar's discovery stream client: versions, nonces, ACK/NACK, reconnect, disk cache."""

from sidecar.discovery.cache import DiskCache, default_state_dir
from sidecar.discovery.client import DiscoveryClient, DiscoveryStatus
from sidecar.discovery.controls import ControlChannels, ControlEndpoints

__all__ = [
    "ControlChannels",
    "ControlEndpoints",
    "DiscoveryClient",
    "DiscoveryStatus",
    "DiskCache",
    "default_state_dir",
]
