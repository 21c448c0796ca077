"""The control daemon's metrics, created once and held by reference."""

from __future__ import annotations

from skein.metrics import Registry

__all__ = ["ControlMetrics"]


class ControlMetrics:
    """Prometheus families of one control replica (rendered at /metrics)."""

    def __init__(self) -> None:
        self.registry = r = Registry()
        self.streams = r.gauge("skein_control_streams_connected", "Open discovery streams")
        self.pushes = r.counter("skein_control_pushes_total", "Snapshots written to streams")
        self.acks = r.counter("skein_control_acks_total", "ACKs received")
        self.nacks = r.counter("skein_control_nacks_total", "NACKs received")
        self.stale = r.counter("skein_control_stale_nonces_total", "Requests with a stale nonce")
        self.push_latency = r.histogram(
            "skein_control_push_latency_seconds", "Push written until ACK or NACK read"
        )
        self.rebuilds = r.counter("skein_control_rebuilds_total", "Snapshot rebuilds")
        self.etcd_errors = r.counter(
            "skein_control_etcd_errors_total", "etcd calls that failed", ("op",)
        )
        self.bad_values = r.counter(
            "skein_control_bad_stored_values_total", "Stored values that did not parse (skipped)"
        )
        self.registrations = r.counter(
            "skein_control_registrations_total", "Register calls", ("result",)
        )
        self.applies = r.counter("skein_control_applies_total", "Apply calls", ("result",))
        self.watch_reloads = r.counter(
            "skein_control_watch_reloads_total", "Full reloads of the mirror", ("reason",)
        )
        self.revision = r.gauge("skein_control_mirror_revision", "etcd revision of the mirror")
