"""Typed errors shared by the daemons and the CLI.

Expected failures derive from SkeinError and carry the gRPC status code they
map to; anything else is a bug and propagates.
"""

from __future__ import annotations

import grpc

__all__ = [
    "AddressError",
    "ConfigError",
    "ConflictError",
    "NotFoundError",
    "SkeinError",
    "StoreUnavailableError",
]


class SkeinError(Exception):
    """Root of expected failures."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class ConfigError(SkeinError):
    """A resource or flag is invalid. `field` names where (`spec.timeout`)."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, reason: str, *, where: str = "") -> None:
        self.field = field
        self.reason = reason
        self.where = where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{field}: {reason}" if field else f"{prefix}{reason}")


class AddressError(ConfigError):
    """A HOST:PORT value does not parse."""


class NotFoundError(SkeinError):
    code = grpc.StatusCode.NOT_FOUND


class ConflictError(SkeinError):
    """A conditional write lost: the stored version moved on."""

    code = grpc.StatusCode.ABORTED


class StoreUnavailableError(SkeinError):
    """etcd did not answer."""

    code = grpc.StatusCode.UNAVAILABLE
