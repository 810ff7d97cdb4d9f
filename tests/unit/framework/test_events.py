"""EventRecorder's writer yielding to the controllers: held until idle, within its limits (no API server).

Posting and aggregating against a real apiserver: tests/integration/framework/test_events.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from opsync.events import EventRecorder
from opsync.resources import CONFIGMAPS, EVENTS, KubeObject
from opsync.testing import FakeClient
from tests.support.waiting import eventually

CONFIGMAP: KubeObject = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "ns"}}


class Work:
    """A stand-in for the manager's controllers: busy until ``finish()``."""

    def __init__(self) -> None:
        self.finished = asyncio.Event()

    async def idle(self) -> None:
        await self.finished.wait()

    def finish(self) -> None:
        self.finished.set()


def written(client: FakeClient) -> list[str]:
    """The reasons of the Events written, sorted."""
    return sorted(obj["reason"] for obj in client.objects(EVENTS, "ns"))


async def settle() -> None:
    """Let every task that can run, run (the fake client answers without waiting)."""
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.fixture
async def running() -> AsyncIterator[Callable[[EventRecorder], asyncio.Event]]:
    """Runs recorders; each is stopped (and flushed) when the test ends."""
    started: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def run(recorder: EventRecorder) -> asyncio.Event:
        stopping = asyncio.Event()
        started.append((stopping, asyncio.create_task(recorder.run(stopping))))
        return stopping

    yield run
    for stopping, task in started:
        stopping.set()
        async with asyncio.timeout(10):
            await task


async def test_an_event_waits_until_the_controllers_are_idle(
    running: Callable[[EventRecorder], asyncio.Event],
) -> None:
    client, work = FakeClient([(CONFIGMAPS, CONFIGMAP)]), Work()
    recorder = EventRecorder(client, "opsync", idle=work.idle)
    running(recorder)
    recorder.event(CONFIGMAP, "Normal", "Synced", "created Secret a")
    await settle()
    assert written(client) == []
    work.finish()
    await eventually(lambda: written(client) == ["Synced"])


async def test_an_event_is_held_no_longer_than_the_hold_limit(
    running: Callable[[EventRecorder], asyncio.Event],
) -> None:
    client = FakeClient([(CONFIGMAPS, CONFIGMAP)])
    recorder = EventRecorder(client, "opsync", idle=Work().idle, hold_limit=0.2)
    running(recorder)
    recorder.event(CONFIGMAP, "Warning", "SyncFailed", "item not found")
    await eventually(lambda: written(client) == ["SyncFailed"], timeout=5)


async def test_events_are_not_held_while_queue_size_are_waiting(
    running: Callable[[EventRecorder], asyncio.Event],
) -> None:
    client, work = FakeClient([(CONFIGMAPS, CONFIGMAP)]), Work()
    recorder = EventRecorder(client, "opsync", queue_size=3, idle=work.idle)
    reasons = ["1st", "2nd", "3rd", "4th", "5th", "6th"]
    for reason in reasons:  # twice queue_size: room for those held and as many again, none dropped
        recorder.event(CONFIGMAP, "Normal", reason, "")
    running(recorder)
    # While three are waiting, counting the one in hand, they are written although the work goes on; then
    # they are held again, with the writer as much room as without holding.
    await eventually(lambda: written(client) == reasons[:4], timeout=5)
    await settle()
    assert written(client) == reasons[:4]
    work.finish()
    await eventually(lambda: written(client) == reasons, timeout=5)


async def test_without_idle_the_queue_takes_queue_size_events() -> None:
    client = FakeClient([(CONFIGMAPS, CONFIGMAP)])
    recorder = EventRecorder(client, "opsync", queue_size=2)
    for reason in ("First", "Second", "Dropped"):
        recorder.event(CONFIGMAP, "Normal", reason, "")
    stopping = asyncio.Event()
    stopping.set()
    async with asyncio.timeout(5):
        await recorder.run(stopping)
    assert written(client) == ["First", "Second"]


async def test_stopping_writes_held_events_at_once() -> None:
    client = FakeClient([(CONFIGMAPS, CONFIGMAP)])
    recorder = EventRecorder(client, "opsync", idle=Work().idle)
    stopping = asyncio.Event()
    task = asyncio.create_task(recorder.run(stopping))
    recorder.event(CONFIGMAP, "Normal", "Synced", "")
    recorder.event(CONFIGMAP, "Normal", "Updated", "")
    await settle()
    stopping.set()
    async with asyncio.timeout(5):
        await task
    assert written(client) == ["Synced", "Updated"]
