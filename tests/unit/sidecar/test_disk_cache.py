"""The disk cache keeps exactly the last saved bytes and leaves no temp files behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sidecar.discovery.cache import DiskCache, default_state_dir


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    cache = DiskCache(str(tmp_path / "state"))
    assert cache.load() is None
    cache.save(b"first")
    cache.save(b"second")
    assert cache.load() == b"second"
    assert os.listdir(tmp_path / "state") == ["last-good-config.pb"]
    assert (os.stat(cache.path).st_mode & 0o777) == 0o600


def test_save_into_an_unwritable_place_raises_oserror(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(OSError):
        DiskCache(str(blocker / "state")).save(b"x")


def test_default_state_dir_is_per_instance_and_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("TMPDIR", "/var/tmp")
    assert default_state_dir("web", "a/b c") == "/var/tmp/skein/sidecar/web-a_b_c"
    monkeypatch.setenv("XDG_STATE_HOME", "/state")
    assert default_state_dir("web", "1") == "/state/skein/sidecar/web-1"
