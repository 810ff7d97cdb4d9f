"""Informer events to work-queue keys: controller-runtime's ``pkg/handler``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from opsync.predicate import Predicate
from opsync.queue import WorkQueue
from opsync.reconcile import Request
from opsync.resources import KubeObject, Resource

MapFn = Callable[[KubeObject], Iterable[Request]]
"""Maps a watched object to the requests it should trigger."""


def object_request(obj: KubeObject) -> list[Request]:
    """The object itself (the mapping used for the primary kind)."""
    return [Request.of(obj)]


def controller_owner(owner: Resource) -> MapFn:
    """Maps an object to its controller owner (the ``ownerReferences`` entry with ``controller: true``) if
    that owner is an ``owner`` (same group and kind; the version does not matter)."""

    def requests(obj: KubeObject) -> list[Request]:
        meta = obj.get("metadata") or {}
        for ref in meta.get("ownerReferences") or []:
            group = str(ref.get("apiVersion", "")).rpartition("/")[0]
            if ref.get("controller") and ref.get("kind") == owner.kind and group == owner.group:
                namespace = (meta.get("namespace") or "") if owner.namespaced else ""
                return [Request(namespace, ref["name"])]
        return []

    return requests


class EnqueueHandler:
    """An informer event handler: events that pass every predicate are mapped to requests and enqueued.

    An update enqueues what both the old and the new object map to, so a changed owner or label also
    reaches the request the object no longer maps to.
    """

    def __init__(self, queue: WorkQueue[Request], map_fn: MapFn, predicates: Sequence[Predicate] = ()) -> None:
        self._queue = queue
        self._map = map_fn
        self._predicates = tuple(predicates)

    def on_add(self, obj: KubeObject, is_initial_list: bool) -> None:
        if all(p.create(obj) for p in self._predicates):
            self._enqueue(self._map(obj))

    def on_update(self, old: KubeObject, new: KubeObject) -> None:
        if all(p.update(old, new) for p in self._predicates):
            self._enqueue([*self._map(old), *self._map(new)])

    def on_delete(self, obj: KubeObject) -> None:
        if all(p.delete(obj) for p in self._predicates):
            self._enqueue(self._map(obj))

    def _enqueue(self, requests: Iterable[Request]) -> None:
        for request in requests:
            self._queue.add(request)
