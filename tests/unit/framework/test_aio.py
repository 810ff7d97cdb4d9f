"""opsync.aio.first_completed: the first wins, the rest are cancelled, nothing is left unread."""

from __future__ import annotations

import asyncio

from opsync.aio import first_completed
from tests.support.waiting import loop_reports


async def test_the_first_to_complete_is_returned_and_the_others_cancelled() -> None:
    fired = asyncio.Event()
    slow = asyncio.ensure_future(asyncio.sleep(3600))
    fired.set()
    done = await first_completed(slow, fired.wait())
    assert len(done) == 1 and next(iter(done)).result() is True
    await asyncio.sleep(0)
    assert slow.cancelled()


async def test_a_timeout_returns_nothing_done_and_cancels_everything() -> None:
    never = asyncio.ensure_future(asyncio.Event().wait())
    assert await first_completed(never, timeout=0.01) == set()
    await asyncio.sleep(0)
    assert never.cancelled()


async def test_a_result_is_read_from_the_future_passed_in() -> None:
    async def answer() -> int:
        return 42

    computed = asyncio.ensure_future(answer())
    assert computed in await first_completed(computed, asyncio.Event().wait())
    assert computed.result() == 42


async def test_a_cancelled_gather_leaves_nothing_for_the_loop_to_report() -> None:
    async def gathered() -> list[object]:
        return await asyncio.gather(asyncio.Event().wait(), asyncio.Event().wait())

    stopping = asyncio.Event()
    stopping.set()
    async with loop_reports() as reports:
        await first_completed(gathered(), stopping.wait())
    assert reports == []


async def test_the_waiter_cancelled_cancels_what_it_waits_on() -> None:
    never = asyncio.ensure_future(asyncio.Event().wait())
    waiter = asyncio.ensure_future(first_completed(never))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    await asyncio.sleep(0)
    assert never.cancelled()
