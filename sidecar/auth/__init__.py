"""Inbound authentication and authorization: JWT, API keys, AuthorizationPolicy.

The policy parts (jwks, jwt, authz, inbound) are sans-IO; `sources` holds
the one async piece, the JWKS URL refresh loop.
"""

from sidecar.auth.authz import Authorizer, AuthzRequest, Decision
from sidecar.auth.inbound import AuthStats, InboundAuth
from sidecar.auth.jwt import JwtError, JwtVerifier
from sidecar.auth.sources import JwksSources

__all__ = [
    "AuthStats",
    "Authorizer",
    "AuthzRequest",
    "Decision",
    "InboundAuth",
    "JwksSources",
    "JwtError",
    "JwtVerifier",
]
