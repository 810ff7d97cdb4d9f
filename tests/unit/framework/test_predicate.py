"""Predicates (``opsync.predicate``): which events pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opsync.handler import EnqueueHandler, object_request
from opsync.predicate import (
    OwnWrites,
    Predicate,
    and_,
    annotation_changed,
    generation_changed,
    label_selector,
    not_,
    or_,
    resource_version_changed,
)
from opsync.queue import WorkQueue
from opsync.reconcile import Request
from opsync.resources import KubeObject
from opsync.testing import take_ready


def handled(map_fn: Callable[[KubeObject], Any], *predicates: Predicate) -> tuple[EnqueueHandler, WorkQueue[Request]]:
    queue: WorkQueue[Request] = WorkQueue()
    return EnqueueHandler(queue, map_fn, predicates), queue


def obj(name: str = "a", namespace: str = "ns", **meta: Any) -> KubeObject:
    return {"metadata": {"name": name, "namespace": namespace, **meta}}


def labelled(**labels: str) -> KubeObject:
    return obj(labels=labels)


def annotated(**annotations: str) -> KubeObject:
    return obj(annotations=annotations)


def test_default_predicate_passes_everything() -> None:
    p = Predicate()
    assert p.create(obj()) and p.update(obj(), obj()) and p.delete(obj())


def test_generation_changed() -> None:
    p = generation_changed()
    assert p.update(obj(generation=1), obj(generation=2))
    assert not p.update(obj(generation=1), obj(generation=1))
    assert not p.update(obj(), obj())  # kinds without a generation never pass updates
    assert p.create(obj()) and p.delete(obj())


def test_annotation_changed() -> None:
    any_key, one_key = annotation_changed(), annotation_changed("restart")
    assert any_key.update(annotated(a="1"), annotated(a="2"))
    assert any_key.update(obj(), annotated(a="1"))
    assert not any_key.update(annotated(a="1"), annotated(a="1"))
    assert one_key.update(annotated(restart="1"), annotated(restart="2"))
    assert one_key.update(obj(), annotated(restart="1"))
    assert not one_key.update(annotated(restart="1", a="1"), annotated(restart="1", a="2"))


def test_label_selector() -> None:
    p = label_selector({"matchLabels": {"opsync.dev/mirror": "true"}})
    assert p.create(labelled(**{"opsync.dev/mirror": "true"}))
    assert not p.create(labelled(other="x"))
    assert not p.delete(obj())
    assert p.update(obj(), labelled(**{"opsync.dev/mirror": "true"}))  # judged on the new object
    assert not p.update(labelled(**{"opsync.dev/mirror": "true"}), obj())
    exists = label_selector({"matchExpressions": [{"key": "tier", "operator": "Exists"}]})
    assert exists.create(labelled(tier="db")) and not exists.create(obj())


def test_resource_version_changed() -> None:
    p = resource_version_changed()
    assert p.update(obj(resourceVersion="1"), obj(resourceVersion="2"))
    assert not p.update(obj(resourceVersion="1"), obj(resourceVersion="1"))


def test_combinators() -> None:
    yes, no = (
        Predicate(),
        Predicate(on_create=lambda _: False, on_update=lambda _o, _n: False, on_delete=lambda _: False),
    )
    o = obj()
    assert and_(yes, yes).create(o) and not and_(yes, no).create(o)
    assert or_(no, yes).update(o, o) and not or_(no, no).update(o, o)
    assert not_(no).delete(o) and not not_(yes).delete(o)
    assert and_().create(o) and not or_().create(o)


async def test_subclassed_predicate() -> None:
    class OnlyDeletes(Predicate):
        def create(self, obj: KubeObject) -> bool:
            return False

        def update(self, old: KubeObject, new: KubeObject) -> bool:
            return False

    handler, queue = handled(object_request, OnlyDeletes())
    handler.on_add(obj("a"), False)
    handler.on_update(obj("b"), obj("b"))
    handler.on_delete(obj("c"))
    assert await take_ready(queue) == {Request("ns", "c")}


def test_own_writes_drop_the_echo_of_each_write_once() -> None:
    own = OwnWrites()
    p = own.predicate()
    own.record(obj("a", resourceVersion="5"))
    own.record(obj("b", resourceVersion="7"))
    assert not p.create(obj("a", resourceVersion="5")), "the echo of a create"
    assert p.update(obj("a", resourceVersion="5"), obj("a", resourceVersion="5")), "seen once: a replay passes"
    assert p.update(obj("b", resourceVersion="6"), obj("b", resourceVersion="8")), "someone else's later change"
    assert not len(own), "an event of another version clears the record"
    own.record(obj("c", namespace="other", resourceVersion="9"))
    assert p.create(obj("c", resourceVersion="9")), "same name, another namespace"
    assert not p.update(obj("c", "other", resourceVersion="8"), obj("c", "other", resourceVersion="9"))


def test_own_writes_let_deletes_and_forgotten_writes_pass() -> None:
    own = OwnWrites()
    p = own.predicate()
    own.record(obj("a", resourceVersion="5"))
    assert p.delete(obj("a", resourceVersion="5"))
    assert not len(own)
    own.record(obj("a", resourceVersion="6"))
    own.forget("ns", "a")
    assert p.update(obj("a", resourceVersion="5"), obj("a", resourceVersion="6"))
    own.record(obj("a"))  # no resourceVersion (a fake server): nothing to tell an echo by
    assert not len(own)
    own.record(obj("a", resourceVersion="7"), cached=obj("a", resourceVersion="7"))  # its echo came first
    assert not len(own)
    own.record(obj("a", resourceVersion="8"), cached=obj("a", resourceVersion="7"))
    assert len(own) == 1


async def test_own_writes_in_a_handler() -> None:
    own = OwnWrites()
    handler, queue = handled(object_request, own.predicate())
    own.record(obj("a", resourceVersion="2"))
    handler.on_add(obj("a", resourceVersion="2"), False)
    handler.on_add(obj("b", resourceVersion="3"), False)
    assert await take_ready(queue) == {Request("ns", "b")}
    handler.on_update(obj("a", resourceVersion="2"), obj("a", resourceVersion="4"))
    assert await take_ready(queue) == {Request("ns", "a")}
