"""What the sidecar process imports: no grpcio (~11 MB RSS) and no yaml.

Checked in a fresh interpreter, the way `skein sidecar` starts: the CLI
module, the sidecar parser, then the daemon module.
"""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import json, sys
from skein.cli import build_parser
build_parser("sidecar")
import sidecar.app
print(json.dumps(sorted(sys.modules)))
"""

_FORBIDDEN = ("grpc", "yaml", "skein.v1.discovery_pb2_grpc", "skein.client")


def test_skein_sidecar_imports_neither_grpcio_nor_yaml() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(out.stdout))
    assert "sidecar.app" in loaded and "skein.grpcclient" in loaded
    assert not loaded & set(_FORBIDDEN), sorted(loaded & set(_FORBIDDEN))
