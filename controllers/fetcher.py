"""Items for the reconcilers: fetched from Connect once per version and shared.

The reconcilers are level-triggered: any event (their own writes, a hand edit, a relist) makes them compute
the desired Secret again, and that needs the item. Asking Connect every time would cost a request per event
(the Go operator fetches the item on every Deployment event). ``ItemFetcher`` instead keeps the last item it
got for each path and hands it out again while it is current, where *current* means the poller has not seen
a newer version of that item since. So:

- a reconcile that finds everything in sync, or repairs a hand-edited Secret, calls Connect only if the item
  changed (the poller says so) or was never fetched (after a restart);
- several Secrets made from one item cost one fetch: concurrent callers share the request in flight, later
  ones the result;
- after a restart, nothing is held, but a Secret need not be rebuilt to be known in sync: ``unchanged`` says,
  without a request, that its producer's path still resolves to the ids the Secret was made from at the version
  it holds, by the latest vault listing (the poller's first poll lists every vault it follows; reconciles that
  need one wait for that poll, up to ``FIRST_POLL_WAIT`` seconds). The reconciler then compares the Secret with
  what it would write, its data taken from the Secret itself (``desired.desired_from_existing``: only while the
  data digest it recorded matches, so a Secret edited by hand is still rebuilt from the item).

The items held here are the same data the managed Secrets' cache holds; nothing is logged from them. What is
held is only what a Secret is made from (``ItemInput``) and the item's identity without its fields, URLs and
sections (``_Held``): about a seventh of the pydantic item Connect's answer was parsed into
(docs/benchmarks.md, "Memory").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from controllers.constants import RATE_LIMIT_REQUEUE
from controllers.secretdata import ItemInput, item_input_from_connect
from onepassword_access.errors import ConnectError, RateLimitedError
from onepassword_access.models import Listed, Vault
from onepassword_access.paths import ItemPathError, parse_item_path
from onepassword_access.resolve import ItemResolver, ResolvedItem, ResolveError

log = logging.getLogger(__name__)

ItemKey = tuple[str, str]
"""(vault id, item id)."""
FIRST_POLL_WAIT = 30.0
"""Seconds a reconcile that could trust its Secret without fetching waits for the poller's first listing."""


@dataclass(frozen=True, slots=True)
class _Held:
    """A fetched item as kept: ``resolved`` is its identity, tags and files (what ``authorize`` and the file
    downloads read) without fields, URLs or sections; ``input`` is what its Secret is made from, without file
    contents (downloaded per version by ``_with_files``)."""

    resolved: ResolvedItem
    input: ItemInput


def _held(result: ResolvedItem) -> _Held:
    slim = result.item.model_copy(update={"fields": [], "urls": [], "sections": []})
    return _Held(ResolvedItem(item=slim, vault_id=result.vault_id, files={}), item_input_from_connect(result.item, {}))


class ItemFetcher:
    """Resolved items by path, reused until the poller reports a newer version."""

    def __init__(self, resolver: ItemResolver, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._resolver = resolver
        self._clock = clock
        self._items: dict[str, _Held] = {}  # path as written (titles or ids) -> last result
        self._inflight: dict[str, asyncio.Task[_Held]] = {}
        self._downloads: dict[tuple[str, str, int], asyncio.Task[ResolvedItem]] = {}  # files, per item version
        self._latest: dict[ItemKey, int] = {}  # newest version the poller has seen
        self._gone: set[ItemKey] = set()  # items the poller saw disappear
        self._paused_until = 0.0  # clock() before which Connect asked not to be called (429)
        self._unchecked: dict[str, tuple[datetime, str]] = {}  # vault id -> (failing since, why), from the poller
        self._polled = asyncio.Event()  # the poller finished a poll since this process started

    async def get(
        self, path: str, authorize: Callable[[ResolvedItem], None] = lambda _resolved: None, *, fresh: bool = False
    ) -> tuple[ResolvedItem, ItemInput]:
        """The item at ``path`` (its identity, tags and files: fields, URLs and sections are in the input only)
        with the input to build its Secret; ``fresh``: from 1Password now, even if the held copy is current (a
        spec edit or an ``opsync.dev/refresh`` asks for 1Password's state right now).

        ``authorize`` sees the resolved item before any of its files is downloaded, and raises to refuse it.
        Raises ``ItemPathError`` for a malformed path, ``ResolveError`` when Connect cannot provide it, and
        ``RateLimitedError`` without asking Connect while a rate limit it reported lasts.
        """
        parse_item_path(path)  # a malformed path fails here, never reaching Connect
        held = self._items.get(path)
        if fresh or held is None or not self._current(held.resolved):
            held = await self._fetch(path, fresh=fresh)
        authorize(held.resolved)
        full = await self._with_files(held.resolved)
        return full, replace(held.input, file_contents=dict(full.files)) if full.files else held.input

    def holds_current(self, path: str) -> bool:
        """Whether ``get(path)`` would answer without asking 1Password (a current item is held)."""
        held = self._items.get(path)
        return held is not None and self._current(held.resolved)

    async def unchanged(
        self,
        path: str,
        made_from: str,
        version: str,
        authorize: Callable[[ResolvedItem], None] = lambda _resolved: None,
    ) -> ResolvedItem | None:
        """The item (as listed: no fields) if ``path`` still resolves to ``made_from`` (the Secret's item-path
        annotation, by ids) and the item is still at ``version`` (its item-version), by the latest listing of
        the vault and the versions the poller saw; None when that cannot be told without fetching it.

        No request is sent; this waits for the poller's first poll when the vault was never listed. An item
        ``authorize`` refuses raises, as with ``get``.
        """
        try:
            asked, ids, number = parse_item_path(path), parse_item_path(made_from), int(version)
        except (ItemPathError, ValueError):
            return None
        key = (ids.vault, ids.item)
        if key in self._gone or self._latest.get(key, number) != number:
            return None
        if not self._resolver.has_listing(ids.vault) and not self._polled.is_set():
            try:
                await asyncio.wait_for(self._polled.wait(), FIRST_POLL_WAIT)
            except TimeoutError:
                return None
        item = self._resolver.verify(asked, ids, number)
        if item is None or key in self._gone or self._latest.get(key, number) != number:
            return None
        resolved = ResolvedItem(item=item, vault_id=ids.vault, files={})
        authorize(resolved)
        return resolved

    async def prefetch(self, paths: Iterable[str], *, concurrency: int) -> int:
        """Fetch the items at ``paths`` not held current, ``concurrency`` requests at a time, so that the
        reconcilers find them current (the poller's changes: one request each, sent together instead of one per
        worker at a time). How many were fetched.

        What ``get`` does before its own fetch is the caller's (``AccessControl.admit``); only the items are
        fetched, never their files, which ``get`` downloads after ``authorize``. A request in flight for a path
        is joined, a rate limit stops the rest, and failures are left to the reconcilers' own ``get`` (which
        fetches again and reports them).
        """
        slots = asyncio.Semaphore(concurrency)

        async def one(path: str) -> bool:
            async with slots:
                if self.holds_current(path) or self.rate_limited_for() > 0:
                    return False
                try:
                    await self._fetch(path)
                except (ResolveError, ConnectError):
                    return False
                return True

        valid = []
        for path in dict.fromkeys(paths):
            try:
                parse_item_path(path)
            except ItemPathError:
                continue
            valid.append(path)
        return sum(await asyncio.gather(*(one(path) for path in valid)))

    def note_vaults(self, vaults: Iterable[Vault]) -> None:
        """Every vault the credentials read, as the poller just listed them (their names, for resolving)."""
        self._resolver.note_vaults(vaults)

    def note_poll(self) -> None:
        """The poller finished a poll (whatever it could read): reconciles waiting for a listing go on."""
        self._polled.set()

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

    async def _fetch(self, path: str, *, fresh: bool = False) -> _Held:
        if (wait := self.rate_limited_for()) > 0:
            raise RateLimitedError(f"rate limited by 1Password; next request in {wait:.0f}s", retry_after=wait)
        task = self._inflight.get(path)
        # A fresh fetch does not join a request sent before it was asked for: that one may predate the change.
        if task is None or fresh:
            task = asyncio.create_task(self._resolve(path), name=f"resolve {path}")
            self._inflight[path] = task
            task.add_done_callback(lambda done: self._settle(path, done))
        # Shielded: a caller that is cancelled (reconcile timeout) must not cancel the others' request.
        return await asyncio.shield(task)

    async def _resolve(self, path: str) -> _Held:
        return _held(await self._resolver.resolve(path, files=False))

    def _settle(self, path: str, task: asyncio.Task[_Held]) -> None:
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
        key = (result.resolved.vault_id, result.resolved.item.id)
        self._unchecked.pop(key[0], None)  # Connect just answered for this vault
        self._gone.discard(key)
        version = result.resolved.version
        self._latest[key] = max(self._latest.get(key, 0), version)
        held = self._items.get(path)
        if held is None or held.resolved.path != result.resolved.path or version >= held.resolved.version:
            self._items[path] = result  # an older request finishing last does not replace a newer answer

    def held(self) -> set[ItemKey]:
        """The items held, whether or not a Secret was made from them (a policy may deny it): the poller
        follows their versions too, so a change in 1Password reaches them."""
        return {(held.resolved.vault_id, held.resolved.item.id) for held in self._items.values()}

    def observe(
        self,
        vault_id: str,
        versions: Mapping[str, int],
        removed: Iterable[str] = (),
        *,
        listing: Iterable[Listed] | None = None,
    ) -> None:
        """Record what the poller saw in a vault: every item's version, and the items that are gone; with
        ``listing`` (every item of the vault, as Connect lists them), the resolver resolves titles from it."""
        if listing is not None:
            self._resolver.note_listing(vault_id, listing)
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
        self._resolver.retain_files(held.resolved.item.id for held in self._items.values())

    async def close(self) -> None:
        """Cancel requests still in flight (at shutdown)."""
        tasks = [*self._inflight.values(), *self._downloads.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
