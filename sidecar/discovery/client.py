"""The discovery stream client, xDS style.

Per stream: the first request carries the Node and the version now applied
(maybe from disk); every response is parsed and applied whole, then ACKed
(its version_info and nonce), or NACKed (the version still applied, the
rejected nonce, error_detail INVALID_ARGUMENT naming resource and field)
while the old config keeps serving. On any stream error the client moves to
the next control address and reconnects after a capped, jittered backoff.

Invariants:
- `handle()` is synchronous and never raises: any failure becomes a NACK.
- the disk cache is written only after a config was applied from control.
- the disk cache is applied only while nothing else has been: at start, after
  the first failed connection or `disk_grace` seconds without a response.
- `ready` is set once the first config is applied, from control or disk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sidecar.discovery.cache import DiskCache
from sidecar.discovery.controls import ControlEndpoints
from sidecar.dispatch import ConfigHolder
from sidecar.policy.backoff import ExponentialBackoff
from skein.config.model import SidecarConfig
from skein.errors import ConfigError
from skein.grpcclient import RpcError, StatusCode
from skein.logging import get_logger
from skein.metrics import Registry
from skein.v1 import discovery_pb2

__all__ = ["DiscoveryClient", "DiscoveryStatus"]

log = get_logger("discovery")

Parser = Callable[[str, discovery_pb2.Snapshot], SidecarConfig]

_STREAM = "/skein.v1.Discovery/Stream"
_INVALID_ARGUMENT = int(StatusCode.INVALID_ARGUMENT)
_INTERNAL = int(StatusCode.INTERNAL)


@dataclass
class DiscoveryStatus:
    """What /config_dump shows about the stream."""

    state: str = "connecting"  # connecting | connected | disconnected
    control: str = ""
    connected_since: float | None = None
    last_error: str = ""
    last_nack: dict[str, Any] | None = None
    responses: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class DiscoveryClient:
    """Keeps `holder` fed from the control daemons; run it as one task."""

    def __init__(
        self,
        controls: ControlEndpoints,
        node: discovery_pb2.Node,
        holder: ConfigHolder,
        cache: DiskCache,
        metrics: Registry,
        parse: Parser,
        *,
        backoff: ExponentialBackoff | None = None,
        disk_grace: float = 2.0,
        connect_timeout: float = 3.0,
    ) -> None:
        self._controls = controls
        self._node = node
        self._holder = holder
        self._cache = cache
        self._parse = parse
        self._backoff = backoff or ExponentialBackoff(0.1, 5.0, floor=0.05)
        self._disk_grace = disk_grace
        self._connect_timeout = connect_timeout
        self._disk_tried = False
        self.ready = asyncio.Event()
        self.status = DiscoveryStatus()
        self._m_applies = metrics.counter(
            "skein_sidecar_config_applies_total", "Configurations applied", ["source"]
        )
        self._m_nacks = metrics.counter(
            "skein_sidecar_config_nacks_total", "Configurations rejected (NACKed)"
        )
        self._m_cache_errors = metrics.counter(
            "skein_sidecar_config_cache_errors_total", "Failures reading/writing the disk cache"
        )
        self._m_connected = metrics.gauge(
            "skein_sidecar_control_connected", "1 while a discovery stream is open"
        )
        self._m_reconnects = metrics.counter(
            "skein_sidecar_control_reconnects_total", "Discovery streams that ended or failed"
        )

    # -- sans-IO core --------------------------------------------------------
    @property
    def applied_version(self) -> str:
        current = self._holder.current
        return current.config.version if current is not None else ""

    def first_request(self) -> discovery_pb2.DiscoveryRequest:
        return discovery_pb2.DiscoveryRequest(node=self._node, version_info=self.applied_version)

    def handle(self, raw: bytes) -> discovery_pb2.DiscoveryRequest:
        """Apply one response (raw bytes) and return the ACK or NACK to send."""
        self.status.responses += 1
        response = discovery_pb2.DiscoveryResponse()
        try:
            response.ParseFromString(raw)
            config = self._parse(response.version_info, response.snapshot)
        except ConfigError as err:
            return self._nack(response, _INVALID_ARGUMENT, str(err))
        except Exception as err:  # a bug in parsing must not take the sidecar down
            log.exception("config parse failed unexpectedly", version=response.version_info)
            return self._nack(response, _INTERNAL, f"internal error parsing config: {err!r}")
        self._apply(config, "control")
        try:
            self._cache.save(raw)
        except OSError as err:
            self._m_cache_errors.inc()
            log.warning("could not write the config cache", path=self._cache.path, error=str(err))
        return discovery_pb2.DiscoveryRequest(
            version_info=response.version_info, response_nonce=response.nonce
        )

    def _nack(
        self, response: discovery_pb2.DiscoveryResponse, code: int, message: str
    ) -> discovery_pb2.DiscoveryRequest:
        self._m_nacks.inc()
        self.status.last_nack = {
            "version": response.version_info,
            "nonce": response.nonce,
            "error": message,
            "at": time.time(),
        }
        log.warning(
            "config rejected (NACK), keeping the old one",
            version=response.version_info,
            kept=self.applied_version,
            error=message,
        )
        return discovery_pb2.DiscoveryRequest(
            version_info=self.applied_version,
            response_nonce=response.nonce,
            error_detail=discovery_pb2.ErrorDetail(code=code, message=message),
        )

    def _apply(self, config: SidecarConfig, source: str) -> None:
        self._holder.apply(config, source)
        self._m_applies.labels(source).inc()
        log.info(
            "config applied", version=config.version, source=source, clusters=len(config.clusters)
        )
        self.ready.set()

    def load_disk(self) -> bool:
        """Apply the cached config if nothing is applied yet; True when it was."""
        if self._disk_tried or self._holder.current is not None:
            return False
        self._disk_tried = True
        try:
            raw = self._cache.load()
        except OSError as err:
            self._m_cache_errors.inc()
            log.warning("could not read the config cache", path=self._cache.path, error=str(err))
            return False
        if raw is None:
            log.warning("control unreachable and no cached config yet", path=self._cache.path)
            return False
        try:
            response = discovery_pb2.DiscoveryResponse.FromString(raw)
            config = self._parse(response.version_info, response.snapshot)
        except Exception as err:
            self._m_cache_errors.inc()
            log.warning(
                "cached config unusable, ignoring it", path=self._cache.path, error=str(err)
            )
            return False
        log.warning("serving the cached config until control answers", version=config.version)
        self._apply(config, "disk")
        return True

    # -- I/O adapter -----------------------------------------------------------
    async def run(self) -> None:
        """Stream forever (until cancelled), failing over and backing off between attempts."""
        grace = asyncio.get_running_loop().call_later(self._disk_grace, self.load_disk)
        try:
            while True:
                try:
                    await self._stream_once()
                    self.status.last_error = "stream closed by control"
                except asyncio.CancelledError:
                    raise
                except RpcError as err:
                    self.status.last_error = f"{err.code.name}: {err.message}"
                except Exception as err:  # keep serving whatever the failure
                    self.status.last_error = repr(err)
                    if not isinstance(err, OSError):
                        log.exception("discovery stream failed")
                self._m_connected.set(0)
                self._m_reconnects.inc()
                if self.status.state == "connected":
                    log.warning(
                        "discovery stream lost",
                        control=self.status.control,
                        error=self.status.last_error,
                    )
                self.status.state = "disconnected"
                self.status.connected_since = None
                self.load_disk()
                await self._controls.fail()
                await asyncio.sleep(self._backoff.next_delay())
        finally:
            grace.cancel()
            self._m_connected.set(0)
            await self._controls.close()

    async def _stream_once(self) -> None:
        self.status.state = "connecting"
        self.status.control = self._controls.current
        channel = self._controls.channel()
        call = await channel.stream(_STREAM, connect_timeout=self._connect_timeout)
        async with call:
            await call.send(self.first_request())
            self.status.state = "connected"
            self.status.connected_since = time.time()
            self._m_connected.set(1)
            log.info(
                "discovery stream open", control=self.status.control, version=self.applied_version
            )
            while True:
                raw = await call.recv()
                if raw is None:
                    return
                self._backoff.reset()
                await call.send(self.handle(raw))
