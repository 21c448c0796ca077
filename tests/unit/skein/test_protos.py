"""The committed stubs match what protos/ generates (CI fails on drift)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[3]


def test_generated_stubs_match_protos() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_drift_is_detected(tmp_path: pathlib.Path) -> None:
    """A stub edited by hand is reported by name."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_protos
    finally:
        sys.path.pop(0)
    stub = ROOT / "skein" / "v1" / "resources_pb2.py"
    original = stub.read_bytes()
    try:
        stub.write_bytes(original + b"\n# edited\n")
        assert "skein/v1/resources_pb2.py" in gen_protos.drift()
    finally:
        stub.write_bytes(original)
