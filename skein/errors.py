"""Typed errors shared by the daemons and the CLI.

Expected failures derive from SkeinError and carry the gRPC status code they
map to; anything else is a bug and propagates.

`code` is a grpc.StatusCode resolved on first read: the sidecar imports this
module but not grpcio (11 MB of RSS it cannot afford), and never reads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc

__all__ = [
    "AddressError",
    "ConfigError",
    "ConflictError",
    "NotFoundError",
    "SkeinError",
    "StoreUnavailableError",
]


class _Code:
    """A class attribute reading as `grpc.StatusCode.<name>`; an instance may assign its own."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __get__(self, obj: object, owner: Any = None) -> grpc.StatusCode:
        if obj is not None and "code" in vars(obj):
            return vars(obj)["code"]
        import grpc

        return getattr(grpc.StatusCode, self._name)

    def __set__(self, obj: object, value: grpc.StatusCode) -> None:
        vars(obj)["code"] = value


class SkeinError(Exception):
    """Root of expected failures."""

    code = _Code("INTERNAL")


class ConfigError(SkeinError):
    """A resource or flag is invalid. `field` names where (`spec.timeout`)."""

    code = _Code("INVALID_ARGUMENT")

    def __init__(self, field: str, reason: str, *, where: str = "") -> None:
        self.field = field
        self.reason = reason
        self.where = where
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{field}: {reason}" if field else f"{prefix}{reason}")


class AddressError(ConfigError):
    """A HOST:PORT value does not parse."""


class NotFoundError(SkeinError):
    code = _Code("NOT_FOUND")


class ConflictError(SkeinError):
    """A conditional write lost: the stored version moved on."""

    code = _Code("ABORTED")


class StoreUnavailableError(SkeinError):
    """etcd did not answer."""

    code = _Code("UNAVAILABLE")
