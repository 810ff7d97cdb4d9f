"""opsync.testing: the fake clock, the in-memory client, and a reconciler unit-tested with them."""

from __future__ import annotations

import asyncio
import runpy
from pathlib import Path
from typing import Any, cast

import pytest

from opsync.builder import Builder
from opsync.client import AlreadyExistsError, ConflictError, NotFoundError
from opsync.manager import Manager
from opsync.queue import BucketRateLimiter
from opsync.reconcile import Request
from opsync.resources import CONFIGMAPS, NAMESPACES, SECRETS, KubeObject
from opsync.testing import FakeClient, FakeClock, FakeManager
from tests.support.waiting import eventually

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "mirror.py"


def configmap(name: str, namespace: str = "ns", **meta: Any) -> KubeObject:
    return {"metadata": {"name": name, "namespace": namespace, **meta}, "data": {"k": "v"}}


def test_the_clock_moves_only_when_told() -> None:
    clock = FakeClock(100.0)
    assert clock() == 100.0
    assert clock.advance(2.5) == 102.5 == clock()
    clock.now = 0.0
    assert clock() == 0.0
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_the_clock_drives_a_rate_limiter() -> None:
    clock = FakeClock()
    limiter = BucketRateLimiter[str](qps=1.0, burst=1, clock=clock)
    assert limiter.when("a") == 0.0
    assert limiter.when("b") == pytest.approx(1.0)  # the bucket is empty until a second passes
    clock.advance(5)
    assert limiter.when("c") == 0.0


async def test_create_sets_the_server_fields_and_refuses_a_taken_name() -> None:
    client = FakeClient()
    created = await client.create(CONFIGMAPS, configmap("a"))
    meta = created["metadata"]
    assert (created["apiVersion"], created["kind"]) == ("v1", "ConfigMap")
    assert meta["uid"] and meta["resourceVersion"] and meta["generation"] == 1
    assert await client.get(CONFIGMAPS, "a", "ns") == created
    with pytest.raises(AlreadyExistsError):
        await client.create(CONFIGMAPS, configmap("a"))
    with pytest.raises(NotFoundError):
        await client.get(CONFIGMAPS, "b", "ns")
    assert client.actions == [("create", CONFIGMAPS, "ns/a")]


async def test_a_stale_resource_version_is_a_conflict_and_mutate_retries_it() -> None:
    client = FakeClient([(CONFIGMAPS, configmap("a"))])
    stale = await client.get(CONFIGMAPS, "a", "ns")
    await client.patch(CONFIGMAPS, "a", {"data": {"k": "w"}}, "ns")
    stale["data"] = {"k": "x"}
    with pytest.raises(ConflictError):
        await client.replace(CONFIGMAPS, stale)

    def add_label(obj: KubeObject) -> bool:
        obj["metadata"].setdefault("labels", {})["seen"] = "yes"
        return True

    written = await client.mutate(CONFIGMAPS, "a", "ns", add_label)
    assert written is not None
    assert written["metadata"]["labels"] == {"seen": "yes"} and written["data"] == {"k": "w"}
    assert int(written["metadata"]["resourceVersion"]) > int(stale["metadata"]["resourceVersion"])


async def test_merge_patches_generation_and_status() -> None:
    client = FakeClient([(SECRETS, {"metadata": {"name": "s", "namespace": "ns"}, "data": {"a": "1", "b": "2"}})])
    patched = await client.patch(
        SECRETS, "s", {"data": {"a": None, "c": "3"}, "metadata": {"labels": {"x": "y"}}}, "ns"
    )
    assert patched["data"] == {"b": "2", "c": "3"} and patched["metadata"]["generation"] == 2
    relabelled = await client.patch(SECRETS, "s", {"metadata": {"labels": {"x": "z"}}}, "ns")
    assert relabelled["metadata"]["generation"] == 2  # metadata is not the spec
    status = await client.patch(SECRETS, "s", {"status": {"ok": True}, "data": {}}, "ns", subresource="status")
    assert status["status"] == {"ok": True} and status["data"] == {"b": "2", "c": "3"}
    applied = await client.patch(SECRETS, "new", configmap("new"), "ns", patch_type="apply", force=True)
    assert applied["metadata"]["uid"]
    with pytest.raises(NotImplementedError):
        await client.patch(SECRETS, "s", [{"op": "remove", "path": "/data"}], "ns", patch_type="json")


async def test_finalizers_hold_a_deletion_until_the_last_is_removed() -> None:
    client = FakeClient([(CONFIGMAPS, configmap("a", finalizers=["example.com/keep"]))])
    await client.delete(CONFIGMAPS, "a", "ns")
    held = await client.get(CONFIGMAPS, "a", "ns")
    assert held["metadata"]["deletionTimestamp"]
    await client.patch(CONFIGMAPS, "a", {"metadata": {"finalizers": None}}, "ns")
    with pytest.raises(NotFoundError):
        await client.get(CONFIGMAPS, "a", "ns")


async def test_delete_checks_preconditions() -> None:
    client = FakeClient([(CONFIGMAPS, configmap("a"))])
    with pytest.raises(ConflictError):
        await client.delete(CONFIGMAPS, "a", "ns", preconditions={"uid": "someone-else"})
    uid = (await client.get(CONFIGMAPS, "a", "ns"))["metadata"]["uid"]
    await client.delete(CONFIGMAPS, "a", "ns", preconditions={"uid": uid})
    assert client.objects(CONFIGMAPS) == []


async def test_lists_and_informers_honour_namespaces_and_label_selectors() -> None:
    client = FakeClient(
        [
            (CONFIGMAPS, configmap("a", labels={"app": "web", "tier": "db"})),
            (CONFIGMAPS, configmap("b", "other", labels={"app": "web"})),
            (CONFIGMAPS, configmap("c")),
            (NAMESPACES, {"metadata": {"name": "ns"}}),
        ]
    )

    async def names(selector: str, namespace: str | None = None) -> list[str]:
        page = await client.list(CONFIGMAPS, namespace, label_selector=selector)
        return [o["metadata"]["name"] for o in page["items"]]

    assert await names("app=web") == ["a", "b"]
    assert await names("app==web,tier") == ["a"]
    assert await names("app!=web") == ["c"]
    assert await names("!tier", "ns") == ["c"]
    with pytest.raises(ValueError):
        await names("app in (web)")
    manager = FakeManager(client)
    web = manager.cache.informer(CONFIGMAPS, label_selector="app=web")
    assert web.get("other", "b") is not None and web.get("ns", "c") is None
    assert [o["metadata"]["name"] for o in web.list("ns")] == ["a"]
    assert manager.cache.informer(NAMESPACES).get("", "ns") is not None


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def on_add(self, obj: KubeObject, is_initial_list: bool) -> None:
        self.events.append(("initial" if is_initial_list else "add", obj["metadata"]["name"]))

    def on_update(self, old: KubeObject, new: KubeObject) -> None:
        self.events.append(("update", new["metadata"]["name"]))

    def on_delete(self, obj: KubeObject) -> None:
        self.events.append(("delete", obj["metadata"]["name"]))


async def test_informers_see_every_write_in_their_view() -> None:
    manager = FakeManager(FakeClient([(CONFIGMAPS, configmap("old", labels={"app": "web"}))]))
    recorder = Recorder()
    manager.cache.informer(CONFIGMAPS, label_selector="app=web").add_handler(recorder)
    client = manager.client
    await client.create(CONFIGMAPS, configmap("new", labels={"app": "web"}))
    await client.create(CONFIGMAPS, configmap("unrelated"))
    await client.patch(CONFIGMAPS, "new", {"data": {"k": "w"}}, "ns")
    await client.patch(CONFIGMAPS, "old", {"metadata": {"labels": {"app": "db"}}}, "ns")  # leaves the view
    await client.patch(CONFIGMAPS, "unrelated", {"metadata": {"labels": {"app": "web"}}}, "ns")  # enters it
    await client.delete(CONFIGMAPS, "new", "ns")
    assert recorder.events == [
        ("initial", "old"),
        ("add", "new"),
        ("update", "new"),
        ("delete", "old"),
        ("add", "unrelated"),
        ("delete", "new"),
    ]


async def test_the_framework_example_reconciler_runs_on_the_fakes() -> None:
    mirror = runpy.run_path(str(EXAMPLE))  # examples/ is not a package; __main__ does not run
    manager = FakeManager()
    source = configmap("cfg", "src", labels={"opsync.dev/mirror": "true"}, annotations={"opsync.dev/mirror-to": "a, b"})
    await manager.client.create(CONFIGMAPS, source)
    reconciler = mirror["Mirror"](cast(Manager, manager))
    await reconciler.reconcile(Request("src", "cfg"))
    copies = manager.client.objects(CONFIGMAPS, label_selector="opsync.dev/mirror-of=src")
    assert [(c["metadata"]["namespace"], c["data"]) for c in copies] == [("a", {"k": "v"}), ("b", {"k": "v"})]
    await manager.client.patch(CONFIGMAPS, "cfg", {"metadata": {"annotations": {"opsync.dev/mirror-to": "b"}}}, "src")
    await reconciler.reconcile(Request("src", "cfg"))
    copies = manager.client.objects(CONFIGMAPS, label_selector="opsync.dev/mirror-of=src")
    assert [c["metadata"]["namespace"] for c in copies] == ["b"]


async def test_a_built_controller_runs_on_the_fakes() -> None:
    manager = FakeManager(FakeClient([(CONFIGMAPS, configmap("a"))]))
    seen: list[Request] = []

    class Reconciler:
        async def reconcile(self, request: Request) -> None:
            seen.append(request)

    controller = Builder(manager, "fake-built").for_(CONFIGMAPS).complete(Reconciler())
    assert manager.runnables == [controller]
    stopping = asyncio.Event()
    task = asyncio.create_task(controller.run(stopping))
    await manager.client.create(CONFIGMAPS, configmap("b"))
    await eventually(lambda: len(seen) == 2)
    stopping.set()
    await task
    assert sorted(seen) == [Request("ns", "a"), Request("ns", "b")]
