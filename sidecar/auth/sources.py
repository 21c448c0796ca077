"""Where JWT verifiers get their keys: files, and http:// URLs fetched in the background.

The async part is only the fetch loop: a URL source keeps its last good key
set and serves it while a refresh fails (stale while error), logging the
failure at warn. Sources are shared by every config that names the same
file or URL, so a config push does not refetch.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from sidecar.auth.jwks import FileJwks, JwksError, StaticJwks, parse_jwks
from sidecar.auth.jwt import KeySource
from skein.config.model import JwtRuleConfig
from skein.logging import get_logger

__all__ = ["JwksSources", "UriJwks", "fetch_http"]

log = get_logger("sidecar.auth")

MAX_JWKS_BYTES = 1 << 20
FETCH_TIMEOUT = 5.0
RETRY_AFTER_ERROR = 5.0


async def fetch_http(url: str, wait: float = FETCH_TIMEOUT) -> bytes:
    """GET an http:// URL's body (HTTP/1.1, Connection: close); raises JwksError."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise JwksError(f"{url}: only http://HOST[:PORT]/PATH URLs are fetched")
    port = parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        async with asyncio.timeout(wait):
            reader, writer = await asyncio.open_connection(parts.hostname, port)
            try:
                writer.write(
                    f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: application/json"
                    "\r\nConnection: close\r\n\r\n".encode()
                )
                data = await reader.read(MAX_JWKS_BYTES + 65536)
                while chunk := await reader.read(65536):
                    data += chunk
                    if len(data) > MAX_JWKS_BYTES + 65536:
                        raise JwksError(f"{url}: response larger than {MAX_JWKS_BYTES} bytes")
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        raise JwksError(f"{url}: no answer within {wait:g}s") from None
    except OSError as err:
        raise JwksError(f"{url}: {err.strerror or err}") from None
    head, sep, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split(b" ")
    if not sep or len(status) < 2 or status[1] != b"200":
        raise JwksError(f"{url}: answered {head[:64]!r} instead of 200")
    if b"transfer-encoding: chunked" in head.lower():
        raise JwksError(f"{url}: chunked responses are not supported; send Content-Length")
    return body


class UriJwks(StaticJwks):
    """A JWKS URL refreshed every `refresh` seconds by a background task."""

    def __init__(self, url: str, refresh: float) -> None:
        super().__init__()
        self.url = url
        self.refresh = refresh
        self.error = "not fetched yet"
        self.fetches = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the refresh loop on the running loop (no-op without one, or when running)."""
        if self._task is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._task = loop.create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def refresh_once(self) -> None:
        try:
            keys = parse_jwks(await fetch_http(self.url))
        except JwksError as err:
            self.error = str(err)
            log.warning("jwks_fetch_failed", url=self.url, error=self.error, keys=len(self.keys))
            return
        self.keys = keys
        self.error = ""
        self.fetches += 1

    async def _run(self) -> None:
        while True:
            await self.refresh_once()
            await asyncio.sleep(
                self.refresh if not self.error else min(self.refresh, RETRY_AFTER_ERROR)
            )


class JwksSources:
    """Key sources by location, reused across config pushes; unused ones are stopped."""

    def __init__(self) -> None:
        self._sources: dict[tuple[str, float], KeySource] = {}

    def get(self, rule: JwtRuleConfig) -> KeySource:
        key = (rule.jwks_file or rule.jwks_uri, rule.jwks_refresh if rule.jwks_uri else 0.0)
        source = self._sources.get(key)
        if source is None:
            source = (
                FileJwks(rule.jwks_file)
                if rule.jwks_file
                else UriJwks(rule.jwks_uri, rule.jwks_refresh)
            )
            self._sources[key] = source
        if isinstance(source, UriJwks):
            source.start()
        return source

    def retain(self, rules: tuple[JwtRuleConfig, ...]) -> None:
        """Stop and forget sources no rule in `rules` names."""
        wanted = {(r.jwks_file or r.jwks_uri, r.jwks_refresh if r.jwks_uri else 0.0) for r in rules}
        for key in [k for k in self._sources if k not in wanted]:
            source = self._sources.pop(key)
            if isinstance(source, UriJwks):
                source.stop()
