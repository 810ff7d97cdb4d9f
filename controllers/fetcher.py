"""Items for the reconcilers: fetched from Connect once per version and shared.

The reconcilers are level-triggered: any event (their own writes, a hand edit, a relist) makes them compute
the desired Secret again, and that needs the item. Asking Connect every time would cost a request per event
(the Go operator fetches the item on every Deployment event). ``ItemFetcher`` instead keeps the last item it
got for each path and hands it out again while it is current, where *current* means the poller has not seen
a newer version of that item since. So:

- a reconcile that finds everything in sync, or repairs a hand-edited Secret, calls Connect only if the item
  changed (the poller says so) or was never fetched (after a restart);
- several Secrets made from one item cost one fetch: concurrent callers share the request in flight, later
  ones the result.

The items held here are the same data the managed Secrets' cache holds; nothing is logged from them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime

from controllers.constants import RATE_LIMIT_REQUEUE
from controllers.secretdata import ItemInput, item_input_from_connect
from onepassword_access.errors import RateLimitedError
from onepassword_access.paths import parse_item_path
from onepassword_access.resolve import ItemResolver, ResolvedItem, ResolveError

log = logging.getLogger(__name__)

ItemKey = tuple[str, str]
"""(vault id, item id)."""


class ItemFetcher:
    """Resolved items by path, reused until the poller reports a newer version."""

    def __init__(self, resolver: ItemResolver, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._resolver = resolver
        self._clock = clock
        self._items: dict[str, ResolvedItem] = {}  # path as written (titles or ids) -> last result
        self._inflight: dict[str, asyncio.Task[ResolvedItem]] = {}
        self._downloads: dict[tuple[str, str, int], asyncio.Task[ResolvedItem]] = {}  # files, per item version
        self._latest: dict[ItemKey, int] = {}  # newest version the poller has seen
        self._gone: set[ItemKey] = set()  # items the poller saw disappear
        self._paused_until = 0.0  # clock() before which Connect asked not to be called (429)
        self._unchecked: dict[str, tuple[datetime, str]] = {}  # vault id -> (failing since, why), from the poller

    async def get(
        self, path: str, authorize: Callable[[ResolvedItem], None] = lambda _resolved: None, *, fresh: bool = False
    ) -> tuple[ResolvedItem, ItemInput]:
        """The item at ``path`` with the input to build its Secret; ``fresh``: from 1Password now, even if the
        held copy is current (a spec edit or an ``opsync.dev/refresh`` asks for 1Password's state right now).

        ``authorize`` sees the resolved item before any of its files is downloaded, and raises to refuse it.
        Raises ``ItemPathError`` for a malformed path, ``ResolveError`` when Connect cannot provide it, and
        ``RateLimitedError`` without asking Connect while a rate limit it reported lasts.
        """
        parse_item_path(path)  # a malformed path fails here, never reaching Connect
        held = self._items.get(path)
        if fresh or held is None or not self._current(held):
            held = await self._fetch(path, fresh=fresh)
        authorize(held)
        full = await self._with_files(held)
        return full, item_input_from_connect(full.item, full.files)

    async def _with_files(self, held: ResolvedItem) -> ResolvedItem:
        if not held.item.files:
            return held
        key = (held.vault_id, held.item.id, held.version)
        task = self._downloads.get(key)
        if task is None:
            task = asyncio.create_task(self._resolver.with_files(held), name=f"files of {held.item.id}")
            self._downloads[key] = task
            task.add_done_callback(lambda _done: self._downloads.pop(key, None))
        return await asyncio.shield(task)  # as in _fetch: one caller's cancellation is not the others'

    def rate_limited_for(self) -> float:
        """Seconds until Connect may be called again after a 429 (0: now)."""
        return max(0.0, self._paused_until - self._clock())

    def note_rate_limit(self, error: RateLimitedError) -> None:
        """1Password said "rate limited" (Connect's 429, the SDK's ``RateLimitExceededException``) to anyone:
        nobody calls it before its ``Retry-After`` (the SDK gives none: 15 minutes).

        1Password's limits are per token, so one item's limit is every item's: retrying the others, or
        polling, would only prolong it.
        """
        wait = error.retry_after if error.retry_after else RATE_LIMIT_REQUEUE
        if self._clock() + wait > self._paused_until:
            self._paused_until = self._clock() + wait
            log.warning("1Password rate limit: no requests for %.0f seconds", wait)

    def _current(self, held: ResolvedItem) -> bool:
        key = (held.vault_id, held.item.id)
        return key not in self._gone and held.version >= self._latest.get(key, held.version)

    async def _fetch(self, path: str, *, fresh: bool = False) -> ResolvedItem:
        if (wait := self.rate_limited_for()) > 0:
            raise RateLimitedError(f"rate limited by 1Password; next request in {wait:.0f}s", retry_after=wait)
        task = self._inflight.get(path)
        # A fresh fetch does not join a request sent before it was asked for: that one may predate the change.
        if task is None or fresh:
            task = asyncio.create_task(self._resolver.resolve(path, files=False), name=f"resolve {path}")
            self._inflight[path] = task
            task.add_done_callback(lambda done: self._settle(path, done))
        # Shielded: a caller that is cancelled (reconcile timeout) must not cancel the others' request.
        return await asyncio.shield(task)

    def _settle(self, path: str, task: asyncio.Task[ResolvedItem]) -> None:
        if self._inflight.get(path) is task:
            del self._inflight[path]
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            cause = error.cause if isinstance(error, ResolveError) else error
            if isinstance(cause, RateLimitedError):
                self.note_rate_limit(cause)
            return
        result = task.result()
        key = (result.vault_id, result.item.id)
        self._unchecked.pop(result.vault_id, None)  # Connect just answered for this vault
        self._gone.discard(key)
        self._latest[key] = max(self._latest.get(key, 0), result.version)
        held = self._items.get(path)
        if held is None or (held.vault_id, held.item.id) != key or result.version >= held.version:
            self._items[path] = result  # an older request finishing last does not replace a newer answer

    def held(self) -> set[ItemKey]:
        """The items held, whether or not a Secret was made from them (a policy may deny it): the poller
        follows their versions too, so a change in 1Password reaches them."""
        return {(held.vault_id, held.item.id) for held in self._items.values()}

    def observe(self, vault_id: str, versions: Mapping[str, int], removed: Iterable[str] = ()) -> None:
        """Record what the poller saw in a vault: every item's version, and the items that are gone."""
        for item_id, version in versions.items():
            key = (vault_id, item_id)
            self._latest[key] = max(self._latest.get(key, 0), version)
            self._gone.discard(key)
        for item_id in removed:
            self._gone.add((vault_id, item_id))

    def note_check(self, vault_id: str, error: Exception | None) -> bool:
        """Record whether the poller could check a vault; True when that changed (failing or recovered)."""
        if error is None:
            return self._unchecked.pop(vault_id, None) is not None
        known = self._unchecked.get(vault_id)
        self._unchecked[vault_id] = (known[0] if known else datetime.now(UTC), str(error))
        return known is None

    def unchecked(self, vault_id: str) -> tuple[datetime, str] | None:
        """Since when, and why, the poller cannot check the items of a vault (None: it can)."""
        return self._unchecked.get(vault_id)

    def retain(self, paths: Iterable[str]) -> None:
        """Drop the items of paths no longer used by any OnePasswordItem, workload or Secret."""
        keep = set(paths)
        for path in self._items.keys() - keep:
            del self._items[path]
        self._resolver.retain_files(held.item.id for held in self._items.values())

    async def close(self) -> None:
        """Cancel requests still in flight (at shutdown)."""
        tasks = [*self._inflight.values(), *self._downloads.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
