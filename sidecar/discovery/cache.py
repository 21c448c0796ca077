"""The last good DiscoveryResponse on disk, so a sidecar can start while control is away.

Invariants: the file always holds a complete response (written to a temp file
in the same directory, fsynced, then renamed over the old one); what is
stored is the raw bytes control sent, so a newer sidecar can reparse them.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile

__all__ = ["DiskCache", "default_state_dir"]

_FILE = "last-good-config.pb"


def default_state_dir(service: str, instance: str) -> str:
    """A per-instance dir under $XDG_STATE_HOME/skein, or the system temp dir."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{service}-{instance}")
    base = os.environ.get("XDG_STATE_HOME")
    root = os.path.join(base, "skein") if base else os.path.join(tempfile.gettempdir(), "skein")
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
        fd, tmp = tempfile.mkstemp(prefix=".config-", dir=self.directory)
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
