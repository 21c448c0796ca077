"""The last good DiscoveryResponse on disk, so a sidecar can start while control is away.

Invariants: the file always holds a complete response (written to a temp file
in the same directory, fsynced, then renamed over the old one); what is
stored is the raw bytes control sent, so a newer sidecar can reparse them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re

__all__ = ["DiskCache", "default_state_dir"]

_FILE = "last-good-config.pb"
# Not `tempfile`: it pulls in shutil, bz2 and lzma (~0.3 MB RSS) for two calls.
_serial = itertools.count()


def _temp_root() -> str:
    for name in ("TMPDIR", "TEMP", "TMP"):
        value = os.environ.get(name)
        if value:
            return value
    return "/tmp"


def default_state_dir(service: str, instance: str) -> str:
    """A per-instance dir under $XDG_STATE_HOME/skein, or the system temp dir."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{service}-{instance}")
    base = os.environ.get("XDG_STATE_HOME")
    root = os.path.join(base, "skein") if base else os.path.join(_temp_root(), "skein")
    return os.path.join(root, "sidecar", safe)


class DiskCache:
    """Reads and atomically replaces the cached response bytes in `directory`."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.path = os.path.join(directory, _FILE)

    def load(self) -> bytes | None:
        """The cached bytes, or None when nothing was cached yet."""
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def save(self, data: bytes) -> None:
        """Replace the cache atomically; raises OSError (the caller logs and counts it)."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        tmp = os.path.join(self.directory, f".config-{os.getpid()}-{next(_serial)}")
        with contextlib.suppress(FileNotFoundError):  # left by a crashed process with our pid
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
