"""Where a controller's keys come from: controller-runtime's ``pkg/source``.

- ``Kind``: the events of an informer (one the builder creates from a ``Resource``, or one that exists
  already, such as another component's cache), mapped to requests and filtered by predicates.
- ``Channel``: requests that code pushes (a poller that finds what changed outside Kubernetes).

A controller starts each source with its work queue before it runs, and waits for every source to sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from opsync.handler import EnqueueHandler, MapFn, object_request
from opsync.informer import ResourceEventHandler
from opsync.predicate import Predicate
from opsync.queue import WorkQueue
from opsync.reconcile import Request


class InformerLike(Protocol):
    """An ``Informer``, or anything that calls event handlers and knows when it has synced."""

    def add_handler(self, handler: ResourceEventHandler) -> None: ...

    async def wait_for_sync(self, timeout: float | None = None) -> bool: ...  # noqa: ASYNC109 - Informer's API


class Source(Protocol):
    """Feeds one controller's work queue."""

    def start(self, queue: WorkQueue[Request]) -> None:
        """Deliver requests into ``queue`` from now on (called once per controller, before it runs)."""
        ...

    async def wait_for_sync(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - Informer's API
        """True once the source has delivered its initial state; the controller waits before reconciling."""
        ...


class Kind:
    """An informer's events, filtered by ``predicates`` and mapped to requests by ``map_fn``."""

    def __init__(
        self, informer: InformerLike, map_fn: MapFn = object_request, predicates: Sequence[Predicate] = ()
    ) -> None:
        self.informer = informer
        self._map = map_fn
        self._predicates = tuple(predicates)

    def start(self, queue: WorkQueue[Request]) -> None:
        """Register an event handler on the informer that enqueues into ``queue``."""
        self.informer.add_handler(EnqueueHandler(queue, self._map, self._predicates))

    async def wait_for_sync(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - Informer's API
        """The informer's sync."""
        return await self.informer.wait_for_sync(timeout)


class Channel:
    """Requests pushed by code rather than by informers; ``fire`` them into the controllers watching it."""

    def __init__(self) -> None:
        self._queues: list[WorkQueue[Request]] = []

    def start(self, queue: WorkQueue[Request]) -> None:
        """Deliver fired requests into ``queue`` too."""
        self._queues.append(queue)

    async def wait_for_sync(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - Informer's API
        """Always synced: a channel has no initial state."""
        return True

    def fire(self, request: Request, *, even_in_backoff: bool = False) -> bool:
        """Ask every watching controller to reconcile ``request``; True if any enqueued it.

        A controller retrying ``request`` with backoff already is left to its backoff (its next retry sees the
        latest state anyway), unless ``even_in_backoff``: then it is tried at once, as when the outage it
        waits out just ended.
        """
        enqueued = False
        for queue in self._queues:
            if even_in_backoff or queue.num_requeues(request) == 0:
                queue.add(request)
                enqueued = True
        return enqueued
