"""Controllers: informer events become work-queue keys, and workers run a reconciler on each key.

A controller watches one primary kind (``for_``), optionally the kinds it creates (``owns``: an event on an
owned object reconciles its controller owner) and anything else (``watches`` with a map function). Events
pass through predicates, become ``Request`` keys on a ``WorkQueue``, and ``workers`` tasks reconcile them
one key at a time. What happens after a reconcile follows controller-runtime exactly:

============================  ==================================  =====================================
reconcile outcome             queue                               ``controller_runtime_reconcile_total``
============================  ==================================  =====================================
raises (or times out)         ``add_rate_limited`` (backoff)      ``error`` (+ ``reconcile_errors_total``)
raises ``TerminalError``      ``forget``, no retry                ``error`` (+ ``terminal_...``)
``Result(requeue_after=d)``   ``forget`` then ``add_after(d)``    ``requeue_after``
``Result(requeue=True)``      ``add_rate_limited``                ``requeue``
``None`` / ``Result()``       ``forget``                          ``success``
============================  ==================================  =====================================
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from opsync import metrics
from opsync.informer import ResourceEventHandler
from opsync.labels import selector_matches
from opsync.logging import log_context
from opsync.queue import RateLimiter, ShutDown, WorkQueue
from opsync.resources import KubeObject, NamespacedName, Resource

if TYPE_CHECKING:
    from opsync.manager import Manager

log = logging.getLogger(__name__)

Request = NamespacedName
"""What a reconciler is asked to reconcile: the namespace and name of one object."""

MapFn = Callable[[KubeObject], Iterable[Request]]
"""Maps a watched object to the requests it should trigger."""


@dataclass(frozen=True, slots=True)
class Result:
    """What a reconcile asks for next: nothing, a reconcile after a delay, or a retry with backoff."""

    requeue_after: float | None = None
    requeue: bool = False


class TerminalError(Exception):
    """A failure retrying cannot fix (an invalid spec, a missing permission on purpose...).

    The key is not requeued; the next event on the object reconciles it again.
    """


class ReconcileTimeoutError(TimeoutError):
    """The reconcile ran longer than the controller's ``reconcile_timeout`` and was cancelled."""


class CacheSyncTimeoutError(TimeoutError):
    """The controller's informers did not sync within ``cache_sync_timeout``."""


class EventSource(Protocol):
    """Where a controller's events come from: an ``Informer``, or anything that behaves like one."""

    def add_handler(self, handler: ResourceEventHandler) -> None: ...

    async def wait_for_sync(self, timeout: float | None = None) -> bool: ...  # noqa: ASYNC109 - Informer's API


class Reconciler(Protocol):
    """Makes the world match one object's desired state; must be idempotent."""

    async def reconcile(self, request: Request) -> Result | None: ...


# --- predicates ------------------------------------------------------------------------------------------


def _meta(obj: KubeObject) -> dict[str, Any]:
    meta: dict[str, Any] = obj.get("metadata") or {}
    return meta


@dataclass(frozen=True)
class Predicate:
    """Filters events before they are enqueued; each kind of event passes unless its function says no.

    Build one from functions (``Predicate(on_update=lambda old, new: ...)``), with the helpers below, or
    subclass it and override ``create``/``update``/``delete``.
    """

    on_create: Callable[[KubeObject], bool] | None = None
    on_update: Callable[[KubeObject, KubeObject], bool] | None = None
    on_delete: Callable[[KubeObject], bool] | None = None

    def create(self, obj: KubeObject) -> bool:
        """Whether an added object (including those of the initial list) is enqueued."""
        return self.on_create is None or self.on_create(obj)

    def update(self, old: KubeObject, new: KubeObject) -> bool:
        """Whether an update is enqueued."""
        return self.on_update is None or self.on_update(old, new)

    def delete(self, obj: KubeObject) -> bool:
        """Whether a deletion is enqueued."""
        return self.on_delete is None or self.on_delete(obj)


def generation_changed() -> Predicate:
    """Updates only when ``metadata.generation`` changed (spec changes; status and metadata edits are
    ignored). Kinds without a generation, such as ConfigMap and Secret, then never pass updates."""
    return Predicate(on_update=lambda old, new: _meta(old).get("generation") != _meta(new).get("generation"))


def annotation_changed(key: str | None = None) -> Predicate:
    """Updates only when the annotations changed (only annotation ``key``, when given)."""

    def annotations(obj: KubeObject) -> Mapping[str, str]:
        values: Mapping[str, str] = _meta(obj).get("annotations") or {}
        return values if key is None else {key: values[key]} if key in values else {}

    return Predicate(on_update=lambda old, new: annotations(old) != annotations(new))


def label_selector(selector: Mapping[str, Any]) -> Predicate:
    """Events for objects whose labels match a ``LabelSelector`` (``matchLabels``/``matchExpressions``).

    As in controller-runtime, an update is judged on the new object only.
    """

    def matches(obj: KubeObject) -> bool:
        return selector_matches(selector, _meta(obj).get("labels"))

    return Predicate(on_create=matches, on_update=lambda _old, new: matches(new), on_delete=matches)


def resource_version_changed() -> Predicate:
    """Updates only when ``metadata.resourceVersion`` changed (drops resync replays)."""
    return Predicate(on_update=lambda old, new: _meta(old).get("resourceVersion") != _meta(new).get("resourceVersion"))


def and_(*predicates: Predicate) -> Predicate:
    """Passes what every one of ``predicates`` passes."""
    return Predicate(
        on_create=lambda obj: all(p.create(obj) for p in predicates),
        on_update=lambda old, new: all(p.update(old, new) for p in predicates),
        on_delete=lambda obj: all(p.delete(obj) for p in predicates),
    )


def or_(*predicates: Predicate) -> Predicate:
    """Passes what any one of ``predicates`` passes."""
    return Predicate(
        on_create=lambda obj: any(p.create(obj) for p in predicates),
        on_update=lambda old, new: any(p.update(old, new) for p in predicates),
        on_delete=lambda obj: any(p.delete(obj) for p in predicates),
    )


def not_(predicate: Predicate) -> Predicate:
    """Passes what ``predicate`` drops."""
    return Predicate(
        on_create=lambda obj: not predicate.create(obj),
        on_update=lambda old, new: not predicate.update(old, new),
        on_delete=lambda obj: not predicate.delete(obj),
    )


# --- event handlers --------------------------------------------------------------------------------------


def object_request(obj: KubeObject) -> list[Request]:
    """The object itself (the mapping used for the primary kind)."""
    return [Request.of(obj)]


def controller_owner(owner: Resource) -> MapFn:
    """Maps an object to its controller owner (the ``ownerReferences`` entry with ``controller: true``) if
    that owner is an ``owner`` (same group and kind; the version does not matter)."""

    def requests(obj: KubeObject) -> list[Request]:
        meta = _meta(obj)
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


# --- the controller --------------------------------------------------------------------------------------


class Controller:
    """Runs ``workers`` reconcilers over a work queue fed by informers (and by ``enqueue``)."""

    def __init__(
        self,
        name: str,
        reconciler: Reconciler,
        *,
        workers: int = 1,
        reconcile_timeout: float | None = None,
        rate_limiter: RateLimiter[Request] | None = None,
        cache_sync_timeout: float = 120.0,
    ) -> None:
        if workers < 1:
            raise ValueError("a controller needs at least one worker")
        self.name = name
        self.queue: WorkQueue[Request] = WorkQueue(name, rate_limiter=rate_limiter)
        self.workers = workers
        self.reconcile_timeout = reconcile_timeout
        self.cache_sync_timeout = cache_sync_timeout
        self._reconciler = reconciler
        self._sources: list[EventSource] = []
        metrics.register_controller(name, workers)

    def watch(self, source: EventSource, map_fn: MapFn = object_request, predicates: Sequence[Predicate] = ()) -> None:
        """Enqueue what ``map_fn`` returns for ``source``'s events; ``run`` waits for it to sync."""
        source.add_handler(EnqueueHandler(self.queue, map_fn, predicates))
        self._sources.append(source)

    def enqueue(self, request: Request) -> None:
        """Ask for a reconcile of ``request`` (for producers outside the informers, such as a poller)."""
        self.queue.add(request)

    async def run(self, stopping: asyncio.Event) -> None:
        """Wait for the informers to sync, reconcile until ``stopping`` is set, then let in-flight
        reconciles finish. Keys still waiting are dropped: the next leader lists everything anyway."""
        if not await self._wait_for_sync(stopping):
            self.queue.shut_down()
            return
        log.info("starting workers", extra={"controller": self.name, "workers": self.workers})
        async with asyncio.TaskGroup() as workers:
            for number in range(self.workers):
                workers.create_task(self._work(stopping), name=f"{self.name}-worker-{number}")
            await stopping.wait()
            log.info("stopping: waiting for in-flight reconciles", extra={"controller": self.name})
            await self.queue.shut_down_with_drain()
        log.info("all workers finished", extra={"controller": self.name})

    async def _wait_for_sync(self, stopping: asyncio.Event) -> bool:
        """True once every informer has synced; False if ``stopping`` came first."""
        synced: asyncio.Future[Any] = asyncio.gather(*(source.wait_for_sync() for source in self._sources))
        stopped: asyncio.Future[Any] = asyncio.ensure_future(stopping.wait())
        try:
            done, _ = await asyncio.wait(
                {synced, stopped}, timeout=self.cache_sync_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopped.cancel()
            synced.cancel()
        if stopping.is_set():
            return False
        if synced not in done:
            raise CacheSyncTimeoutError(
                f"controller {self.name}: informers did not sync within {self.cache_sync_timeout:g}s"
            )
        synced.result()  # an informer that failed outright fails the controller
        return True

    async def _work(self, stopping: asyncio.Event) -> None:
        while True:
            try:
                request = await self.queue.get()
            except ShutDown:
                return
            try:
                if not stopping.is_set():
                    await self._process(request)
            finally:
                self.queue.done(request)

    async def _process(self, request: Request) -> None:
        name = self.name
        with log_context(controller=name, key=str(request), reconcileID=str(uuid.uuid4())):
            active = metrics.ACTIVE_WORKERS.labels(controller=name)
            active.inc()
            started = time.monotonic()
            try:
                result = await self._reconcile(request)
            except TerminalError as err:
                self.queue.forget(request)
                metrics.TERMINAL_RECONCILE_ERRORS.labels(controller=name).inc()
                self._count_error()
                log.error("reconcile failed and will not be retried: %s", err)
            except Exception:  # any exception is a failed reconcile: retry with backoff
                self.queue.add_rate_limited(request)
                self._count_error()
                log.exception("reconciler error")
            else:
                outcome = self._requeue(request, result or Result())
                metrics.RECONCILE_TOTAL.labels(controller=name, result=outcome).inc()
                log.debug("reconciled", extra={"result": outcome})
            finally:
                active.dec()
                metrics.RECONCILE_TIME.labels(controller=name).observe(time.monotonic() - started)

    async def _reconcile(self, request: Request) -> Result | None:
        if self.reconcile_timeout is None:
            return await self._reconciler.reconcile(request)
        deadline = asyncio.timeout(self.reconcile_timeout)
        try:
            async with deadline:
                return await self._reconciler.reconcile(request)
        except TimeoutError:
            if not deadline.expired():
                raise  # the reconciler's own timeout (a slow request...), not ours
            metrics.RECONCILE_TIMEOUTS.labels(controller=self.name).inc()
            raise ReconcileTimeoutError(f"reconcile did not finish within {self.reconcile_timeout:g}s") from None

    def _requeue(self, request: Request, result: Result) -> str:
        """Queue the follow-up ``result`` asks for; the ``result`` label of the reconcile."""
        if result.requeue_after is not None and result.requeue_after > 0:
            self.queue.forget(request)
            self.queue.add_after(request, result.requeue_after)
            return "requeue_after"
        if result.requeue:
            self.queue.add_rate_limited(request)
            return "requeue"
        self.queue.forget(request)
        return "success"

    def _count_error(self) -> None:
        metrics.RECONCILE_ERRORS.labels(controller=self.name).inc()
        metrics.RECONCILE_TOTAL.labels(controller=self.name, result="error").inc()


# --- the builder -----------------------------------------------------------------------------------------


@dataclass
class _Source:
    resource: Resource
    map_fn: MapFn | None  # None: the controller owner (``owns``), resolved once the primary kind is known
    predicates: Sequence[Predicate] = ()
    label_selector: str | None = None
    transform: Callable[[KubeObject], KubeObject] | None = None


@dataclass
class _Options:
    workers: int = 1
    reconcile_timeout: float | None = None
    rate_limiter: RateLimiter[Request] | None = None
    cache_sync_timeout: float = 120.0


class Builder:
    """Declares a controller and adds it to a manager (``Builder(manager, "x").for_(KIND).complete(r)``)."""

    def __init__(self, manager: Manager, name: str) -> None:
        if not name:
            raise ValueError("a controller needs a name")
        self._manager = manager
        self._name = name
        self._primary: Resource | None = None
        self._sources: list[_Source] = []
        self._options = _Options()

    def for_(
        self,
        resource: Resource,
        *,
        predicates: Sequence[Predicate] = (),
        label_selector: str | None = None,
        transform: Callable[[KubeObject], KubeObject] | None = None,
    ) -> Builder:
        """Reconcile objects of ``resource``: each event enqueues the object itself."""
        if self._primary is not None:
            raise ValueError(f"controller {self._name}: for_ was already called")
        self._primary = resource
        self._sources.append(_Source(resource, object_request, predicates, label_selector, transform))
        return self

    def owns(self, resource: Resource, *, predicates: Sequence[Predicate] = ()) -> Builder:
        """Reconcile the controller owner (of the ``for_`` kind) of each changed ``resource`` object."""
        self._sources.append(_Source(resource, None, predicates))
        return self

    def watches(
        self,
        resource: Resource,
        map_fn: MapFn,
        *,
        predicates: Sequence[Predicate] = (),
        label_selector: str | None = None,
        transform: Callable[[KubeObject], KubeObject] | None = None,
    ) -> Builder:
        """Reconcile what ``map_fn`` returns for each changed ``resource`` object."""
        self._sources.append(_Source(resource, map_fn, predicates, label_selector, transform))
        return self

    def with_options(
        self,
        *,
        workers: int = 1,
        reconcile_timeout: float | None = None,
        rate_limiter: RateLimiter[Request] | None = None,
        cache_sync_timeout: float = 120.0,
    ) -> Builder:
        """Concurrency (``workers``), a per-reconcile timeout, the queue's rate limiter, the sync timeout."""
        self._options = _Options(workers, reconcile_timeout, rate_limiter, cache_sync_timeout)
        return self

    def complete(self, reconciler: Reconciler) -> Controller:
        """Build the controller, register its event handlers on the manager's cache, add it to the manager."""
        if not self._sources:
            raise ValueError(f"controller {self._name}: call for_ or watches first")
        primary = self._primary
        if primary is None and any(source.map_fn is None for source in self._sources):
            raise ValueError(f"controller {self._name}: owns needs for_ to know the owner kind")
        opts = self._options
        controller = Controller(
            self._name,
            reconciler,
            workers=opts.workers,
            reconcile_timeout=opts.reconcile_timeout,
            rate_limiter=opts.rate_limiter,
            cache_sync_timeout=opts.cache_sync_timeout,
        )
        for source in self._sources:
            informer = self._manager.cache.informer(
                source.resource, label_selector=source.label_selector, transform=source.transform
            )
            map_fn = source.map_fn
            if map_fn is None:
                assert primary is not None
                map_fn = controller_owner(primary)
            controller.watch(informer, map_fn, source.predicates)
        self._manager.add(controller)
        return controller
