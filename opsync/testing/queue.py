"""Reading a work queue in tests."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from opsync.queue import WorkQueue

T = TypeVar("T")


async def take_ready(queue: WorkQueue[T], timeout: float = 5.0) -> set[T]:  # noqa: ASYNC109 - a test helper
    """Every key ready in ``queue`` now, each taken and marked done: what handlers and sources enqueued."""
    keys: set[T] = set()
    async with asyncio.timeout(timeout):
        while len(queue):
            key = await queue.get()
            queue.done(key)
            keys.add(key)
    return keys
