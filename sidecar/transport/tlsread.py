"""Reading TLS plaintext into one reused buffer.

The loop's TLS transport hands a plain `asyncio.Protocol` each read as a new
bytes object sized for the largest record batch (256 KiB), an allocation big
enough to be an mmap + munmap per read: tens of microseconds per request. A
`BufferedProtocol` gets the plaintext decrypted into its own buffer instead;
this adapter owns that buffer and passes each read on as bytes of its real
size to the relay's usual `data_received` protocol.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["TlsReader"]

_BUFFER = 65536


class TlsReader(asyncio.BufferedProtocol):
    """Forwards a TLS transport's events to `inner` (which may be swapped once)."""

    __slots__ = ("_buf", "_view", "inner")

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self._buf = bytearray(_BUFFER)
        self._view = memoryview(self._buf)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        self.inner.data_received(bytes(self._view[:nbytes]))

    def connection_made(self, transport: Any) -> None:
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        eof = getattr(self.inner, "eof_received", None)
        return eof() if eof is not None else None

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()
