"""The poller: finds the managed Secrets whose 1Password item changed, and hands them to their reconcilers.

Every ``POLLING_INTERVAL`` seconds (the first time as soon as the caches are synced), on the leader only:

1. From the managed Secrets' cache, collect each Secret's item (its ``item-path`` annotation, by ids) and
   the ``item-version`` it was made from, and the versions of a shaped Secret's ``spec.extraItems``; the
   items ``ItemFetcher`` holds without a Secret (an access policy denied it) are followed too, so that a
   change in 1Password reaches them.
2. Ask the backend what changed in the vaults that are due: with Connect one ``GET`` per vault, with the SDK
   one ``vaults.list()`` for all of them, plus a listing of the items of each vault whose ``contentVersion``
   moved (the first poll lists all vaults once instead of one ``GET`` each; the listings also go to the
   item resolver, which resolves titles and vault names from them). A vault is due every
   ``POLLING_INTERVAL`` seconds, or every ``spec.pollingInterval`` seconds of the OnePasswordItem using it
   that asks for the shortest one (an item asking for a longer interval than ``POLLING_INTERVAL`` only slows
   down its vault if no other item of the vault is polled faster). The poller wakes at the earliest due
   time, and at once when an item's ``pollingInterval`` changes.
3. Fire each Secret whose item is at another version now (or just disappeared) at the controller that makes
   it (``Handoff``): the OnePasswordItem of the same name, else the workload-secrets controller, each through
   an ``opsync.source.Channel`` it watches, oldest change first (by the item's ``updatedAt``): the queues are
   FIFO, so a change waits behind those made before it, never behind later ones. Keys already retrying with
   backoff are left to it, except on the first good poll after failed ones: 1Password answers again, so
   those keys and the items whose last reconcile ended with ``ConnectUnavailable`` (remembered, not read
   back from a status the served CRD may prune) are retried at once.
4. Tell the ``ItemFetcher`` which vaults could not be read, and since when; the OnePasswordItems of a vault
   that starts or stops failing are reconciled once, so that their ``Ready`` condition shows it (reason
   ``ConnectUnavailable``, still ``True``: the Secret holds the item as last read).

5. Fetch the changed items of the Secrets it fired, ``PREFETCH_CONCURRENCY`` at a time, into the shared
   ``ItemFetcher`` (``prefetch``): the reconcilers, already running, find them current or join the request in
   flight, so K changes cost about K / 16 round trips instead of K / ``--workers``. Only the paths the
   reconcilers will ask for and the access policies admit (``Handoff.prefetchable``), never files, and
   nothing while 1Password's rate limit lasts. The poll does not wait for it: a slow item holds up nothing.

The poller never writes to Kubernetes: the reconcilers write, from the items the fetcher holds, which the
poller tells about the new versions. Unlike the Go operator's ticker it runs only on the leader, and its first
poll does not wait one interval. While a rate limit 1Password reported lasts (``ItemFetcher.rate_limited_for``),
polls are skipped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from controllers.constants import MIN_ITEM_POLLING_INTERVAL, PREFETCH_CONCURRENCY
from controllers.desired import item_versions
from controllers.fetcher import ItemFetcher
from controllers.metrics import LAST_SUCCESSFUL_POLL, POLL_DURATION, POLLS
from onepassword_access.backend import Backend
from onepassword_access.changes import ChangeReport
from onepassword_access.errors import RateLimitedError
from onepassword_access.paths import ItemPathError, parse_item_path
from opsync.aio import first_completed
from opsync.informer import Informer
from opsync.reconcile import Request
from opsync.resources import KubeObject
from opsync.source import Channel

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Tracked:
    """A managed Secret and the item version it holds."""

    request: Request
    vault_id: str
    item_id: str
    version: str
    interval: float
    """Seconds between polls of its vault wanted for this Secret."""


_DUE_SLACK = 0.05
"""A vault due within this fraction of its interval is polled now rather than one tick later."""

ITEM_VERSIONS_INDEX = "opsync.dev/item-versions"
"""Managed Secrets by ``[vault id, item id, version]`` (JSON) of each item they were made from."""
POLLING_INTERVAL_INDEX = "opsync.dev/polling-interval"
"""OnePasswordItems by their own ``spec.pollingInterval`` (``repr`` of the seconds), when they have one."""


def _item_version_values(secret: KubeObject) -> Iterator[str]:
    for item_path, version in item_versions(secret).items():
        try:
            path = parse_item_path(item_path)
        except ItemPathError:
            continue
        yield json.dumps([path.vault, path.item, version])


def _polling_interval_values(opi: KubeObject) -> list[str]:
    interval = item_polling_interval(opi)
    return [] if interval is None else [repr(interval)]


def _changed_at(entry: Tracked, report: ChangeReport) -> float:
    """When 1Password says the item of ``entry`` changed in this poll's report; -inf when it does not say."""
    change = report.changes.get(entry.vault_id)
    return change.changed_at.get(entry.item_id, -math.inf) if change else -math.inf


def item_polling_interval(opi: KubeObject | None) -> float | None:
    """A OnePasswordItem's ``spec.pollingInterval`` (seconds), None when it has none or an unusable one."""
    value = ((opi or {}).get("spec") or {}).get("pollingInterval")
    if isinstance(value, bool) or not isinstance(value, int | float) or value < MIN_ITEM_POLLING_INTERVAL:
        return None  # the CRD refuses these; an old CRD prunes the field, so this is seldom reached
    return float(value)


class _IntervalChanges:
    """Informer handler: wakes the poller when an item's ``pollingInterval`` appears or changes."""

    def __init__(self, wake: asyncio.Event) -> None:
        self._wake = wake

    def on_add(self, obj: KubeObject, is_initial_list: bool) -> None:
        if not is_initial_list and item_polling_interval(obj) is not None:
            self._wake.set()

    def on_update(self, old: KubeObject, new: KubeObject) -> None:
        if item_polling_interval(old) != item_polling_interval(new):
            self._wake.set()

    def on_delete(self, obj: KubeObject) -> None:
        del obj  # a vault polled less often from now on needs no wake-up


@dataclass(frozen=True, slots=True)
class Handoff:
    """Where the poller's findings go: a Secret of an item's name to the item controller (``item_changes``),
    any other managed Secret to the workload-secrets controller (``workload_changes``)."""

    items: Informer
    item_changes: Channel
    workload_changes: Channel
    connect_unavailable: Callable[[], Iterable[Request]]
    """The OnePasswordItems whose last reconcile ended with ``ConnectUnavailable`` (failed, or in sync with
    the item as last read but unchecked)."""
    prefetchable: Callable[[Request], Iterable[str]] = lambda _request: ()
    """The item paths the reconcile of a request will fetch, as its controller asks for them, that the access
    policies admit (``AccessControl.admits``): what the poller may fetch for it in advance."""

    async def wait_for_sync(self) -> bool:
        """True once the items cache (which decides where a Secret goes) has synced."""
        return await self.items.wait_for_sync()

    def changed(self, request: Request, *, even_in_backoff: bool = False) -> bool:
        """Fire ``request`` at the controller that makes its Secret (see ``Channel.fire``)."""
        owned_by_item = self.items.get(request.namespace, request.name) is not None
        channel = self.item_changes if owned_by_item else self.workload_changes
        return channel.fire(request, even_in_backoff=even_in_backoff)

    def recheck(self, request: Request) -> bool:
        """Reconcile the OnePasswordItem of ``request``'s name (if any) once, even in backoff, so that its
        ``Ready`` condition tells whether its vault can be checked; False when no item makes that Secret."""
        if self.items.get(request.namespace, request.name) is None:
            return False
        self.item_changes.fire(request, even_in_backoff=True)
        return True

    def retry_connect_unavailable(self) -> int:
        """Fire the OnePasswordItems whose last reconcile ended with ``ConnectUnavailable``; how many."""
        waiting = list(self.connect_unavailable())
        for request in waiting:
            self.item_changes.fire(request, even_in_backoff=True)
        return len(waiting)


class Poller:
    """The leader-only runnable polling 1Password (see the module docstring)."""

    name = "connect-poller"

    def __init__(
        self,
        *,
        backend: Backend,
        fetcher: ItemFetcher,
        secrets: Informer,
        handoff: Handoff,
        interval: float,
        paths_in_use: Callable[[], Iterable[str]],
        prefetch_concurrency: int = PREFETCH_CONCURRENCY,
    ) -> None:
        self._backend = backend
        self._fetcher = fetcher
        self._secrets = secrets
        self._handoff = handoff
        self.interval = interval
        self._paths_in_use = paths_in_use
        self._prefetch_concurrency = prefetch_concurrency
        self._prefetches: set[asyncio.Task[int]] = set()  # running on their own: a slow item never holds a poll
        self._failing = False  # the last poll could not read every vault
        self._polled_at: dict[str, float] = {}  # vault id -> monotonic time of its last poll
        self._next_due: float | None = None  # monotonic time the next vault is due, None: now
        self._wake = asyncio.Event()
        handoff.items.add_handler(_IntervalChanges(self._wake))
        # What each poll reads of every Secret and item, kept as the cache stores them: no object is decoded.
        secrets.add_indexer(ITEM_VERSIONS_INDEX, _item_version_values)
        handoff.items.add_indexer(POLLING_INTERVAL_INDEX, _polling_interval_values)

    async def run(self, stopping: asyncio.Event) -> None:
        """Poll until ``stopping`` is set."""
        if not await self._wait_for_sync(stopping):
            return
        while not stopping.is_set():
            try:
                await self.poll()
            except Exception:  # a bug in one poll must not stop the next ones, nor the manager
                log.exception("poll failed")
            finally:
                self._fetcher.note_poll()  # reconciles waiting for the first listings go on, with or without
            wait = self.interval if self._next_due is None else self._next_due - time.monotonic()
            self._wake.clear()
            await first_completed(stopping.wait(), self._wake.wait(), timeout=max(0.0, wait))
        for prefetch in self._prefetches:
            prefetch.cancel()  # the fetches they joined go on for the reconcilers waiting on them
        await asyncio.gather(*self._prefetches, return_exceptions=True)

    def _prefetch(self, paths: list[str]) -> None:
        if not paths:
            return
        task = asyncio.create_task(self._fetcher.prefetch(paths, concurrency=self._prefetch_concurrency))
        self._prefetches.add(task)
        task.add_done_callback(self._prefetched)

    def _prefetched(self, task: asyncio.Task[int]) -> None:
        self._prefetches.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("prefetch failed", exc_info=task.exception())

    async def _wait_for_sync(self, stopping: asyncio.Event) -> bool:
        async def synced() -> bool:
            return all(await asyncio.gather(self._secrets.wait_for_sync(), self._handoff.wait_for_sync()))

        await first_completed(synced(), stopping.wait())
        return not stopping.is_set()

    async def poll(self) -> int:
        """One poll; returns how many Secrets were handed to a reconciler."""
        if self._fetcher.rate_limited_for() > 0:
            log.debug("poll skipped: 1Password asked to wait")
            POLLS.labels(result="skipped").inc()
            self._next_due = None  # try again one POLLING_INTERVAL on, not in a loop
            return 0
        started = time.monotonic()
        own = self._own_intervals()
        tracked = list(self._tracked(own))
        following: dict[str, set[str]] = {}
        intervals: dict[str, float] = {}
        held = [(vault_id, item_id, self.interval) for vault_id, item_id in sorted(self._fetcher.held())]
        for vault_id, item_id, interval in [(t.vault_id, t.item_id, t.interval) for t in tracked] + held:
            following.setdefault(vault_id, set()).add(item_id)
            intervals[vault_id] = min(interval, intervals.get(vault_id, interval))
        due = {
            vault_id
            for vault_id, interval in intervals.items()
            if started >= self._polled_at.get(vault_id, -interval) + interval * (1 - _DUE_SLACK)
        }
        # Vaults not due are kept, not forgotten: their versions stay known for the next drift check.
        report = await self._backend.poll({v: following[v] for v in due}, keep=intervals.keys() - due)
        for vault_id in due:
            self._polled_at[vault_id] = started
        for gone in self._polled_at.keys() - intervals.keys():
            del self._polled_at[gone]
        upcoming = [self._polled_at[v] + interval for v, interval in intervals.items()]
        # Items whose Secrets are not made yet are not tracked: wake at their interval all the same.
        shortest = min([self.interval, *own.values()])
        self._next_due = min([*upcoming, started + shortest])
        for error in report.errors.values():
            if isinstance(error, RateLimitedError):
                self._fetcher.note_rate_limit(error)
        for vault_id, change in report.changes.items():
            self._fetcher.observe(vault_id, change.versions, change.removed, listing=change.listed)
        if report.vaults is not None:
            self._fetcher.note_vaults(report.vaults)
        # Items of a vault that became uncheckable (or checkable again) are reconciled once, so that their
        # Ready condition says so; their data is left as it is.
        # Only vaults read in this poll say anything: one not due keeps its state.
        checked = {t.vault_id for t in tracked} & due
        flipped = {v for v in checked if self._fetcher.note_check(v, report.errors.get(v))}
        # 1Password answers again: what failed for want of it is retried now, not when its backoff (up to
        # 5 minutes) ends, so everything recovers within one poll of the end of an outage.
        # Only a poll that read some vault says anything about an outage: one with none due keeps the state.
        recovered = self._failing and bool(due) and not report.errors
        if due:
            self._failing = bool(report.errors)
        retry = recovered or bool(flipped - report.errors.keys())
        enqueued = self._handoff.retry_connect_unavailable() if retry else 0
        fired: dict[Request, None] = {}
        # Read once per vault: the backends copy a vault's versions on each call (O(N) per Secret otherwise).
        versions = {vault_id: self._backend.versions(vault_id) for vault_id in {t.vault_id for t in tracked}}
        drifted: list[Tracked] = []
        for entry in tracked:
            if entry.vault_id in flipped and self._handoff.recheck(entry.request):
                continue
            if self._drifted(entry, versions[entry.vault_id], report):
                drifted.append(entry)
        # The work queues are FIFO: the change made first is written first, so no item waits behind changes
        # made after it. A change with no time (found before this poll, or an item gone) has waited longest.
        drifted.sort(key=lambda entry: _changed_at(entry, report))
        for entry in drifted:
            if self._handoff.changed(entry.request, even_in_backoff=recovered):
                enqueued += 1
                fired[entry.request] = None
        self._fetcher.retain(self._paths_in_use())
        # The reconcilers fired above start at once and join these requests: one round trip per
        # ``prefetch_concurrency`` changed items instead of one per worker. Not awaited: the next poll is not
        # held up by a slow item (a prefetch still running then goes on beside the next one's).
        self._prefetch([path for request in fired for path in self._handoff.prefetchable(request)])
        POLL_DURATION.observe(time.monotonic() - started)
        POLLS.labels(result="failed" if report.errors else "ok").inc()
        if report.errors:
            vault_id, error = next(iter(report.errors.items()))
            log.warning(
                "poll could not read %d vault(s); first: %s: %s",
                len(report.errors),
                vault_id,
                error,
                extra={"vaults": len(report.errors)},
            )
        else:
            LAST_SUCCESSFUL_POLL.set(time.time())
        if enqueued:
            log.info("items changed in 1Password", extra={"secrets": enqueued})
        return enqueued

    def _own_intervals(self) -> dict[Request, float]:
        """The OnePasswordItems that ask for their own polling interval, and what they ask for."""
        items = self._handoff.items
        return {
            Request(*key): float(value)
            for value in items.index_values(POLLING_INTERVAL_INDEX)
            for key in items.index_keys(POLLING_INTERVAL_INDEX, value)
        }

    def _tracked(self, own: Mapping[Request, float]) -> Iterator[Tracked]:
        for value in self._secrets.index_values(ITEM_VERSIONS_INDEX):
            vault_id, item_id, version = json.loads(value)
            for key in self._secrets.index_keys(ITEM_VERSIONS_INDEX, value):
                request = Request(*key)
                yield Tracked(request, vault_id, item_id, version, own.get(request) or self.interval)

    @staticmethod
    def _drifted(entry: Tracked, versions: Mapping[str, int] | None, report: ChangeReport) -> bool:
        if versions is None:
            return False  # the vault was never read: nothing known
        if entry.item_id in versions:
            return str(versions[entry.item_id]) != entry.version
        change = report.changes.get(entry.vault_id)
        return change is not None and entry.item_id in change.removed  # gone: its reconciler reports it
