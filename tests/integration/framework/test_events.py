"""Events against a real apiserver: posted with their involved object, repeats aggregated into one Event."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from opsync.client import Client
from opsync.events import EventRecorder
from opsync.resources import CONFIGMAPS, EVENTS, NAMESPACES, KubeObject
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def recorder(kube: Client) -> AsyncIterator[EventRecorder]:
    """A running recorder; stopped (and flushed) when the test ends."""
    events = EventRecorder(kube, "opsync-test", host="test-host")
    stopping = asyncio.Event()
    task = asyncio.create_task(events.run(stopping))
    yield events
    stopping.set()
    async with asyncio.timeout(30):
        await task


async def events_about(kube: Client, namespace: str, name: str) -> list[KubeObject]:
    items = (await kube.list(EVENTS, namespace, field_selector=f"involvedObject.name={name}"))["items"]
    return sorted(items, key=lambda e: e["reason"])


async def test_an_event_is_posted_and_a_repeat_is_aggregated(
    kube: Client, namespace: str, recorder: EventRecorder
) -> None:
    cm = await kube.create(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}, namespace)
    recorder.event(cm, "Warning", "SyncFailed", "item not found")
    recorder.event(cm, "Warning", "SyncFailed", "item not found")
    recorder.event(cm, "Normal", "Synced", "x" * 2000)

    async def counted() -> bool:
        events = await events_about(kube, namespace, "a")
        return [(e["reason"], e["count"]) for e in events] == [("SyncFailed", 2), ("Synced", 1)]

    await eventually(counted)
    failed, synced = await events_about(kube, namespace, "a")
    assert failed["type"] == "Warning"
    assert failed["message"] == "item not found"
    assert failed["source"] == {"component": "opsync-test", "host": "test-host"}
    assert failed["lastTimestamp"] >= failed["firstTimestamp"]
    involved = failed["involvedObject"]
    assert involved["kind"] == "ConfigMap"
    assert involved["apiVersion"] == "v1"
    assert involved["namespace"] == namespace
    assert involved["uid"] == cm["metadata"]["uid"]
    assert involved["resourceVersion"] == cm["metadata"]["resourceVersion"]
    assert synced["message"] == "x" * 1024


async def test_events_about_cluster_scoped_objects_go_to_default(
    kube: Client, namespace: str, recorder: EventRecorder
) -> None:
    ns = await kube.get(NAMESPACES, namespace)
    recorder.event(ns, "Normal", "Seen", "namespace seen")

    async def posted() -> bool:
        return len(await events_about(kube, "default", namespace)) == 1

    await eventually(posted)


async def test_queued_events_are_written_when_stopping(kube: Client, namespace: str) -> None:
    cm = await kube.create(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}}, namespace)
    recorder = EventRecorder(kube, "opsync-test")
    recorder.event(cm, "Normal", "First", "one")
    recorder.event(cm, "Normal", "Second", "two")
    stopping = asyncio.Event()
    stopping.set()  # already stopping: run() only flushes what is queued
    async with asyncio.timeout(30):
        await recorder.run(stopping)
    assert [e["reason"] for e in await events_about(kube, namespace, "b")] == ["First", "Second"]


async def test_a_full_queue_drops_instead_of_blocking(
    kube: Client, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = EventRecorder(kube, "opsync-test", queue_size=1)
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": namespace}}
    recorder.event(cm, "Normal", "Kept", "one")
    with caplog.at_level(logging.WARNING, logger="opsync.events"):
        for n in range(100):  # each returns at once even though nothing consumes the queue
            recorder.event(cm, "Normal", "Dropped", f"number {n}")
    assert len(caplog.records) == 1, "one line when dropping starts, not one per Event"
    caplog.clear()
    stopping = asyncio.Event()
    stopping.set()
    with caplog.at_level(logging.WARNING, logger="opsync.events"):
        async with asyncio.timeout(30):
            await recorder.run(stopping)
    assert [e["reason"] for e in await events_about(kube, namespace, "c")] == ["Kept"]
    assert [r.getMessage() for r in caplog.records] == [
        "event queue drains again; 100 Events were dropped while it was full"
    ]


async def test_a_sustained_overload_logs_one_episode(
    kube: Client, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Events arriving faster than they are written keep the queue full: each write frees one place that the
    next Event takes. That is one dropping episode (two log lines), not one per freed place."""
    recorder = EventRecorder(kube, "opsync-test", queue_size=10)
    cm = await kube.create(CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d"}}, namespace)
    stopping = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="opsync.events"):
        writer = asyncio.create_task(recorder.run(stopping))
        for n in range(300):
            recorder.event(cm, "Normal", "Busy", f"number {n}")  # distinct messages: no aggregation
            if n % 3 == 2:  # paces the load (it synchronises nothing): the writer finishes writes meanwhile,
                await asyncio.sleep(0.001)  # each a place for the next Event, at a fraction of their rate
        stopping.set()
        async with asyncio.timeout(60):
            await writer
    written = sum(int(e.get("count") or 1) for e in await events_about(kube, namespace, "d"))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert messages[0].startswith("event queue full (10 waiting to be written)")
    assert messages[1] == f"event queue drains again; {300 - written} Events were dropped while it was full"
