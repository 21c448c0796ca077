"""The committed stubs match what protos/ generates (CI fails on drift)."""

from __future__ import annotations

import pathlib
import shutil
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
    """A stub edited by hand is reported by name (on a copy: the real stubs stay untouched)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_protos  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    for tree in gen_protos.TREES:
        shutil.copytree(ROOT / tree.dest, tmp_path / tree.dest)
    assert gen_protos.drift(tmp_path) == []
    stub = tmp_path / "skein" / "v1" / "resources_pb2.py"
    stub.write_bytes(stub.read_bytes() + b"\n# edited\n")
    assert gen_protos.drift(tmp_path) == ["skein/v1/resources_pb2.py"]
