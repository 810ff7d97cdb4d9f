"""Informers and the cache against a real apiserver: sync, events, resumed watches, the 410 ladder, scoping."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from secrets import token_hex
from typing import Any

import pytest

from opsync.cache import Cache, metadata_only
from opsync.client import Client, NotFoundError
from opsync.envtest import ControlPlane
from opsync.informer import Informer
from opsync.resources import CONFIGMAPS, CRDS, NAMESPACES, SECRETS, KubeObject, Resource
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


def configmap(name: str, data: dict[str, str] | None = None, **labels: str) -> KubeObject:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": data or {}}


class Recorder:
    """An event handler that writes down what it is told, as (event, name, detail) tuples."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []

    def on_add(self, obj: KubeObject, is_initial_list: bool) -> None:
        self.events.append(("add", obj["metadata"]["name"], is_initial_list))

    def on_update(self, old: KubeObject, new: KubeObject) -> None:
        self.events.append(("update", new["metadata"]["name"], (old.get("data"), new.get("data"))))

    def on_delete(self, obj: KubeObject) -> None:
        self.events.append(("delete", obj["metadata"]["name"], None))

    def saw(self, kind: str, name: str) -> bool:
        return any(e[0] == kind and e[1] == name for e in self.events)


@asynccontextmanager
async def running(informer: Informer | Cache) -> AsyncIterator[None]:
    """Run ``informer`` (or a cache) until the block ends, then stop it and wait for it to return."""
    stopping = asyncio.Event()
    task = asyncio.create_task(informer.run(stopping))
    try:
        yield
    finally:
        stopping.set()
        async with asyncio.timeout(30):
            await task


def named(values: list[KubeObject]) -> list[str]:
    return sorted(o["metadata"]["name"] for o in values)


async def test_initial_list_then_adds_updates_and_deletes(kube: Client, namespace: str) -> None:
    for i in range(3):
        await kube.create(CONFIGMAPS, configmap(f"early-{i}"), namespace)
    # A page size below the object count makes the initial list take several pages.
    informer = Informer(kube, CONFIGMAPS, namespaces=[namespace], page_size=2)
    recorder = Recorder()
    informer.add_handler(recorder)
    async with running(informer):
        assert await informer.wait_for_sync(30)
        assert informer.has_synced()
        initial = {e[1] for e in recorder.events if e[0] == "add" and e[2] is True}
        assert {"early-0", "early-1", "early-2"} <= initial

        await kube.create(CONFIGMAPS, configmap("late", {"k": "1"}), namespace)
        await kube.patch(CONFIGMAPS, "late", {"data": {"k": "2"}}, namespace)
        await kube.delete(CONFIGMAPS, "early-0", namespace)
        await eventually(lambda: recorder.saw("delete", "early-0") and informer.get(namespace, "late") is not None)
        await eventually(lambda: (informer.get(namespace, "late") or {}).get("data") == {"k": "2"})

    assert ("add", "late", False) in recorder.events
    assert ("update", "late", ({"k": "1"}, {"k": "2"})) in recorder.events
    assert informer.get(namespace, "early-0") is None
    cached = informer.get(namespace, "late")
    assert cached is not None
    assert (cached["apiVersion"], cached["kind"]) == ("v1", "ConfigMap")
    assert "managedFields" not in cached["metadata"]
    assert informer.list_count == 1


async def test_a_watch_the_server_ends_is_resumed_without_a_relist(kube: Client, namespace: str) -> None:
    informer = Informer(kube, CONFIGMAPS, namespaces=[namespace], watch_timeout=(2, 2))
    recorder = Recorder()
    informer.add_handler(recorder)
    async with running(informer):
        assert await informer.wait_for_sync(30)
        await kube.create(CONFIGMAPS, configmap("before"), namespace)
        await eventually(lambda: informer.watch_count >= 3)  # the apiserver ended at least two watches
        await kube.create(CONFIGMAPS, configmap("after"), namespace)
        await eventually(lambda: recorder.saw("add", "after"))
    assert informer.list_count == 1
    assert informer.relist_count == 0
    assert [e for e in recorder.events if e[1] == "before"] == [("add", "before", False)]


async def test_an_expired_resource_version_relists_and_reports_what_vanished(
    control_plane: ControlPlane, namespace: str
) -> None:
    client = await control_plane.client()  # its own connections: the apiserver restarts under it
    async with client:
        for name in ("stays", "changes", "goes"):
            await client.create(CONFIGMAPS, configmap(name, {"v": "1"}), namespace)
        informer = Informer(client, CONFIGMAPS, namespaces=[namespace])
        recorder = Recorder()
        informer.add_handler(recorder)
        async with running(informer):
            assert await informer.wait_for_sync(30)
        assert informer.list_count == 1

        # While the informer is not watching: changes it will miss, then its resourceVersion is made too old
        # (etcd history compacted, and a restarted apiserver's watch cache starts after it).
        await client.delete(CONFIGMAPS, "goes", namespace)
        await client.patch(CONFIGMAPS, "changes", {"data": {"v": "2"}}, namespace)
        await client.create(CONFIGMAPS, configmap("new"), namespace)
        await control_plane.compact_etcd()
        await control_plane.restart_apiserver()
        recorder.events.clear()

        async with running(informer):
            await eventually(lambda: informer.relist_count == 1, timeout=60)
            await eventually(lambda: recorder.saw("delete", "goes"))

    assert recorder.saw("delete", "goes")
    assert ("update", "changes", ({"v": "1"}, {"v": "2"})) in recorder.events
    assert ("add", "new", False) in recorder.events
    assert not recorder.saw("update", "stays") and not recorder.saw("delete", "stays")
    assert named(informer.list(namespace)) == ["changes", "new", "stays"]
    assert informer.list_count == 2


async def test_a_label_selector_limits_what_is_cached(kube: Client, namespace: str) -> None:
    await kube.create(CONFIGMAPS, configmap("web", app="web"), namespace)
    await kube.create(CONFIGMAPS, configmap("db", app="db"), namespace)
    informer = Informer(kube, CONFIGMAPS, namespaces=[namespace], label_selector="app=web")
    recorder = Recorder()
    informer.add_handler(recorder)
    async with running(informer):
        assert await informer.wait_for_sync(30)
        assert named(informer.list()) == ["web"]

        # Relabelling in or out of the selector looks like an add or a delete to the informer.
        await kube.patch(CONFIGMAPS, "db", {"metadata": {"labels": {"app": "web"}}}, namespace)
        await kube.patch(CONFIGMAPS, "web", {"metadata": {"labels": {"app": "other"}}}, namespace)
        await eventually(lambda: recorder.saw("add", "db") and recorder.saw("delete", "web"))
        assert named(informer.list()) == ["db"]


def unless_skipped(obj: KubeObject) -> KubeObject | None:
    """A transform that leaves out ConfigMaps labelled ``skip``."""
    return None if (obj["metadata"].get("labels") or {}).get("skip") else obj


async def test_a_transform_returning_none_leaves_objects_out_of_the_cache(kube: Client, namespace: str) -> None:
    await kube.create(CONFIGMAPS, configmap("kept"), namespace)
    await kube.create(CONFIGMAPS, configmap("skipped", skip="yes"), namespace)
    informer = Informer(kube, CONFIGMAPS, namespaces=[namespace], transform=unless_skipped)
    recorder = Recorder()
    informer.add_handler(recorder)
    async with running(informer):
        assert await informer.wait_for_sync(30)
        assert named(informer.list()) == ["kept"]

        # Left out from now on: a delete; no longer left out: an add. Changes to a left-out object go unseen.
        await kube.patch(CONFIGMAPS, "kept", {"metadata": {"labels": {"skip": "yes"}}}, namespace)
        await kube.patch(CONFIGMAPS, "skipped", {"data": {"k": "v"}}, namespace)
        await kube.patch(CONFIGMAPS, "skipped", {"metadata": {"labels": {"skip": None}}}, namespace)
        await eventually(lambda: recorder.saw("delete", "kept") and recorder.saw("add", "skipped"))
        assert named(informer.list()) == ["skipped"]
        assert informer.get(namespace, "skipped")["data"] == {"k": "v"}
        await kube.delete(CONFIGMAPS, "kept", namespace)  # deleted while left out: nothing to tell
        await kube.create(CONFIGMAPS, configmap("marker"), namespace)
        await eventually(lambda: recorder.saw("add", "marker"))
    assert [e[:2] for e in recorder.events] == [
        ("add", "kept"),
        ("delete", "kept"),
        ("add", "skipped"),
        ("add", "marker"),
    ]


@pytest.fixture
async def other_namespaces(kube: Client, namespace: str) -> AsyncIterator[list[str]]:
    """Two more namespaces next to ``namespace``, deleted afterwards."""
    extra = [f"{namespace}-b", f"{namespace}-c"]
    for name in extra:
        await kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield extra
    for name in extra:
        await kube.delete(NAMESPACES, name)


async def test_namespace_scoping_and_an_index_across_namespaces(
    kube: Client, namespace: str, other_namespaces: list[str]
) -> None:
    watched, unwatched = [namespace, other_namespaces[0]], other_namespaces[1]
    for ns in (*watched, unwatched):
        await kube.create(CONFIGMAPS, configmap(f"cm-{ns}", app="web"), ns)
    informer = Informer(kube, CONFIGMAPS, namespaces=watched)
    informer.add_indexer("app", lambda cm: [cm["metadata"]["labels"].get("app", "")])
    async with running(informer):
        assert await informer.wait_for_sync(30)
        assert {o["metadata"]["namespace"] for o in informer.list()} == set(watched)
        assert named(informer.list(namespace)) == [f"cm-{namespace}"]
        assert named(informer.by_index("app", "web")) == sorted(f"cm-{ns}" for ns in watched)

        await kube.patch(CONFIGMAPS, f"cm-{namespace}", {"metadata": {"labels": {"app": "db"}}}, namespace)
        await kube.create(CONFIGMAPS, configmap("ignored", app="db"), unwatched)
        await eventually(lambda: named(informer.by_index("app", "db")) == [f"cm-{namespace}"])
        assert named(informer.by_index("app", "web")) == [f"cm-{other_namespaces[0]}"]
        assert informer.get(unwatched, "ignored") is None


async def test_indexers_and_handlers_added_after_sync_see_the_cache(kube: Client, namespace: str) -> None:
    await kube.create(CONFIGMAPS, configmap("a", app="web"), namespace)
    informer = Informer(kube, CONFIGMAPS, namespaces=[namespace])
    async with running(informer):
        assert await informer.wait_for_sync(30)
        informer.add_indexer("app", lambda cm: [cm["metadata"]["labels"].get("app", "")])
        assert named(informer.by_index("app", "web")) == ["a"]

        late = Recorder()
        informer.add_handler(late)
        assert late.events == [("add", "a", True)]  # replayed as part of the initial state

        await kube.create(CONFIGMAPS, configmap("b", app="web"), namespace)
        await eventually(lambda: named(informer.by_index("app", "web")) == ["a", "b"])
        assert ("add", "b", False) in late.events


async def test_a_failing_handler_does_not_stop_the_informer(kube: Client, namespace: str) -> None:
    class Broken(Recorder):
        def on_add(self, obj: KubeObject, is_initial_list: bool) -> None:
            raise RuntimeError("handler bug")

    informer = Informer(kube, CONFIGMAPS, namespaces=[namespace])
    recorder = Recorder()
    informer.add_handler(Broken())
    informer.add_handler(recorder)
    async with running(informer):
        assert await informer.wait_for_sync(30)
        await kube.create(CONFIGMAPS, configmap("a"), namespace)
        await kube.create(CONFIGMAPS, configmap("b"), namespace)
        await eventually(lambda: recorder.saw("add", "a") and recorder.saw("add", "b"))


async def test_the_cache_shares_informers_and_scopes_them(kube: Client, namespace: str) -> None:
    cache = Cache(kube, namespaces=[namespace])
    configmaps = cache.informer(CONFIGMAPS)
    assert cache.informer(CONFIGMAPS) is configmaps
    assert cache.informer(CONFIGMAPS, label_selector="app=web") is not configmaps
    await kube.create(CONFIGMAPS, configmap("mine"), namespace)
    await kube.create(
        SECRETS,
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"password": "hunter2"}},
        namespace,
    )

    async with running(cache):
        assert await cache.wait_for_sync(30)
        assert cache.has_synced()
        assert {o["metadata"]["namespace"] for o in configmaps.list()} == {namespace}
        # Cluster-scoped kinds are not limited to the cache's namespaces.
        namespaces = cache.informer(NAMESPACES)  # made while the cache runs: started at once
        assert await cache.wait_for_sync(30)
        assert {"default", "kube-system", namespace} <= set(named(namespaces.list()))

        secrets = cache.informer(SECRETS, transform=metadata_only)
        await eventually(secrets.has_synced)
        cached = secrets.get(namespace, "s")
        assert cached is not None
        assert cached["metadata"]["name"] == "s"
        assert "data" not in cached


async def test_an_optional_informer_syncs_empty_until_its_crd_is_installed(kube: Client) -> None:
    group = f"t{token_hex(4)}.opsync.dev"
    widgets = Resource(group, "v1", "Widget", "widgets", namespaced=False)
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Cluster",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                }
            ],
        },
    }
    informer = Informer(kube, widgets, optional=True)
    recorder = Recorder()
    informer.add_handler(recorder)
    async with running(informer):
        assert await informer.wait_for_sync(30), "a kind that is not served must count as empty, not block sync"
        assert informer.list() == []

        await kube.create(CRDS, crd)
        try:

            async def created() -> bool:
                try:
                    await kube.create(
                        widgets, {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w"}}
                    )
                except NotFoundError:  # the CRD is not established yet
                    return False
                return True

            await eventually(created, timeout=30)
            await eventually(lambda: informer.get("", "w") is not None, timeout=60, message="the CRD was not picked up")
        finally:
            await kube.delete(CRDS, crd["metadata"]["name"])
        # Removing the CRD removes its objects: the informer reports the delete and stays synced.
        await eventually(lambda: recorder.saw("delete", "w"), timeout=60)
        assert informer.has_synced()
