"""The poller: finds the managed Secrets whose 1Password item changed, and hands them to their reconcilers.

Every ``POLLING_INTERVAL`` seconds (the first time as soon as the caches are synced), on the leader only:

1. From the managed Secrets' cache, collect each Secret's item (its ``item-path`` annotation, by ids) and
   the ``item-version`` it was made from.
2. Ask the change detector about their vaults: one ``GET`` per vault, plus one item listing for each vault
   whose ``contentVersion`` moved.
3. Enqueue each Secret whose item is at another version now (or just disappeared) into the controller that
   makes it: the OnePasswordItem of the same name, else the workload-secrets controller. Keys already
   retrying with backoff are left to it, except on the first good poll after failed ones: Connect is back,
   so those keys and the items ``Ready=False`` with ``ConnectUnavailable`` are retried at once.
4. Tell the ``ItemSource`` which vaults could not be read, and since when; the OnePasswordItems of a vault
   that starts or stops failing are reconciled once, so that their ``Ready`` condition shows it (reason
   ``ConnectUnavailable``, still ``True``: the Secret holds the item as last read).

The poller never writes to Kubernetes and never fetches an item: the reconcilers fetch each changed item once
through the shared ``ItemSource``, which the poller tells about the new versions. Unlike the Go operator's
ticker it runs only on the leader, and its first poll does not wait one interval. While a rate limit Connect
reported lasts (``ItemSource.rate_limited_for``), polls are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from controllers.constants import ITEM_PATH_ANNOTATION, ITEM_VERSION_ANNOTATION, READY_CONDITION, ConditionReason
from controllers.metrics import LAST_SUCCESSFUL_POLL, POLL_DURATION, POLLS
from controllers.source import ItemSource
from onepassword_access.changes import ChangeReport, VaultChangeDetector
from onepassword_access.errors import RateLimitedError
from onepassword_access.paths import ItemPathError, parse_item_path
from opsync.controller import Controller, Request
from opsync.informer import Informer
from opsync.resources import KubeObject

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Tracked:
    """A managed Secret and the item version it holds."""

    request: Request
    vault_id: str
    item_id: str
    version: str


class Poller:
    """The leader-only runnable polling 1Password (see the module docstring)."""

    name = "connect-poller"

    def __init__(
        self,
        *,
        detector: VaultChangeDetector,
        source: ItemSource,
        secrets: Informer,
        items: Informer,
        item_controller: Controller,
        workload_controller: Controller,
        interval: float,
        paths_in_use: Callable[[], Iterable[str]],
    ) -> None:
        self._detector = detector
        self._source = source
        self._secrets = secrets
        self._items = items
        self._item_controller = item_controller
        self._workload_controller = workload_controller
        self.interval = interval
        self._paths_in_use = paths_in_use
        self._failing = False  # the last poll could not read every vault

    async def run(self, stopping: asyncio.Event) -> None:
        """Poll until ``stopping`` is set."""
        if not await self._wait_for_sync(stopping):
            return
        while not stopping.is_set():
            try:
                await self.poll()
            except Exception:  # a bug in one poll must not stop the next ones, nor the manager
                log.exception("poll failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.interval)

    async def _wait_for_sync(self, stopping: asyncio.Event) -> bool:
        async def synced() -> bool:
            return all(await asyncio.gather(self._secrets.wait_for_sync(), self._items.wait_for_sync()))

        waits = [asyncio.ensure_future(synced()), asyncio.ensure_future(stopping.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        return not stopping.is_set()

    async def poll(self) -> int:
        """One poll; returns how many Secrets were handed to a reconciler."""
        if self._source.rate_limited_for() > 0:
            log.debug("poll skipped: Connect asked to wait")
            POLLS.labels(result="skipped").inc()
            return 0
        started = time.monotonic()
        tracked = list(self._tracked())
        report = await self._detector.poll({t.vault_id for t in tracked})
        for error in report.errors.values():
            if isinstance(error, RateLimitedError):
                self._source.note_rate_limit(error)
        for vault_id, change in report.changes.items():
            self._source.observe(vault_id, change.versions, change.removed)
        # Items of a vault that became uncheckable (or checkable again) are reconciled once, so that their
        # Ready condition says so; their data is left as it is.
        flipped = {v for v in {t.vault_id for t in tracked} if self._source.note_check(v, report.errors.get(v))}
        # Connect answers again: what failed for want of it is retried now, not when its backoff (up to
        # 5 minutes) ends, so everything recovers within one poll of the end of an outage.
        recovered, self._failing = self._failing and not report.errors, bool(report.errors)
        enqueued = self._retry_unavailable_items() if recovered or (flipped - report.errors.keys()) else 0
        for entry in tracked:
            if entry.vault_id in flipped and self._items.get(entry.request.namespace, entry.request.name):
                self._item_controller.enqueue(entry.request)
            elif self._drifted(entry, report) and self._enqueue(entry.request, even_in_backoff=recovered):
                enqueued += 1
        self._source.retain(self._paths_in_use())
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

    def _tracked(self) -> Iterator[Tracked]:
        for secret in self._secrets.list():
            annotations = secret["metadata"].get("annotations") or {}
            version = annotations.get(ITEM_VERSION_ANNOTATION)
            try:
                path = parse_item_path(annotations.get(ITEM_PATH_ANNOTATION) or "")
            except ItemPathError:
                continue
            if version:
                yield Tracked(Request.of(secret), path.vault, path.item, version)

    def _drifted(self, entry: Tracked, report: ChangeReport) -> bool:
        versions = self._detector.versions(entry.vault_id)
        if versions is None:
            return False  # the vault was never read: nothing known
        if entry.item_id in versions:
            return str(versions[entry.item_id]) != entry.version
        change = report.changes.get(entry.vault_id)
        return change is not None and entry.item_id in change.removed  # gone: its reconciler reports it

    def _enqueue(self, request: Request, *, even_in_backoff: bool = False) -> bool:
        """Hand ``request`` to its reconciler, unless it is retrying with backoff already (and not
        ``even_in_backoff``)."""
        owned_by_item = self._items.get(request.namespace, request.name) is not None
        controller = self._item_controller if owned_by_item else self._workload_controller
        if controller.queue.num_requeues(request) > 0 and not even_in_backoff:
            return False  # failing and retrying with backoff already
        controller.enqueue(request)
        return True

    def _retry_unavailable_items(self) -> int:
        """Enqueue the OnePasswordItems whose ``Ready`` condition says Connect was unavailable (those that
        failed, and those in sync that could not be checked)."""
        waiting = [Request.of(opi) for opi in self._items.list() if _ready_reason(opi) == _CONNECT_UNAVAILABLE]
        for request in waiting:
            self._item_controller.enqueue(request)
        return len(waiting)


_CONNECT_UNAVAILABLE = ConditionReason.CONNECT_UNAVAILABLE


def _ready_reason(opi: KubeObject) -> str | None:
    """The reason of an item's cached ``Ready`` condition."""
    for condition in (opi.get("status") or {}).get("conditions") or []:
        if condition.get("type") == READY_CONDITION:
            return str(condition.get("reason"))
    return None
