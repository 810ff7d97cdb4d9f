"""Controllers: result handling on a real WorkQueue, startup and shutdown, the builder.

Predicates are in test_predicate.py, handlers and sources in test_handler.py.

Informers are stand-ins (plain objects that call the registered handlers); the queue and metrics are real.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest

from opsync import metrics
from opsync.builder import Builder
from opsync.controller import CacheSyncTimeoutError, Controller
from opsync.logging import current_context
from opsync.manager import Manager
from opsync.reconcile import Request, Result, TerminalError
from opsync.resources import CONFIGMAPS, DEPLOYMENTS, NAMESPACES, REPLICASETS, SECRETS, KubeObject, Resource
from opsync.source import Channel, Kind
from opsync.testing import take_ready
from tests.support.waiting import eventually, loop_reports

KEY = Request("ns", "a")
OTHER = Request("ns", "b")
_names = itertools.count()


def unique(prefix: str) -> str:
    """A controller name no other test uses, so metric samples are this test's own."""
    return f"{prefix}-{next(_names)}"


def obj(name: str = "a", namespace: str = "ns", **meta: Any) -> KubeObject:
    return {"metadata": {"name": name, "namespace": namespace, **meta}}


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


class FakeInformer:
    """Calls its handlers when told to; "syncs" when the test says so."""

    def __init__(self, resource: Resource = CONFIGMAPS, *, synced: bool = True) -> None:
        self.resource = resource
        self.handlers: list[Any] = []
        self.synced = asyncio.Event()
        if synced:
            self.synced.set()

    def add_handler(self, handler: Any) -> None:
        self.handlers.append(handler)

    def has_synced(self) -> bool:
        return self.synced.is_set()

    async def wait_for_sync(self, timeout: float | None = None) -> bool:
        await self.synced.wait()
        return True

    def add(self, o: KubeObject) -> None:
        for handler in self.handlers:
            handler.on_add(o, False)

    def update(self, old: KubeObject, new: KubeObject) -> None:
        for handler in self.handlers:
            handler.on_update(old, new)

    def delete(self, o: KubeObject) -> None:
        for handler in self.handlers:
            handler.on_delete(o)


class FakeCache:
    def __init__(self) -> None:
        self.informers: dict[tuple[Resource, str | None], FakeInformer] = {}

    def informer(self, resource: Resource, *, label_selector: str | None = None, **_: Any) -> FakeInformer:
        return self.informers.setdefault((resource, label_selector), FakeInformer(resource))


class FakeManager:
    def __init__(self) -> None:
        self.cache = FakeCache()
        self.added: list[Any] = []

    def add(self, runnable: Any, *, leader_only: bool = True) -> None:
        self.added.append(runnable)


class Scripted:
    """A reconciler that plays a script of outcomes per key and records what it saw."""

    def __init__(self, script: dict[Request, list[Any]] | None = None) -> None:
        self.script = script or {}
        self.calls: list[Request] = []
        self.requeues: list[int] = []
        self.contexts: list[dict[str, str]] = []
        self.controller: Controller | None = None

    def count(self, request: Request) -> int:
        return self.calls.count(request)

    async def reconcile(self, request: Request) -> Result | None:
        assert self.controller is not None
        self.calls.append(request)
        self.requeues.append(self.controller.queue.num_requeues(request))
        self.contexts.append(dict(current_context()))
        steps = self.script.get(request)
        step = steps.pop(0) if steps else None
        if isinstance(step, BaseException):
            raise step
        if callable(step):
            result: Result | None = await step()
            return result
        return cast(Result | None, step)


@asynccontextmanager
async def running(controller: Controller) -> AsyncIterator[asyncio.Event]:
    stopping = asyncio.Event()
    task = asyncio.create_task(controller.run(stopping))
    try:
        yield stopping
    finally:
        stopping.set()
        async with asyncio.timeout(10):
            await task


def make(script: dict[Request, list[Any]] | None = None, **options: Any) -> tuple[Controller, Scripted]:
    reconciler = Scripted(script)
    controller = Controller(unique("test"), reconciler, **options)
    reconciler.controller = controller
    return controller, reconciler


# --- result handling ---------------------------------------------------------------------------------------


async def test_errors_retry_with_backoff_until_success_resets_it() -> None:
    controller, rec = make({KEY: [RuntimeError("boom"), KeyError("bug"), None]})
    async with running(controller):
        controller.enqueue(KEY)
        await eventually(lambda: rec.count(KEY) == 3 and sample_total(controller, "success") == 1)
    assert rec.requeues == [0, 1, 2]  # each failure went through add_rate_limited
    assert controller.queue.num_requeues(KEY) == 0  # success forgot the failures
    assert sample_total(controller, "error") == 2
    assert sample("controller_runtime_reconcile_errors_total", controller=controller.name) == 2


async def test_unexpected_exceptions_count_as_panics_io_failures_do_not() -> None:
    controller, rec = make({KEY: [KeyError("bug"), OSError("connection reset"), TimeoutError(), None]})
    async with running(controller):
        controller.enqueue(KEY)
        await eventually(lambda: sample_total(controller, "success") == 1)
    assert rec.count(KEY) == 4
    assert sample("controller_runtime_reconcile_errors_total", controller=controller.name) == 3
    assert sample("controller_runtime_reconcile_panics_total", controller=controller.name) == 1


async def test_terminal_error_is_not_retried_and_forgets_the_backoff() -> None:
    controller, rec = make({KEY: [RuntimeError("boom"), TerminalError("bad spec")]})
    async with running(controller):
        controller.enqueue(KEY)
        await eventually(
            lambda: sample("controller_runtime_terminal_reconcile_errors_total", controller=controller.name) == 1
        )
        controller.enqueue(OTHER)  # one worker, FIFO: had KEY been requeued, it would run before OTHER
        await eventually(lambda: rec.count(OTHER) == 1)
    assert rec.calls == [KEY, KEY, OTHER]
    assert controller.queue.num_requeues(KEY) == 0
    assert sample_total(controller, "error") == 2


async def test_requeue_after_forgets_the_backoff_then_waits() -> None:
    controller, rec = make({KEY: [RuntimeError("a"), RuntimeError("b"), Result(requeue_after=0.01), None]})
    async with running(controller):
        controller.enqueue(KEY)
        await eventually(lambda: rec.count(KEY) == 4)
    assert rec.requeues == [0, 1, 2, 0]
    assert sample_total(controller, "requeue_after") == 1


async def test_requeue_goes_through_the_rate_limiter() -> None:
    controller, rec = make({KEY: [Result(requeue=True), Result(requeue=True), None]})
    async with running(controller):
        controller.enqueue(KEY)
        await eventually(lambda: rec.count(KEY) == 3)
    assert rec.requeues == [0, 1, 2]
    assert sample_total(controller, "requeue") == 2
    assert sample_total(controller, "success") == 1


async def test_a_reconcile_that_runs_too_long_is_cancelled_and_retried() -> None:
    async def hang() -> None:
        await asyncio.Event().wait()

    controller, rec = make({KEY: [hang, None]}, reconcile_timeout=0.05)
    async with running(controller):
        controller.enqueue(KEY)
        await eventually(lambda: rec.count(KEY) == 2)
    assert rec.requeues == [0, 1]
    assert sample("controller_runtime_reconcile_timeouts_total", controller=controller.name) == 1
    assert sample_total(controller, "error") == 1


async def test_the_reconcilers_own_timeout_is_a_plain_error() -> None:
    controller, rec = make({KEY: [TimeoutError("upstream slow"), None]}, reconcile_timeout=30)
    async with running(controller):
        controller.enqueue(KEY)
        await eventually(lambda: rec.count(KEY) == 2)
    assert sample("controller_runtime_reconcile_timeouts_total", controller=controller.name) == 0
    assert sample_total(controller, "error") == 1


def sample_total(controller: Controller, result: str) -> float:
    return sample("controller_runtime_reconcile_total", controller=controller.name, result=result)


async def test_reconcile_total_starts_at_zero_for_every_result() -> None:
    controller, _ = make()
    for result in ("success", "error", "requeue", "requeue_after"):
        assert (
            metrics.REGISTRY.get_sample_value(
                "controller_runtime_reconcile_total", {"controller": controller.name, "result": result}
            )
            == 0
        )


async def test_each_reconcile_logs_with_controller_key_and_its_own_id() -> None:
    controller, rec = make()
    async with running(controller):
        controller.enqueue(KEY)
        await eventually(lambda: rec.count(KEY) == 1)
        controller.enqueue(KEY)
        await eventually(lambda: rec.count(KEY) == 2)
    first, second = rec.contexts
    assert first["controller"] == controller.name
    assert first["key"] == "ns/a"
    assert first["reconcileID"] != second["reconcileID"]
    assert current_context().get("controller") is None  # the context does not leak out of the reconcile


async def test_workers_reconcile_different_keys_concurrently_but_never_one_key_twice() -> None:
    release = asyncio.Event()
    in_flight: set[Request] = set()
    overlap: list[Request] = []

    async def slow() -> None:
        await release.wait()

    keys = [Request("ns", str(i)) for i in range(3)]
    controller, rec = make({k: [slow, slow] for k in keys}, workers=3)
    original = rec.reconcile

    async def tracking(request: Request) -> Result | None:
        if request in in_flight:
            overlap.append(request)
        in_flight.add(request)
        try:
            return await original(request)
        finally:
            in_flight.discard(request)

    rec.reconcile = tracking  # type: ignore[method-assign]
    async with running(controller):
        for k in keys:
            controller.enqueue(k)
        await eventually(lambda: len(in_flight) == 3)  # three workers busy at once
        for k in keys:
            controller.enqueue(k)  # already in flight: must wait for the first reconcile
        assert sample("controller_runtime_active_workers", controller=controller.name) == 3
        release.set()
        await eventually(lambda: len(rec.calls) == 6)
    assert overlap == []


# --- startup and shutdown ----------------------------------------------------------------------------------


async def test_waits_for_informers_to_sync_before_reconciling() -> None:
    controller, rec = make()
    informer = FakeInformer(synced=False)
    controller.watch(Kind(informer))
    async with running(controller):
        informer.add(obj("a"))
        await asyncio.sleep(0.05)  # a chance to misbehave, not synchronisation: nothing may run yet
        assert rec.calls == []
        informer.synced.set()
        await eventually(lambda: rec.calls == [KEY])


async def test_cache_sync_timeout_fails_the_controller() -> None:
    controller, _ = make(cache_sync_timeout=0.05)
    controller.watch(Kind(FakeInformer(synced=False)))
    async with loop_reports() as reports:
        with pytest.raises(CacheSyncTimeoutError):
            await controller.run(asyncio.Event())
    assert reports == []


async def test_stopping_while_waiting_for_sync_returns() -> None:
    controller, _ = make()
    controller.watch(Kind(FakeInformer(synced=False)))
    stopping = asyncio.Event()
    async with loop_reports() as reports:
        task = asyncio.create_task(controller.run(stopping))
        stopping.set()
        async with asyncio.timeout(10):
            await task
    assert reports == []  # the abandoned wait for the informers leaves nothing behind


async def test_shutdown_finishes_in_flight_reconciles_and_takes_no_new_ones() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[Request] = []

    async def slow() -> None:
        started.set()
        await release.wait()
        finished.append(KEY)

    controller, rec = make({KEY: [slow]})
    stopping = asyncio.Event()
    task = asyncio.create_task(controller.run(stopping))
    controller.enqueue(KEY)
    await eventually(started.is_set)
    controller.enqueue(OTHER)  # queued behind the in-flight reconcile
    stopping.set()
    await asyncio.sleep(0.05)  # a chance to misbehave: run() must not return while KEY is in flight
    assert not task.done()
    release.set()
    async with asyncio.timeout(10):
        await task
    assert finished == [KEY]
    assert rec.calls == [KEY]  # OTHER was not started after stopping
    controller.enqueue(OTHER)  # intake is closed
    assert rec.calls == [KEY]


# --- the builder ---------------------------------------------------------------------------------------------


async def test_builder_wires_primary_owned_and_watched_kinds() -> None:
    manager = FakeManager()
    watched: list[KubeObject] = []

    def to_target(o: KubeObject) -> list[Request]:
        watched.append(o)
        return [Request("elsewhere", o["metadata"]["name"])]

    reconciler = Scripted()
    controller = (
        Builder(cast(Manager, manager), unique("built"))
        .for_(DEPLOYMENTS, label_selector="app=web")
        .owns(REPLICASETS)
        .watches(SECRETS, to_target)
        .with_options(workers=2)
        .complete(reconciler)
    )
    assert manager.added == [controller]
    assert controller.workers == 2
    informers = manager.cache.informers
    informers[(DEPLOYMENTS, "app=web")].add(obj("web"))
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web-owner", "uid": "u", "controller": True}
    informers[(REPLICASETS, None)].add(obj("child", ownerReferences=[owner]))
    informers[(SECRETS, None)].add(obj("creds"))
    assert await take_ready(controller.queue) == {
        Request("ns", "web"),
        Request("ns", "web-owner"),
        Request("elsewhere", "creds"),
    }


async def test_builder_watches_existing_sources() -> None:
    manager = FakeManager()
    elsewhere = FakeInformer(NAMESPACES)  # an informer the builder did not make
    channel = Channel()
    controller = (
        Builder(cast(Manager, manager), unique("sources"))
        .watches_source(Kind(elsewhere, lambda ns: [Request(ns["metadata"]["name"], "x")]), channel)
        .complete(Scripted())
    )
    assert manager.cache.informers == {}  # nothing of its own to watch
    elsewhere.add(obj("team-a", namespace=""))
    assert channel.fire(KEY)
    assert await take_ready(controller.queue) == {Request("team-a", "x"), KEY}


def test_builder_refuses_incomplete_declarations() -> None:
    manager = cast(Manager, FakeManager())
    with pytest.raises(ValueError):
        Builder(manager, "nothing").complete(Scripted())
    with pytest.raises(ValueError):
        Builder(manager, "orphan-owns").owns(SECRETS).complete(Scripted())
    with pytest.raises(ValueError):
        Builder(manager, "twice").for_(SECRETS).for_(CONFIGMAPS)
