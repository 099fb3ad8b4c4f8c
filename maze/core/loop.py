"""The event loop the head and worker processes run on: uvloop where it is installed (Linux and
macOS; a dependency there), else asyncio's own. uvloop's libuv loop costs a fraction of the
default loop's overhead per callback and socket read, which is most of a no-op task's path."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # e.g. Windows: the default loop
        return asyncio.run(main)
    return uvloop.run(main)
