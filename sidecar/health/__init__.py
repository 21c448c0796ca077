"""Health: active checks of the local app (reported to control) and the sidecar's own
grpc.health.v1 on its admin port."""

from sidecar.health.checker import HealthChecker, OnChange
from sidecar.health.probes import GrpcProbe, http_probe
from sidecar.health.service import AdminHealthService
from sidecar.health.state import HealthTracker

__all__ = [
    "AdminHealthService",
    "GrpcProbe",
    "HealthChecker",
    "HealthTracker",
    "OnChange",
    "http_probe",
]
