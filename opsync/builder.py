"""Declaring a controller: controller-runtime's ``pkg/builder``.

``Builder(manager, "name").for_(KIND).owns(OTHER).watches(THIRD, map_fn).complete(reconciler)`` creates the
informers on the manager's cache, the ``Controller`` with one source per watch, and adds it to the manager.
``watches_source`` adds a source that exists already: a ``Kind`` over an informer someone else made, or a
``Channel`` that code fires. The controller itself never sees the manager: the builder needs only something
with a ``cache`` and an ``add`` (``Host``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from opsync.controller import Controller
from opsync.handler import MapFn, controller_owner, object_request
from opsync.informer import Transform
from opsync.metrics import PROMETHEUS, MetricsProvider
from opsync.predicate import Predicate
from opsync.queue import RateLimiter
from opsync.reconcile import Reconciler, Request
from opsync.resources import Resource
from opsync.source import InformerLike, Kind, Source


class Informers(Protocol):
    """What the builder needs of a cache (``Cache``, or ``opsync.testing.FakeCache``)."""

    def informer(
        self,
        resource: Resource,
        *,
        label_selector: str | None = None,
        transform: Transform | None = None,
    ) -> InformerLike: ...


class Host(Protocol):
    """What the builder needs of a manager (``Manager``, or ``opsync.testing.FakeManager``): a cache, and a
    way to run the controller."""

    @property
    def cache(self) -> Informers: ...

    def add(self, runnable: Controller, *, leader_only: bool = True) -> None: ...


@dataclass
class _Watch:
    resource: Resource
    map_fn: MapFn | None  # None: the controller owner (``owns``), resolved once the primary kind is known
    predicates: Sequence[Predicate] = ()
    label_selector: str | None = None
    transform: Transform | None = None


@dataclass
class _Options:
    workers: int = 1
    reconcile_timeout: float | None = None
    rate_limiter: RateLimiter[Request] | None = None
    cache_sync_timeout: float = 120.0
    metrics_provider: MetricsProvider | None = PROMETHEUS


class Builder:
    """Declares a controller and adds it to a manager (``Builder(manager, "x").for_(KIND).complete(r)``)."""

    def __init__(self, manager: Host, name: str) -> None:
        if not name:
            raise ValueError("a controller needs a name")
        self._manager = manager
        self._name = name
        self._primary: Resource | None = None
        self._watches: list[_Watch] = []
        self._sources: list[Source] = []
        self._options = _Options()

    def for_(
        self,
        resource: Resource,
        *,
        predicates: Sequence[Predicate] = (),
        label_selector: str | None = None,
        transform: Transform | None = None,
    ) -> Builder:
        """Reconcile objects of ``resource``: each event enqueues the object itself."""
        if self._primary is not None:
            raise ValueError(f"controller {self._name}: for_ was already called")
        self._primary = resource
        self._watches.append(_Watch(resource, object_request, predicates, label_selector, transform))
        return self

    def owns(self, resource: Resource, *, predicates: Sequence[Predicate] = ()) -> Builder:
        """Reconcile the controller owner (of the ``for_`` kind) of each changed ``resource`` object."""
        self._watches.append(_Watch(resource, None, predicates))
        return self

    def watches(
        self,
        resource: Resource,
        map_fn: MapFn,
        *,
        predicates: Sequence[Predicate] = (),
        label_selector: str | None = None,
        transform: Transform | None = None,
    ) -> Builder:
        """Reconcile what ``map_fn`` returns for each changed ``resource`` object."""
        self._watches.append(_Watch(resource, map_fn, predicates, label_selector, transform))
        return self

    def watches_source(self, *sources: Source) -> Builder:
        """Reconcile what existing ``sources`` deliver (a ``Kind`` over an informer made elsewhere, a
        ``Channel``...); the controller waits for them to sync as for its own informers."""
        self._sources.extend(sources)
        return self

    def with_options(
        self,
        *,
        workers: int = 1,
        reconcile_timeout: float | None = None,
        rate_limiter: RateLimiter[Request] | None = None,
        cache_sync_timeout: float = 120.0,
        metrics_provider: MetricsProvider | None = PROMETHEUS,
    ) -> Builder:
        """Concurrency (``workers``), a per-reconcile timeout, the queue's rate limiter, the sync timeout, and
        where the controller's metrics go (see ``Controller``)."""
        self._options = _Options(workers, reconcile_timeout, rate_limiter, cache_sync_timeout, metrics_provider)
        return self

    def complete(self, reconciler: Reconciler) -> Controller:
        """Build the controller, start its sources (event handlers on the manager's cache), add it to the
        manager."""
        if not self._watches and not self._sources:
            raise ValueError(f"controller {self._name}: call for_, watches or watches_source first")
        primary = self._primary
        if primary is None and any(watch.map_fn is None for watch in self._watches):
            raise ValueError(f"controller {self._name}: owns needs for_ to know the owner kind")
        opts = self._options
        controller = Controller(
            self._name,
            reconciler,
            workers=opts.workers,
            reconcile_timeout=opts.reconcile_timeout,
            rate_limiter=opts.rate_limiter,
            cache_sync_timeout=opts.cache_sync_timeout,
            metrics_provider=opts.metrics_provider,
        )
        for watch in self._watches:
            informer = self._manager.cache.informer(
                watch.resource, label_selector=watch.label_selector, transform=watch.transform
            )
            map_fn = watch.map_fn
            if map_fn is None:
                assert primary is not None
                map_fn = controller_owner(primary)
            controller.watch(Kind(informer, map_fn, watch.predicates))
        for source in self._sources:
            controller.watch(source)
        self._manager.add(controller)
        return controller
