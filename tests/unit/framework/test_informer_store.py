"""The informer's store (lookups, indexes, relist diffs), its backoff, and its 410 ladder on a scripted client."""

from __future__ import annotations

import asyncio
import json
import marshal
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from opsync.cache import metadata_only
from opsync.client import Client, GoneError, WatchEvent
from opsync.informer import Backoff, Informer, compact
from opsync.resources import CONFIGMAPS, KubeObject, Resource
from opsync.store import Store
from opsync.testing import FakeClock


def obj(name: str, namespace: str = "ns", rv: str = "1", **labels: str) -> KubeObject:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "resourceVersion": rv, "labels": labels}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}


def managed_secret(i: int) -> KubeObject:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": f"database-{i}",
            "namespace": "team-a",
            "uid": f"5d1c1b0e-{i:04d}-4f8e-9d55-3b3a0c2e{i:04d}",
            "resourceVersion": str(81234 + 7 * i),
            "creationTimestamp": f"2026-12-06T08:{i % 60:02d}:11Z",
            "annotations": {
                "operator.1password.io/item-path": f"vaults/infra/items/database {i}",
                "operator.1password.io/item-version": str(i % 9 + 1),
                "opsync.dev/data-digest": f"sha256:{i:064x}",
            },
            "ownerReferences": [
                {
                    "apiVersion": "onepassword.com/v1",
                    "kind": "OnePasswordItem",
                    "name": f"database-{i}",
                    "uid": f"0c9e2f51-{i:04d}-4e1a-8b0d-9f1f2e7a{i:04d}",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "data": {"username": f"YWRtaW4{i:03d}=", "password": f"cGFzc3dvcmQ{i:05d}xk=="},
    }


def by_app(o: KubeObject) -> list[str]:
    app = o["metadata"]["labels"].get("app")
    return [app] if app else []


def names(objects: list[KubeObject]) -> list[str]:
    return sorted(o["metadata"]["name"] for o in objects)


class Recorder:
    """An event handler noting (event, name, resourceVersion detail) tuples."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []

    def on_add(self, o: KubeObject, is_initial_list: bool) -> None:
        self.events.append(("add", o["metadata"]["name"], is_initial_list))

    def on_update(self, old: KubeObject, new: KubeObject) -> None:
        rvs = (old["metadata"]["resourceVersion"], new["metadata"]["resourceVersion"])
        self.events.append(("update", new["metadata"]["name"], rvs))

    def on_delete(self, o: KubeObject) -> None:
        self.events.append(("delete", o["metadata"]["name"], None))


def test_get_and_list_by_namespace() -> None:
    store = Store()
    store.put(obj("a", "one"))
    store.put(obj("b", "two"))
    store.put(obj("node", ""))
    assert store.get("one", "a") == obj("a", "one")
    assert store.get("two", "a") is None
    assert names(store.list("one")) == ["a"]
    assert names(store.list()) == ["a", "b", "node"]
    assert store.get("", "node") is not None
    assert len(store) == 3


def test_put_returns_the_replaced_object_and_remove_the_removed_one() -> None:
    store = Store()
    assert store.put(obj("a", rv="1")) is None
    assert store.put(obj("a", rv="2")) == obj("a", rv="1")
    assert store.remove(("ns", "a")) == obj("a", rv="2")
    assert store.remove(("ns", "a")) is None
    assert store.list() == []


def test_an_index_follows_adds_updates_and_deletes() -> None:
    store = Store()
    store.add_indexer("app", by_app)
    store.put(obj("a", app="web"))
    store.put(obj("b", app="web"))
    assert names(store.by_index("app", "web")) == ["a", "b"]

    store.put(obj("a", rv="2", app="db"))  # relabelled: leaves "web", joins "db"
    assert names(store.by_index("app", "web")) == ["b"]
    assert names(store.by_index("app", "db")) == ["a"]

    store.remove(("ns", "b"))
    assert store.by_index("app", "web") == []
    assert names(store.by_index("app", "db")) == ["a"]


def test_reads_are_copies_so_changing_one_never_changes_the_cache() -> None:
    store = Store()
    store.add_indexer("app", by_app)
    store.put(obj("a", app="web"))
    read = store.get("ns", "a")
    assert read is not None
    read["metadata"]["labels"]["app"] = "changed"
    store.list()[0]["metadata"]["name"] = "renamed"
    assert store.get("ns", "a") == obj("a", app="web")
    assert store.by_index("app", "web") == [obj("a", app="web")]
    assert store.by_index("app", "web")[0] is not store.by_index("app", "web")[0]


def test_objects_of_one_kind_are_held_in_a_fraction_of_their_size_and_read_back_equal() -> None:
    store = Store()
    secrets = [managed_secret(i) for i in range(50)]
    for secret in secrets:
        store.put(secret)
    assert [store.get("team-a", f"database-{i}") for i in range(50)] == secrets
    held = sum(len(blob) for names in store._items.values() for blob in names.values())
    marshalled = sum(len(marshal.dumps(secret)) for secret in secrets)
    assert held < marshalled * 0.6


def test_the_shared_dictionary_holds_no_value_but_small_shared_ones() -> None:
    store = Store()
    first = managed_secret(0)
    first["data"]["type"] = "c3VwZXItc2VjcmV0LXR5cGUtdmFsdWU="  # a secret under a key whose values are shared
    store.put(first)
    store.remove(("team-a", "database-0"))
    dictionary = store._codec._zdict
    assert dictionary is not None
    for kept in (b"annotations", b"operator.1password.io/item-path", b"password", b"Opaque", b"team-a"):
        assert kept in dictionary
    for value in (b"c3VwZXItc2VjcmV0", b"cGFzc3dvcmQ", b"database-0", b"vaults/infra"):
        assert value not in dictionary


def test_index_keys_and_values_follow_every_change_without_reading_objects() -> None:
    store = Store()
    store.add_indexer("app", by_app)
    store.put(obj("a", app="web"))
    assert store.index_values("app") == ["web"]
    assert store.index_keys("app", "web") == [("ns", "a")]
    store.put(obj("b", app="web"))
    store.put(obj("c", "other", app="web"))
    assert store.index_keys("app", "web") == [("ns", "a"), ("ns", "b"), ("other", "c")]
    store.remove(("ns", "a"))
    store.put(obj("c", "other", app="db"))  # moved to another value
    assert store.index_keys("app", "web") == [("ns", "b")]
    assert sorted(store.index_values("app")) == ["db", "web"]
    store.put(obj("b", rv="2", app="web"))  # the same value again: still indexed once
    assert store.index_keys("app", "web") == [("ns", "b")]
    store.remove(("ns", "b"))
    assert store.index_values("app") == ["db"]
    assert store.index_keys("app", "web") == []
    with pytest.raises(KeyError):
        store.index_values("missing")


def test_an_indexer_added_later_indexes_what_is_stored() -> None:
    store = Store()
    store.put(obj("a", app="web"))
    store.put(obj("b"))
    store.add_indexer("app", by_app)
    assert names(store.by_index("app", "web")) == ["a"]
    with pytest.raises(ValueError, match="already exists"):
        store.add_indexer("app", by_app)
    with pytest.raises(KeyError):
        store.by_index("missing", "web")


def test_a_failing_indexer_leaves_the_object_stored_but_unindexed() -> None:
    store = Store()

    def broken(o: KubeObject) -> list[str]:
        raise RuntimeError("bug")

    store.add_indexer("broken", broken)
    store.put(obj("a"))
    assert store.get("ns", "a") is not None
    assert store.by_index("broken", "anything") == []


def test_replace_reports_adds_changes_and_deletions_only() -> None:
    store = Store()
    store.add_indexer("app", by_app)
    for o in (obj("same"), obj("changed", app="web"), obj("gone", app="web")):
        store.put(o)

    listed = [obj("same"), obj("changed", rv="2"), obj("new", app="web")]
    deltas = [(d.old, d.new) for d in store.replace([store.freeze(o) for o in listed])]

    assert (obj("changed", app="web"), obj("changed", rv="2")) in deltas
    assert (None, obj("new", app="web")) in deltas
    assert (obj("gone", app="web"), None) in deltas  # the tombstone: an object that vanished meanwhile
    assert len(deltas) == 3  # nothing for the unchanged object
    assert names(store.list()) == ["changed", "new", "same"]
    assert names(store.by_index("app", "web")) == ["new"]


def test_replace_within_a_namespace_leaves_other_namespaces_alone() -> None:
    store = Store()
    store.put(obj("a", "one"))
    store.put(obj("b", "two"))
    deltas = store.replace([], "one")
    assert [(d.old, d.new) for d in deltas] == [(obj("a", "one"), None)]
    assert names(store.list()) == ["b"]


def test_an_object_equal_to_the_stored_one_is_no_change_even_when_marshal_spells_it_otherwise() -> None:
    store = Store()
    store.put(obj("a", app="".join(["w", "eb"])))  # a value only this object holds
    again = obj("a", app="web")  # the same value, a constant other references hold too
    # marshal marks a string with other references: the same object, other bytes.
    assert store.freeze(again).blob != store.freeze(obj("a", app="".join(["w", "eb"]))).blob
    assert store.replace([store.freeze(again)]) == []


def test_deltas_hold_bytes_and_decode_a_new_copy_on_each_read() -> None:
    store = Store()
    (delta,) = store.replace([store.freeze(obj("a"))])
    first = delta.new
    assert first is not None
    first["metadata"]["name"] = "changed"
    assert delta.new == obj("a")
    assert delta.old is None


def test_managed_fields_are_stripped_without_touching_the_input() -> None:
    original = {"kind": "Secret", "metadata": {"name": "a", "managedFields": [{"manager": "x"}]}, "data": {"k": "dg=="}}
    stripped = compact(original)
    assert stripped == {"kind": "Secret", "metadata": {"name": "a"}, "data": {"k": "dg=="}}
    assert "managedFields" in original["metadata"]


def test_two_decoded_objects_share_their_keys_but_not_their_values() -> None:
    line = json.dumps({"metadata": {"annotations": {"operator.1password.io/item-path": "vaults/v/items/i"}}, "d": [{}]})
    first, second = compact(json.loads(line)), compact(json.loads(line))
    assert first == second == json.loads(line)
    first_key, second_key = next(iter(first["metadata"]["annotations"])), next(iter(second["metadata"]["annotations"]))
    assert first_key is second_key
    assert first["metadata"]["annotations"][first_key] is not second["metadata"]["annotations"][second_key]


def test_values_from_small_sets_are_shared_but_secret_data_never_is() -> None:
    line = json.dumps(
        {
            "apiVersion": "onepassword.com/v1",
            "kind": "OnePasswordItem",
            "metadata": {"namespace": "team-a-production", "name": "database-credentials"},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "SyncedFromOnePassword"}]},
            "data": {"type": "c3VwZXItc2VjcmV0LXR5cGUtdmFsdWU=", "status": "YW5vdGhlci1zZWNyZXQtdmFsdWU="},
        }
    )
    first, second = compact(json.loads(line)), compact(json.loads(line))
    assert first == second == json.loads(line)
    for path in (("apiVersion",), ("kind",), ("metadata", "namespace")):
        a, b = first, second
        for key in path:
            a, b = a[key], b[key]
        assert a is b, path
    condition_a, condition_b = first["status"]["conditions"][0], second["status"]["conditions"][0]
    assert all(condition_a[k] is condition_b[k] for k in ("type", "status", "reason"))
    assert first["metadata"]["name"] is not second["metadata"]["name"]  # names are many: kept as decoded
    assert all(first["data"][k] is not second["data"][k] for k in ("type", "status"))  # data under shared keys


def test_metadata_only_keeps_identity_and_metadata_but_no_payload() -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "a", "labels": {"x": "y"}, "managedFields": [{}]},
        "data": {"password": "aHVudGVyMg=="},
        "type": "Opaque",
    }
    assert metadata_only(secret) == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "a", "labels": {"x": "y"}},
    }


def test_backoff_doubles_up_to_the_cap_with_full_jitter() -> None:
    clock = FakeClock()
    ceilings = Backoff(clock=clock, rng=lambda: 1.0)
    assert [ceilings.next_delay() for _ in range(8)] == [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0]
    jittered = Backoff(clock=clock, rng=lambda: 0.25)
    assert jittered.next_delay() == pytest.approx(0.2)


def test_backoff_starts_over_after_a_quiet_period() -> None:
    clock = FakeClock()
    backoff = Backoff(clock=clock, rng=lambda: 1.0)
    for _ in range(5):
        backoff.next_delay()
        clock.now += 10  # failures keep coming: no reset
    assert backoff.next_delay() == 25.6
    clock.now += 120  # two minutes without a failure
    assert backoff.next_delay() == 0.8


class ScriptedClient:
    """Answers an informer's LIST and WATCH calls from a script (each entry a result or an error to raise)."""

    def __init__(self, lists: list[KubeObject | Exception], watches: list[list[WatchEvent] | Exception]) -> None:
        self.lists, self.watches = lists, watches
        self.list_calls: list[tuple[str | None, str | None]] = []
        self.watch_calls: list[str] = []

    async def list(self, resource: Resource, namespace: str | None, **options: Any) -> KubeObject:
        self.list_calls.append((options["resource_version"], options["resource_version_match"]))
        result = self.lists.pop(0)
        if isinstance(result, Exception):
            raise result
        return result

    async def watch(self, resource: Resource, namespace: str | None, **options: Any) -> AsyncIterator[WatchEvent]:
        self.watch_calls.append(options["resource_version"])
        result = self.watches.pop(0) if self.watches else []
        if isinstance(result, Exception):
            raise result
        for event in result:
            yield event
        if not self.watches:
            await asyncio.Event().wait()  # the script is over: keep watching quietly


def page(rv: str, *objects: KubeObject) -> KubeObject:
    return {"items": [dict(o) for o in objects], "metadata": {"resourceVersion": rv}}


async def test_the_410_ladder_falls_back_to_a_list_from_scratch_and_reports_the_gap() -> None:
    expired = GoneError(410, "Expired", "too old resource version")
    client = ScriptedClient(
        lists=[page("10", obj("a"), obj("b")), expired, page("20", obj("b", rv="15"), obj("c"))],
        watches=[expired],
    )
    informer = Informer(cast(Client, client), CONFIGMAPS)
    recorder = Recorder()
    informer.add_handler(recorder)
    stopping = asyncio.Event()
    task = asyncio.create_task(informer.run(stopping))
    try:
        async with asyncio.timeout(30):
            while informer.relist_count < 1:
                await asyncio.sleep(0.01)
    finally:
        stopping.set()
        await task

    # The watch expired: relist at the last RV first; refused too, so from scratch ("" = a consistent read).
    assert client.list_calls == [("", None), ("10", "NotOlderThan"), ("", None)]
    assert client.watch_calls[:2] == ["10", "20"]
    assert recorder.events == [
        ("add", "a", True),
        ("add", "b", True),
        ("update", "b", ("1", "15")),
        ("add", "c", False),
        ("delete", "a", None),
    ]
    assert names(informer.list()) == ["b", "c"]
    assert (informer.list_count, informer.relist_count) == (2, 1)


async def test_an_expired_watch_relists_at_the_last_resource_version_and_resumes() -> None:
    client = ScriptedClient(
        lists=[page("10", obj("a")), page("30", obj("a"))],
        watches=[
            [WatchEvent("BOOKMARK", {"metadata": {"resourceVersion": "25"}})],  # a bookmark advances the RV
            GoneError(410, "Expired", "too old resource version"),
        ],
    )
    informer = Informer(cast(Client, client), CONFIGMAPS, watch_timeout=(1, 1))
    recorder = Recorder()
    informer.add_handler(recorder)
    stopping = asyncio.Event()
    task = asyncio.create_task(informer.run(stopping))
    try:
        async with asyncio.timeout(30):
            while len(client.watch_calls) < 3:
                await asyncio.sleep(0.01)
    finally:
        stopping.set()
        await task
    assert client.watch_calls == ["10", "25", "30"]
    assert client.list_calls == [("", None), ("25", "NotOlderThan")]
    assert recorder.events == [("add", "a", True)]  # the relist found nothing new


class NamespacedClient:
    """Serves each namespace's LIST from a dict and WATCHes quietly; notes the namespaces listed."""

    def __init__(self, objects: dict[str, list[KubeObject]]) -> None:
        self.objects = objects
        self.listed: list[str | None] = []

    async def list(self, resource: Resource, namespace: str | None, **options: Any) -> KubeObject:
        self.listed.append(namespace)
        return page("10", *self.objects.get(namespace or "", []))

    async def watch(self, resource: Resource, namespace: str | None, **options: Any) -> AsyncIterator[WatchEvent]:
        await asyncio.Event().wait()
        yield WatchEvent("BOOKMARK", {})  # never reached: makes this an async generator


async def test_namespaces_added_are_listed_and_namespaces_dropped_are_forgotten_without_deletes() -> None:
    client = NamespacedClient({"a": [obj("one", "a")], "b": [obj("two", "b")]})
    informer = Informer(cast(Client, client), CONFIGMAPS, namespaces=[])
    recorder = Recorder()
    informer.add_handler(recorder)
    stopping = asyncio.Event()
    task = asyncio.create_task(informer.run(stopping))
    try:
        async with asyncio.timeout(30):
            await informer.wait_for_sync()  # no namespace yet: synced at once, empty
            informer.set_namespaces(["a", "b"])
            while len(informer.list()) < 2:
                await asyncio.sleep(0.01)
            informer.set_namespaces(["b"])
            assert names(informer.list()) == ["two"]
    finally:
        stopping.set()
        await task
    assert sorted(client.listed, key=str) == ["a", "b"]
    # Objects of a newly watched namespace are ordinary adds; a dropped namespace produces no deletes.
    assert sorted(recorder.events) == [("add", "one", False), ("add", "two", False)]


def test_an_informer_of_all_namespaces_has_no_namespace_list_to_change() -> None:
    informer = Informer(cast(Client, NamespacedClient({})), CONFIGMAPS)
    with pytest.raises(ValueError, match="all namespaces"):
        informer.set_namespaces(["a"])
