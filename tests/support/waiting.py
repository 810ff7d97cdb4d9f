"""Waiting for a condition with a deadline: the one synchronisation primitive tests use (never a bare sleep)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


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
