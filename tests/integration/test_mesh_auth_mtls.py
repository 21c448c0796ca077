"""Authorization by caller identity over real mesh TLS: a caller's outbound side (A,
certificate for `client`) dials the callee's inbound side (B, PERMISSIVE) whose
InboundDispatcher holds an ALLOW policy for `client`. The TLS caller passes; a
plaintext caller, even one forging x-forwarded-client-cert, is denied."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import grpc
import pytest

from sidecar.dispatch import ConfigHolder, InboundDispatcher
from sidecar.tls import CertificateStore, InboundTls, MtlsPolicy, OutboundTls
from sidecar.transport import UpstreamPool, start_listener
from skein.config.model import (
    AuthzAction,
    AuthzPolicyConfig,
    AuthzRuleConfig,
    LocalConfig,
    SidecarConfig,
)
from tests.integration.test_transport_support import EchoApp, StaticDispatcher, run
from tests.unit.sidecar.test_tls_ca import MeshCA, write_files

pytestmark = pytest.mark.integration

CLIENT_ID = "spiffe://skein.local/service/client"


@pytest.fixture(scope="module")
def app() -> Any:
    with EchoApp() as server:
        yield server


def test_allow_by_caller_identity_over_mesh_tls(app: EchoApp, tmp_path: Path) -> None:
    ca = MeshCA()
    allow = AuthzPolicyConfig(
        "echo-callers", AuthzAction.ALLOW, (AuthzRuleConfig(sources=("client",)),)
    )

    async def scenario() -> None:
        holder = ConfigHolder(random.Random(0))
        holder.apply(SidecarConfig("1", {}, LocalConfig(authorization=(allow,))), "test")
        inbound = InboundDispatcher(holder, app.address)
        inbound.identity_from_xfcc = True
        b_store = CertificateStore(*write_files(tmp_path, "b", ca.issue("echo"), ca.pem))
        a_store = CertificateStore(*write_files(tmp_path, "a", ca.issue("client"), ca.pem))
        b_pool = UpstreamPool()
        b = await start_listener(
            "127.0.0.1", 0, inbound, b_pool, name="inbound", tls=InboundTls(b_store, MtlsPolicy())
        )
        a_pool = UpstreamPool(tls=OutboundTls(a_store, "skein.local", "local"))
        a = await start_listener(
            "127.0.0.1", 0, StaticDispatcher(b.address, cluster="echo"), a_pool, name="outbound"
        )
        try:
            via_tls = grpc.aio.insecure_channel(f"{a.address[0]}:{a.address[1]}")
            assert await via_tls.unary_unary("/test.Echo/Unary")(b"hi", timeout=10) == b"hi"
            await via_tls.close()
            plaintext = grpc.aio.insecure_channel(f"{b.address[0]}:{b.address[1]}")
            forged = (("x-forwarded-client-cert", f"By=x;URI={CLIENT_ID}"),)
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await plaintext.unary_unary("/test.Echo/Unary")(b"hi", metadata=forged, timeout=10)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert denied.value.details() == "permission denied: no ALLOW policy matched"
            await plaintext.close()
        finally:
            await a.close(grace=1.0)
            await b.close(grace=1.0)
            await a_pool.close()
            await b_pool.close()

    run(scenario)
