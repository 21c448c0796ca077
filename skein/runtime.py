"""Event loop selection: uvloop, or asyncio's loop with a warning."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from skein.logging import get_logger

__all__ = ["run"]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` on uvloop when available (the data plane's I/O runs on it)."""
    try:
        import uvloop
    except ImportError:
        get_logger("runtime").warning("uvloop missing, using the asyncio event loop (slower)")
        return asyncio.run(main)
    result: T = uvloop.run(main)
    return result
