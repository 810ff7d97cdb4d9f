"""Informers: a local, indexed copy of one kind's objects, kept current by LIST + WATCH, with event handlers.

An ``Informer`` follows client-go's reflector:

* the first LIST is paged (``limit``/``continue``) and consistent (``resourceVersion=""``);
* then a WATCH from the list's resourceVersion with bookmarks and a random 5-10 min ``timeoutSeconds``; every
  event, bookmarks included, advances the resourceVersion, so a watch that ends is resumed without a relist;
* a watch that goes silent for the inactivity timeout is dropped and resumed;
* on 410 Gone / Expired it relists at the last resourceVersion (``NotOlderThan``, served from the apiserver's
  watch cache), and only if that is refused too from scratch; a relist is diffed against the store so objects
  that vanished meanwhile produce ``on_delete`` (client-go's tombstones) and changed ones ``on_update``;
* failures back off exponentially (0.8 s to 30 s, full jitter), reset after 2 min without failure;
* an ``optional`` informer is for a kind that may not be served yet (its CRD not installed): a LIST answered
  404 counts as an empty list, so the informer syncs and its consumers work, and it keeps asking (with the
  same backoff) until the kind appears. Without the CRD no such object can exist, so "none" is the truth.

One informer may cover several namespaces (one list/watch per namespace feeding one store), which is how the
``Cache`` scopes a manager to a namespace list. That list may change while the informer runs
(``set_namespaces``): a namespace added gets its own list/watch, whose objects arrive as ordinary adds; a
namespace dropped has its stream stopped and its objects forgotten without ``on_delete`` (they were not
deleted: opsync just stops looking, and a handler must not act as if they were gone, e.g. delete a Secret
whose users it no longer sees). Every read returns a copy of the stored object (``opsync.store``).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast

import aiohttp

from opsync.client import ApiError, Client, GoneError, NotFoundError, WatchEvent
from opsync.resources import KubeObject, Resource
from opsync.store import OPAQUE_KEYS, SHARED_VALUE_KEYS, Frozen, IndexFunc, Keys, Objects, Store, key_of

log = logging.getLogger(__name__)

Transform = Callable[[KubeObject], KubeObject | None]
"""What the cache keeps of an object; None leaves the object out, as a label selector would (an object the
transform starts leaving out is deleted from the cache, with an ``on_delete``)."""

# client-go's reflector pages by 500. A page is decoded whole, and what the allocator takes for it stays with
# the process after the list: 5,000 Pods listed 500 at a time left 10 MiB behind, 100 at a time 2.3 MiB
# (docs/benchmarks.md), for 5x the list requests, which cost the API server little.
PAGE_SIZE = 100
WATCH_TIMEOUT = (300, 600)  # seconds, as client-go's defaultMinWatchTimeout .. 2x
INACTIVITY_TIMEOUT = 70.0
_SHORT_WATCH = 1.0  # a watch that ends this fast without events counts as a failure (no hot reconnect loop)


class ResourceEventHandler(Protocol):
    """Receives an informer's changes, after its store has been updated."""

    def on_add(self, obj: KubeObject, is_initial_list: bool) -> None: ...
    def on_update(self, old: KubeObject, new: KubeObject) -> None: ...
    def on_delete(self, obj: KubeObject) -> None: ...


def compact(obj: KubeObject) -> KubeObject:
    """A copy of ``obj`` without ``metadata.managedFields`` (often its biggest part, useless to controllers),
    its keys and a few of its values interned.

    Each watch event is decoded on its own, so each object holds its own copy of every key ("metadata",
    "ownerReferences", "operator.1password.io/item-path"...): a cache of thousands of objects of a kind holds
    each key thousands of times. Interned, they are held once: about 1.4 KiB less per managed Secret
    (docs/benchmarks.md, "Memory"). So are the values of ``opsync.store.SHARED_VALUE_KEYS``, which come from small sets
    (``apiVersion``, ``kind``, ``namespace``, a condition's ``type``, ``status`` and ``reason``...). Other
    values are kept as they are, and nothing under ``data`` is touched but its keys: values may be secrets.
    """
    meta = obj.get("metadata")
    if meta and "managedFields" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return cast(KubeObject, _interned(obj))


def _interned(value: Any) -> Any:
    if isinstance(value, dict):
        return {sys.intern(key): _interned_value(key, item) for key, item in value.items()}
    if isinstance(value, list):
        return [_interned(item) for item in value]
    return value


def _interned_value(key: str, value: Any) -> Any:
    if key in OPAQUE_KEYS and isinstance(value, dict):
        return {sys.intern(k): v for k, v in value.items()}
    if key in SHARED_VALUE_KEYS and isinstance(value, str):
        return sys.intern(value)
    return _interned(value)


class Backoff:
    """Exponential backoff with full jitter that starts over after ``reset_after`` seconds without failure."""

    def __init__(
        self,
        initial: float = 0.8,
        maximum: float = 30.0,
        factor: float = 2.0,
        reset_after: float = 120.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.initial, self.maximum, self.factor, self.reset_after = initial, maximum, factor, reset_after
        self._clock, self._rng = clock, rng
        self._steps = 0
        self._last: float | None = None

    def next_delay(self) -> float:
        """The delay before the next attempt, after a failure now."""
        now = self._clock()
        if self._last is not None and now - self._last >= self.reset_after:
            self._steps = 0
        self._last = now
        ceiling = min(self.maximum, self.initial * self.factor**self._steps)
        self._steps += 1
        return ceiling * self._rng()


@dataclass
class _Scope:
    """One list/watch stream: a namespace (None: all namespaces or cluster-scoped) and where it stands."""

    namespace: str | None
    resource_version: str = ""
    relist: Literal["scratch", "last"] | None = "scratch"  # the next LIST to make, None while watching
    synced: bool = False


def _rv_unavailable(err: Exception) -> bool:
    """Whether the server refused a resourceVersion as too old (410/Expired) or too new (etcd restored)."""
    return isinstance(err, GoneError) or (isinstance(err, ApiError) and "ResourceVersionTooLarge" in err.causes)


class Informer:
    """A watched, indexed local copy of one kind in one scope, with event handlers."""

    def __init__(
        self,
        client: Client,
        resource: Resource,
        *,
        namespaces: Sequence[str] | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        transform: Transform | None = None,
        page_size: int = PAGE_SIZE,
        watch_timeout: tuple[int, int] = WATCH_TIMEOUT,
        inactivity_timeout: float = INACTIVITY_TIMEOUT,
        optional: bool = False,
    ) -> None:
        """``namespaces=None`` (or a cluster-scoped ``resource``) watches everything with one stream;
        otherwise one stream per namespace feeds the same store. ``optional``: see the module docstring."""
        self._client = client
        self.resource = resource
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.transform = transform
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.inactivity_timeout = inactivity_timeout
        self.optional = optional
        self._dynamic = resource.namespaced and namespaces is not None  # scoped to a (changeable) namespace list
        scopes: Sequence[str | None] = namespaces if self._dynamic and namespaces is not None else [None]
        self._scopes = [_Scope(namespace) for namespace in dict.fromkeys(scopes)]
        self._tasks: dict[str | None, asyncio.Task[None]] | None = None  # per scope, while run() is active
        self._store = Store()
        self._handlers: list[ResourceEventHandler] = []
        self._synced = asyncio.Event()
        # Counters for tests and debugging: completed LISTs (relists included), relists, WATCH requests.
        self.list_count = 0
        self.relist_count = 0
        self.watch_count = 0

    def __repr__(self) -> str:
        return self._describe("namespaces", ",".join(s.namespace or "*" for s in self._scopes))

    def _stream(self, scope: _Scope) -> str:
        """One list/watch stream, for its log lines (an informer may have hundreds of namespaces)."""
        return self._describe("namespace", scope.namespace or "*")

    def _describe(self, field: str, namespaces: str) -> str:
        return f"Informer({self.resource}, {field}={namespaces}, labels={self.label_selector!r})"

    # the store

    def get(self, namespace: str, name: str) -> KubeObject | None:
        """The cached object (``namespace`` "" or None for cluster-scoped kinds), or None."""
        return self._store.get(namespace or "", name)

    def list(self, namespace: str | None = None) -> Objects:
        """Every cached object, or those in ``namespace``."""
        return self._store.list(namespace)

    def add_indexer(self, name: str, fn: IndexFunc) -> None:
        """Index objects by ``fn(obj)``'s values; may be called before or after the informer started."""
        self._store.add_indexer(name, fn)

    def by_index(self, name: str, value: str) -> Objects:
        """The cached objects indexer ``name`` maps to ``value``."""
        return self._store.by_index(name, value)

    def index_keys(self, name: str, value: str) -> Keys:
        """The keys of the cached objects indexer ``name`` maps to ``value``, sorted (nothing is decoded)."""
        return self._store.index_keys(name, value)

    def index_values(self, name: str) -> builtins.list[str]:
        """Every value indexer ``name`` maps some cached object to."""
        return self._store.index_values(name)

    # handlers and sync

    def add_handler(self, handler: ResourceEventHandler) -> None:
        """Send future changes to ``handler``; objects already cached are replayed to it as initial adds."""
        self._handlers.append(handler)
        for obj in self._store.list():
            self._call(handler.on_add, obj, True)

    def has_synced(self) -> bool:
        """True once the first full list of every scope has been stored and handed to the handlers."""
        return self._synced.is_set()

    async def wait_for_sync(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 -- the Cache contract
        """Wait until synced; False if ``timeout`` seconds passed first."""
        try:
            async with asyncio.timeout(timeout):
                await self._synced.wait()
        except TimeoutError:
            return False
        return True

    # running

    def set_namespaces(self, namespaces: Sequence[str]) -> None:
        """Watch these namespaces from now on (see the module docstring); only for an informer made with a
        namespace list. Synchronous, so that informers changed together never disagree between two events."""
        if not self._dynamic:
            raise ValueError(f"{self!r} watches all namespaces; it has no namespace list to change")
        wanted = list(dict.fromkeys(namespaces))
        current = {scope.namespace: scope for scope in self._scopes}
        for namespace, scope in current.items():
            if namespace not in wanted:
                self._scopes.remove(scope)
                if self._tasks is not None and (task := self._tasks.pop(namespace, None)) is not None:
                    task.cancel()
                self._store.replace([], namespace)  # forgotten, not deleted: no on_delete
        for namespace in wanted:
            if namespace not in current:
                scope = _Scope(namespace)
                self._scopes.append(scope)
                if self._tasks is not None:
                    self._tasks[namespace] = asyncio.create_task(self._reflect(scope), name=self._stream(scope))

    async def run(self, stopping: asyncio.Event) -> None:
        """List and watch until ``stopping`` is set. The store and resourceVersions survive a later ``run``."""
        self._tasks = {
            scope.namespace: asyncio.create_task(self._reflect(scope), name=self._stream(scope))
            for scope in self._scopes
        }
        if not self._scopes:
            self._synced.set()  # an empty namespace list: nothing to list, and nothing missing
        try:
            await stopping.wait()
        finally:
            tasks, self._tasks = list(self._tasks.values()), None
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _reflect(self, scope: _Scope) -> None:
        backoff = Backoff()
        while True:
            try:
                if scope.relist is not None:
                    await self._list(scope)
                if await self._watch(scope):
                    continue
                log.warning("%s: watch closed at once without events", self._stream(scope))
            except Exception as err:
                if self.optional and isinstance(err, NotFoundError):
                    self._not_served(scope)
                elif _rv_unavailable(err):
                    # 410 on a watch: relist at the last RV first; refused there (or a too-large RV): from scratch.
                    tolerable = scope.relist is None and isinstance(err, GoneError)
                    scope.relist = "last" if tolerable else "scratch"
                    log.info(
                        "%s: resourceVersion %s unavailable (%s), relisting",
                        self._stream(scope),
                        scope.resource_version,
                        err,
                    )
                else:
                    expected = isinstance(err, ApiError | aiohttp.ClientError | TimeoutError)
                    log.warning(
                        "%s: list/watch failed: %s",
                        self._stream(scope),
                        str(err) or type(err).__name__,  # a TimeoutError says nothing else
                        exc_info=not expected,
                    )
                delay = backoff.next_delay()
                if isinstance(err, ApiError) and err.retry_after:
                    delay = max(delay, err.retry_after)
                await asyncio.sleep(delay)

    def _not_served(self, scope: _Scope) -> None:
        """The kind is not served (404): the scope holds nothing; list it from scratch when it is back."""
        news = not scope.synced or scope.relist is None or bool(self._store.list(scope.namespace))
        if news:  # once per disappearance, not on every retry
            log.info("%r: the API server does not serve this kind (404); treating it as empty", self)
        deltas = self._store.replace([], scope.namespace)
        scope.resource_version, scope.relist, scope.synced = "", "scratch", True
        for delta in deltas:
            self._dispatch(delta.old, delta.new, initial=False)
        if all(s.synced for s in self._scopes):
            self._synced.set()

    async def _list(self, scope: _Scope) -> None:
        at_last = scope.relist == "last"
        # As client-go: a relist at a known RV is not paged so the watch cache can serve it.
        rv, match, limit = (scope.resource_version, "NotOlderThan", None) if at_last else ("", None, self.page_size)
        items: list[Frozen] = []  # held as the store holds them: a listing of thousands is not thousands of dicts
        token: str | None = None
        while True:
            page = await self._client.list(
                self.resource,
                scope.namespace,
                label_selector=self.label_selector,
                field_selector=self.field_selector,
                limit=limit,
                continue_token=token,
                # A continued page is pinned by its token; the server refuses an RV alongside it.
                resource_version=rv if token is None else None,
                resource_version_match=match if token is None else None,
            )
            prepared = map(self._prepare, page.pop("items", None) or ())
            items.extend(self._store.freeze(kept) for kept in prepared if kept is not None)
            meta = page["metadata"]
            del page  # megabytes, decoded: let it go before the next one arrives
            token = meta.get("continue") or None
            if token is None:
                break
        first_list = not scope.synced
        # A namespace added after the informer synced brings news, not the initial state: ordinary adds.
        initial = not scope.synced and not self._synced.is_set()
        deltas = self._store.replace(items, scope.namespace)
        scope.resource_version = meta["resourceVersion"]
        scope.relist, scope.synced = None, True
        self.list_count += 1
        if not first_list:
            self.relist_count += 1
        for delta in deltas:
            self._dispatch(delta.old, delta.new, initial=initial)
        if all(s.synced for s in self._scopes):
            self._synced.set()

    async def _watch(self, scope: _Scope) -> bool:
        """Watch until the stream ends; False if it ended at once without any event (treated as a failure)."""
        self.watch_count += 1
        started = time.monotonic()
        received = False
        stream = self._client.watch(
            self.resource,
            scope.namespace,
            resource_version=scope.resource_version,
            timeout_seconds=random.randint(*self.watch_timeout),  # noqa: S311 -- spreads reconnects, not crypto
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            inactivity_timeout=self.inactivity_timeout,
        )
        async with contextlib.aclosing(stream):
            async for event in stream:
                received = True
                self._apply(event)
                scope.resource_version = event.object["metadata"]["resourceVersion"]
        return received or time.monotonic() - started >= _SHORT_WATCH

    def _apply(self, event: WatchEvent) -> None:
        if event.type == "BOOKMARK":
            return
        obj = self._prepare(event.object)
        if obj is None:  # left out: an object the cache held is gone from it
            gone = self._store.remove(key_of(event.object))
            if gone is not None:
                self._dispatch(gone, None, initial=False)
        elif event.type == "DELETED":
            self._store.remove(key_of(obj))
            self._dispatch(obj, None, initial=False)
        else:
            self._dispatch(self._store.put(obj), obj, initial=False)

    def _prepare(self, obj: KubeObject) -> KubeObject | None:
        # List items come without apiVersion/kind; consumers (events, owner references) need them.
        obj.setdefault("apiVersion", self.resource.api_version)
        obj.setdefault("kind", self.resource.kind)
        obj = compact(obj)
        return self.transform(obj) if self.transform is not None else obj

    def _dispatch(self, old: KubeObject | None, new: KubeObject | None, *, initial: bool) -> None:
        for handler in self._handlers:
            if old is None and new is not None:
                self._call(handler.on_add, new, initial)
            elif old is not None and new is not None:
                self._call(handler.on_update, old, new)
            elif old is not None:
                self._call(handler.on_delete, old)

    def _call(self, method: Callable[..., None], *args: object) -> None:
        try:
            method(*args)
        except Exception:
            log.exception("%r: event handler %s failed", self, getattr(method, "__qualname__", method))
