"""Check gRPC status through a path before loading it.

h2load counts HTTP 200 as success, but a gRPC failure is an HTTP 200 with a
non-zero `grpc-status` trailer; these real gRPC calls catch that.
"""

from __future__ import annotations

import time

import grpc

from bench.grpcframe import ECHO_METHOD, payload

__all__ = ["GrpcCheckFailed", "check_echo"]


class GrpcCheckFailed(RuntimeError):
    """A path did not return the echoed bytes with status OK."""


def check_echo(target: str, *, calls: int = 5, size: int = 1024, wait: float = 15.0) -> None:
    """Make `calls` unary calls to `target` (HOST:PORT); each must echo with OK.

    Retries UNAVAILABLE for up to `wait` seconds first, since a fresh proxy may
    not know its upstream yet; any other failure is reported at once.
    """
    message = payload(size)
    deadline = time.monotonic() + wait
    options = [("grpc.use_local_subchannel_pool", 1)]
    with grpc.insecure_channel(target, options=options) as channel:
        echo = channel.unary_unary(ECHO_METHOD)
        done = 0
        while done < calls:
            try:
                reply = echo(message, timeout=5.0)
            except grpc.RpcError as err:
                code = err.code() if isinstance(err, grpc.Call) else None
                if code == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline and not done:
                    time.sleep(0.1)
                    continue
                details = err.details() if isinstance(err, grpc.Call) else str(err)
                raise GrpcCheckFailed(
                    f"{target}: call {done + 1} failed: {code} {details}"
                ) from err
            if reply != message:
                raise GrpcCheckFailed(
                    f"{target}: call {done + 1} returned {len(reply)} bytes, not the echo"
                )
            done += 1
