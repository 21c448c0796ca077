"""Shared fixtures: a real etcd per test session, temp dirs, process groups."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from skein.launch import ProcessGroup
from skein.localetcd import LocalEtcd


@pytest.fixture(scope="session")
def etcd() -> Iterator[LocalEtcd]:
    """One real etcd for the session; tests isolate themselves by key prefix."""
    with LocalEtcd() as server:
        yield server


@pytest.fixture
def procs(tmp_path: object) -> Iterator[ProcessGroup]:
    """Daemons started by a test; all stopped (by PID) when it ends."""
    group = ProcessGroup(log_dir=str(tmp_path))
    try:
        yield group
    finally:
        group.stop_all()
