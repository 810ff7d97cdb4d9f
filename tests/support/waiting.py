"""Waiting for a condition with a deadline: the one synchronisation primitive tests use (never a bare sleep)."""

from __future__ import annotations

import asyncio
import gc
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any


async def eventually(
    condition: Callable[[], Awaitable[bool] | bool],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "",
) -> None:
    """Wait until ``condition()`` (plain or async) is true; fail with ``message`` after ``timeout`` seconds.

    ``message`` may be a function, called on failure, to report the last state seen.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        outcome = condition()
        if await outcome if inspect.isawaitable(outcome) else outcome:
            return
        if loop.time() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(text or f"condition not met within {timeout:g}s")
        await asyncio.sleep(interval)


@asynccontextmanager
async def loop_reports() -> AsyncIterator[list[dict[str, Any]]]:
    """What the event loop reports meanwhile (an exception never retrieved, say), once garbage is collected."""
    loop = asyncio.get_running_loop()
    reports: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reports.append(context))
    try:
        yield reports
        for _ in range(3):  # the cancelled waits finish, then the gather sees it
            await asyncio.sleep(0)
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
