"""asyncio helpers the framework's runnables share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any


async def first_completed(
    *aws: Awaitable[Any],
    timeout: float | None = None,  # noqa: ASYNC109 -- as asyncio.wait's: on a timeout it returns, not raises
) -> set[asyncio.Future[Any]]:
    """Wait until the first of ``aws`` completes, or ``timeout`` seconds pass; cancel the others.

    Returns the futures that completed (none after a timeout), like ``asyncio.wait``: pass a future you made
    with ``asyncio.ensure_future`` to tell whether it was among them, and read its result. Pass a coroutine
    rather than a ``gather`` future: the coroutine runs in a task, which reads the ``CancelledError`` of a
    gather cancelled inside it; a gather cancelled directly leaves "exception was never retrieved" behind.
    """
    futures: list[asyncio.Future[Any]] = [asyncio.ensure_future(aw) for aw in aws]
    try:
        done: set[asyncio.Future[Any]]
        done, _ = await asyncio.wait(futures, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in futures:
            future.cancel()  # a no-op on those done
    return done
