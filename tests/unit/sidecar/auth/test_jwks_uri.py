"""JWKS over http:// from a real local server: fetched, refreshed, stale while error."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.auth.jwks import JwksError
from sidecar.auth.jwt import JwtVerifier
from sidecar.auth.sources import JwksSources, UriJwks, fetch_http
from skein.config.model import JwtRuleConfig
from tests.unit.sidecar.auth.tokens import ISSUER, NOW, claims, ec_jwk, jwks, mint, rsa_jwk


class JwksServer:
    """Answers GET with the current `body` (status `status`), Content-Length framed."""

    def __init__(self) -> None:
        self.body = jwks(rsa_jwk())
        self.status = b"200 OK"
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.requests += 1
        writer.write(
            b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (self.status, len(self.body), self.body)
        )
        await writer.drain()
        writer.close()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/.well-known/jwks.json"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))  # type: ignore[arg-type]


def test_fetch_refresh_and_stale_while_error() -> None:
    async def scenario() -> None:
        server = JwksServer()
        url = await server.start()
        source = UriJwks(url, refresh=3600.0)
        verifier = JwtVerifier(JwtRuleConfig(issuer=ISSUER, jwks_uri=url), source)
        await source.refresh_once()
        assert source.error == ""
        assert verifier.verify(mint(claims()), NOW, 0.0)["sub"] == "alice"
        # a rotation at the issuer shows after the next refresh
        server.body = jwks(rsa_jwk(kid="rsa-2"), ec_jwk())
        await source.refresh_once()
        assert verifier.verify(mint(claims(), "ES256", "ec-1"), NOW, 0.0)["sub"] == "alice"
        # the issuer failing keeps the last good keys, and says why
        server.status = b"500 Internal Server Error"
        await source.refresh_once()
        assert "instead of 200" in source.error
        assert [k.kid for k in source.current(0.0)] == ["rsa-2", "ec-1"]
        await server.stop()
        await source.refresh_once()
        assert [k.kid for k in source.current(0.0)] == ["rsa-2", "ec-1"]
        assert source.fetches == 2

    run(scenario())


def test_background_loop_fetches_and_sources_are_shared() -> None:
    async def scenario() -> None:
        server = JwksServer()
        url = await server.start()
        sources = JwksSources()
        rule = JwtRuleConfig(issuer=ISSUER, jwks_uri=url, jwks_refresh=0.05)
        source = sources.get(rule)
        assert sources.get(rule) is source
        for _ in range(200):
            if server.requests >= 2:
                break
            await asyncio.sleep(0.01)
        assert server.requests >= 2
        assert [k.kid for k in source.current(0.0)] == ["rsa-1"]
        sources.retain(())
        await asyncio.sleep(0)
        seen = server.requests
        await asyncio.sleep(0.2)
        assert server.requests == seen
        await server.stop()

    run(scenario())


def test_fetch_refuses_other_schemes_and_dead_ports() -> None:
    async def scenario() -> None:
        with pytest.raises(JwksError, match="only http://"):
            await fetch_http("https://issuer.example/jwks")
        server = JwksServer()
        url = await server.start()
        await server.stop()
        with pytest.raises(JwksError):
            await fetch_http(url, 2.0)

    run(scenario())


def test_a_jwks_url_is_fetched_when_the_config_is_applied() -> None:
    import random

    from sidecar.dispatch import ConfigHolder, InboundDispatcher
    from skein.config.model import LocalConfig, SidecarConfig

    async def scenario() -> None:
        server = JwksServer()
        url = await server.start()
        holder = ConfigHolder(random.Random(0))
        inbound = InboundDispatcher(holder, ("127.0.0.1", 1))
        rule = JwtRuleConfig(issuer=ISSUER, jwks_uri=url)
        holder.apply(SidecarConfig("1", {}, LocalConfig(jwt=(rule,))), "test")
        for _ in range(200):  # no call has been made: the apply started the fetch
            if server.requests:
                break
            await asyncio.sleep(0.01)
        assert server.requests == 1
        dump = inbound.dump_auth()
        assert dump is not None
        holder.apply(SidecarConfig("2", {}, LocalConfig()), "test")  # rules gone: no checks
        assert inbound.dump_auth() is None
        await server.stop()

    run(scenario())
