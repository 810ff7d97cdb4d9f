"""Item paths to items, with the Go operator's rules and less traffic.

Rules (as ``GetOnePasswordItemByPath``): the vault segment is first looked up as a vault name
(case-insensitive), then taken as an id if it looks like one; the item segment is fetched by id when it looks
like one, falling back to a title lookup (a 26-character title looks like an id; titles match as the backend
says: case-insensitively with Connect, exactly with the SDK, as the Go operator's two clients do). Several
matches: the oldest ``createdAt`` wins, ties broken by id so the choice is stable (the Go operator's is not,
issue #252).
Error texts are the Go operator's.

Unlike the Go operator, an ``ItemResolver`` remembers what a path resolved to, so resolving it again costs
one read of the item (the memory is dropped when that finds nothing or the item no longer has the title),
remembers vault names across items (dropped when the vault is not found), and downloads a file only when the
item's version changed. A vault name's id is looked up again after ``VAULT_NAME_TTL`` (a vault renamed, and
another given its old name, must not keep mapping the name to the wrong vault); it cannot notice an older item
renamed to a remembered title.
Concurrent callers of one path share one resolution in the operator's ``controllers.fetcher.ItemFetcher``.

Titles are resolved from a listing of the vault's items (``Backend.list_all_items``, one request shared by every
title of the vault for ``LISTING_TTL`` seconds, and replaced by any newer listing the poller read:
``note_listing``), then one read of the chosen item by id. The listing may be older than the item: a title it
does not have, an item it names that is gone or no longer has the title, or a title it finds on an item that is
not active, fall back to the backend's title lookup (the Go operator's one request), so a stale listing can cost
a request but never picks another item than the lookup would, except an older item renamed to the title
meanwhile (as with the remembered paths above). Concurrent lookups of one vault name share one request too.

``verify`` answers, from the latest listing and without any request, whether a path still resolves to the ids
a Secret was made from, at the version it holds (a restart with every Secret in sync: ``controllers.fetcher``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import TypeVar

from onepassword_access.backend import Backend
from onepassword_access.errors import ConnectError, InvalidResponseError, NotFoundError, TooLargeError
from onepassword_access.limits import MAX_FILE_BYTES
from onepassword_access.models import File, Item, ItemSummary, Listed, Ref, Vault
from onepassword_access.paths import ItemPath, go_quote, looks_like_id, parse_item_path

log = logging.getLogger(__name__)

_EARLIEST = datetime.min.replace(tzinfo=UTC)  # a missing createdAt sorts first, like Go's zero time
Dated = TypeVar("Dated", Vault, ItemSummary, Listed)
T = TypeVar("T")
VAULT_NAME_TTL = 600.0
"""Seconds a vault name → id lookup is reused (the Go operator looks it up on every request)."""
LISTING_TTL = VAULT_NAME_TTL
"""Seconds a vault's item listing taken to resolve titles is reused (listings the poller takes replace it)."""


@dataclass(frozen=True, slots=True)
class VaultListing:
    """The items of one vault as listed at ``taken`` (the resolver's clock), by id and by case-folded title."""

    taken: float
    items: Mapping[str, Listed]
    titles: Mapping[str, tuple[Listed, ...]]

    @classmethod
    def of(cls, listed: Iterable[Listed], taken: float) -> VaultListing:
        items = {entry.id: entry for entry in listed}
        titles: dict[str, list[Listed]] = {}
        for entry in items.values():
            titles.setdefault(entry.title.casefold(), []).append(entry)
        return cls(taken, items, {title: tuple(found) for title, found in titles.items()})


class ResolveErrorKind(Enum):
    """Why a path did not resolve."""

    VAULT_NOT_FOUND = "vault-not-found"
    """No vault has the segment as its name, and the segment is no vault id."""
    ITEM_NOT_FOUND = "item-not-found"
    """No item of the vault has the segment as its title."""
    CONNECT = "connect"
    """A Connect request failed (``ResolveError.cause``), including a 404 for an id."""


class ResolveError(Exception):
    """An item path could not be resolved: ``kind`` says why; ``cause`` is the Connect error behind it (set
    exactly when ``kind`` is ``CONNECT``). The message is the Go operator's text."""

    def __init__(self, kind: ResolveErrorKind, message: str, cause: ConnectError | None = None) -> None:
        if (cause is not None) != (kind is ResolveErrorKind.CONNECT):
            raise ValueError(f"a {kind.value} ResolveError {'needs' if cause is None else 'has no'} a Connect cause")
        super().__init__(message)
        self.kind = kind
        self.cause = cause


@dataclass(frozen=True, slots=True)
class ResolvedItem:
    """An item with its vault id and the content of each of its files (by file id)."""

    item: Item
    vault_id: str
    files: Mapping[str, bytes] = field(repr=False)  # file contents are secrets: kept out of reprs

    @property
    def path(self) -> ItemPath:
        """The path by ids, as the Go operator writes it in the ``item-path`` annotation."""
        return ItemPath(self.vault_id, self.item.id)

    @property
    def version(self) -> int:
        """The item's version (the ``item-version`` annotation)."""
        return self.item.version


def oldest(candidates: Sequence[Dated]) -> Dated:
    """The earliest created; equal timestamps are decided by id."""
    return min(candidates, key=lambda c: (c.created_at or _EARLIEST, c.id))


class ItemResolver:
    """Resolves ``vaults/<vault>/items/<item>`` paths through one ``Backend`` (Connect or the SDK)."""

    def __init__(
        self,
        backend: Backend,
        *,
        vault_name_ttl: float = VAULT_NAME_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``vault_name_ttl``: seconds a vault name's id is trusted before it is looked up again (a vault
        renamed, and another given its old name, must not keep mapping the name to the wrong vault)."""
        self._backend = backend
        self._ids: dict[ItemPath, ItemPath] = {}  # path asked for -> path by ids
        self._vault_ids: dict[str, tuple[str, float]] = {}  # vault segment, case-folded -> (vault id, when)
        self._files: dict[str, tuple[int, dict[str, bytes]]] = {}  # item id -> (version, file id -> content)
        self._vault_name_ttl = vault_name_ttl
        self._clock = clock
        self._listings: dict[str, VaultListing] = {}  # vault id -> its latest listing
        self._listing_tasks: dict[str, asyncio.Task[VaultListing]] = {}
        self._vault_tasks: dict[str, asyncio.Task[str]] = {}  # vault segment, case-folded -> its lookup

    def note_listing(self, vault_id: str, listed: Iterable[Listed]) -> None:
        """A listing of every item of ``vault_id`` that someone else (the poller) just read."""
        self._keep_listing(vault_id, VaultListing.of(listed, self._clock()))

    def note_vaults(self, vaults: Iterable[Vault]) -> None:
        """Every vault the credentials read, just listed by someone else (the poller): each name's vault by the
        usual rule (the oldest of those so named), remembered as a lookup of that name would be."""
        named: dict[str, list[Vault]] = {}
        for vault in vaults:
            named.setdefault(vault.name.casefold(), []).append(vault)
        now = self._clock()
        for name, matches in named.items():
            self._vault_ids[name] = (oldest(matches).id, now)

    def _keep_listing(self, vault_id: str, listing: VaultListing) -> None:
        held = self._listings.get(vault_id)
        if held is None or listing.taken >= held.taken:  # an older listing finishing last does not win
            self._listings[vault_id] = listing

    def has_listing(self, vault_id: str) -> bool:
        """Whether a listing of the vault is held."""
        return vault_id in self._listings

    def verify(self, path: ItemPath, made_from: ItemPath, version: int) -> Item | None:
        """Whether ``path`` still resolves to ``made_from`` (ids) at ``version``, by the latest listing of its
        vault alone (no request): the item as listed (no fields: enough for access policies), else None.

        The vault segment must be the vault's id, or a name remembered for it (``note_vaults``, or a lookup);
        the item segment its id, or its title with no older active item of that title in the listing.
        """
        listing = self._listings.get(made_from.vault)
        if listing is None or not looks_like_id(made_from.item):
            return None
        listed = listing.items.get(made_from.item)
        if listed is None or not listed.active or listed.version != version:
            return None
        if not self._vault_fresh(path.vault, made_from.vault):
            return None
        if path.item != made_from.item:
            candidates = self._titled(listing, path.item)
            if not candidates or not all(c.active for c in candidates) or oldest(candidates).id != listed.id:
                return None
        return Item(
            id=listed.id,
            title=listed.title,
            vault=Ref(id=made_from.vault),
            version=listed.version,
            tags=list(listed.tags),
            created_at=listed.created_at,
        )

    def _titled(self, listing: VaultListing, title: str) -> list[Listed]:
        return [c for c in listing.titles.get(title.casefold(), ()) if self._same_title(title, c.title)]

    def retain_files(self, item_ids: Iterable[str]) -> None:
        """Drop the file contents held for items other than ``item_ids`` (items no longer in use)."""
        keep = set(item_ids)
        for item_id in self._files.keys() - keep:
            del self._files[item_id]

    async def resolve(self, path: ItemPath | str, *, files: bool = True) -> ResolvedItem:
        """The item at ``path``; raises ``ItemPathError`` for a malformed path, ``ResolveError`` otherwise.

        ``files=False``: without file contents (``files`` empty), so that the caller can decide whether it
        may have them before any is downloaded (``with_files``).
        """
        return await self._resolve(parse_item_path(path) if isinstance(path, str) else path, files)

    async def _resolve(self, path: ItemPath, files: bool) -> ResolvedItem:
        known = self._ids.get(path)
        if known is not None and not self._vault_fresh(path.vault, known.vault):
            known = None  # the vault's name is looked up again: it may name another vault now
        if known is not None:
            item = await self._remembered(path, known)
            if item is not None:
                resolved = ResolvedItem(item=item, vault_id=known.vault, files={})
                return await self.with_files(resolved) if files else resolved
            self._ids.pop(path, None)
        vault_id = await self._vault_id(path.vault)
        try:
            item = await self._item(vault_id, path.item)
        except ResolveError as err:
            if isinstance(err.cause, NotFoundError):  # the vault may be gone: look its name up again next time
                self._vault_ids.pop(path.vault.casefold(), None)
            raise
        self._ids[path] = ItemPath(vault_id, item.id)
        resolved = ResolvedItem(item=item, vault_id=vault_id, files={})
        return await self.with_files(resolved) if files else resolved

    async def _remembered(self, path: ItemPath, known: ItemPath) -> Item | None:
        """The item at the remembered ids, or None when it is gone or no longer has the title asked for."""
        try:
            item = await self._backend.get_item(known.vault, known.item)
        except NotFoundError:
            self._files.pop(known.item, None)
            self._vault_ids.pop(path.vault.casefold(), None)
            return None
        except ConnectError as err:
            raise _item_error(known.vault, path.item, err) from err
        if path.item != item.id and not self._same_title(path.item, item.title):
            return None  # renamed: the title may now belong to another item
        return item

    def _same_title(self, asked: str, title: str) -> bool:
        return asked == title if self._backend.titles_case_sensitive else asked.casefold() == title.casefold()

    def _vault_fresh(self, segment: str, vault_id: str) -> bool:
        if segment == vault_id:
            return True
        known = self._vault_ids.get(segment.casefold())
        return known is not None and known[0] == vault_id and self._clock() - known[1] < self._vault_name_ttl

    async def _vault_id(self, segment: str) -> str:
        known = self._vault_ids.get(segment.casefold())
        if known is not None and self._clock() - known[1] < self._vault_name_ttl:
            return known[0]
        key = segment.casefold()
        task = self._vault_tasks.get(key)
        if task is None:  # concurrent lookups of one vault name share one request
            task = asyncio.create_task(self._look_up_vault(segment), name=f"vault {segment}")
            self._vault_tasks[key] = task
            task.add_done_callback(functools.partial(_forget, self._vault_tasks, key))
        return await asyncio.shield(task)

    async def _look_up_vault(self, segment: str) -> str:
        prefix = f"failed to 'getVaultID' for vaultNameOrID='{segment}'"
        try:
            vaults = await self._backend.list_vaults(name=segment)
        except ConnectError as err:
            if looks_like_id(segment):
                return segment  # as the Go operator: the lookup error is moot when the segment is an id
            raise ResolveError(
                ResolveErrorKind.CONNECT, f"{prefix}: failed to get vault by title {go_quote(segment)}: {err}", err
            ) from err
        matches = [vault for vault in vaults if vault.name.casefold() == segment.casefold()]
        if matches:
            chosen = oldest(matches)
            if len(matches) > 1:
                log.info(
                    "several vaults have this name; using the oldest",
                    extra={"vault": segment, "vaultID": chosen.id, "matches": len(matches)},
                )
            self._vault_ids[segment.casefold()] = (chosen.id, self._clock())
            return chosen.id
        if looks_like_id(segment):
            self._vault_ids[segment.casefold()] = (segment, self._clock())
            return segment
        raise ResolveError(
            ResolveErrorKind.VAULT_NOT_FOUND, f"{prefix}: no vaults found with identifier {go_quote(segment)}"
        )

    async def _item(self, vault_id: str, segment: str) -> Item:
        if looks_like_id(segment):
            try:
                return await self._backend.get_item(vault_id, segment)
            except ConnectError as err:
                # An outage would meet a title lookup too, and a malformed answer is no "no such id":
                # searching titles then would report a misleading "no items found".
                if err.transient or isinstance(err, InvalidResponseError | TooLargeError):
                    raise _item_error(vault_id, segment, err) from err
                # else: a 26-character title looks like an id; look it up as a title (Go operator #226)
        listed = await self._from_listing(vault_id, segment)
        if listed is not None:
            return listed
        try:
            summaries = await self._backend.list_items(vault_id, title=segment)
        except ConnectError as err:
            raise _item_error(vault_id, segment, err) from err
        if not summaries:
            raise ResolveError(
                ResolveErrorKind.ITEM_NOT_FOUND,
                f"no items found with identifier {go_quote(segment)} in vault {go_quote(vault_id)}",
            )
        chosen = oldest(summaries)
        if len(summaries) > 1:
            log.info(
                "several items have this title; using the oldest",
                extra={"vaultID": vault_id, "item": segment, "itemID": chosen.id, "matches": len(summaries)},
            )
        try:
            return await self._backend.get_item(vault_id, chosen.id)
        except ConnectError as err:
            raise _item_error(vault_id, segment, err) from err

    async def _from_listing(self, vault_id: str, title: str) -> Item | None:
        """The item titled ``title`` by the vault's listing (listed now if none is held or it is too old), or
        None when the listing cannot tell for sure: then the backend's title lookup decides."""
        held = self._listings.get(vault_id)
        if held is None or self._clock() - held.taken >= LISTING_TTL:
            try:
                held = await self._listing(vault_id)
            except ConnectError as err:
                raise _item_error(vault_id, title, err) from err
        candidates = self._titled(held, title)
        if not candidates or not all(c.active for c in candidates):
            return None  # created since the listing, or no such item; inactive ones: as the lookup decides
        chosen = oldest(candidates)
        if len(candidates) > 1:
            log.info(
                "several items have this title; using the oldest",
                extra={"vaultID": vault_id, "item": title, "itemID": chosen.id, "matches": len(candidates)},
            )
        try:
            item = await self._backend.get_item(vault_id, chosen.id)
        except NotFoundError:
            return None  # deleted since the listing
        except ConnectError as err:
            raise _item_error(vault_id, title, err) from err
        return item if self._same_title(title, item.title) else None  # renamed since: ask by title

    async def _listing(self, vault_id: str) -> VaultListing:
        task = self._listing_tasks.get(vault_id)
        if task is None:  # every title of the vault waits for the same listing
            task = asyncio.create_task(self._list(vault_id), name=f"list {vault_id}")
            self._listing_tasks[vault_id] = task
            task.add_done_callback(
                lambda done: (
                    self._listing_tasks.pop(vault_id, None) if self._listing_tasks.get(vault_id) is done else None
                )
            )
        return await asyncio.shield(task)

    async def _list(self, vault_id: str) -> VaultListing:
        taken = self._clock()
        listing = VaultListing.of(await self._backend.list_all_items(vault_id), taken)
        self._keep_listing(vault_id, listing)
        return self._listings.get(vault_id, listing)

    async def with_files(self, resolved: ResolvedItem) -> ResolvedItem:
        """``resolved`` with its files' contents, downloading only those not already held for this version."""
        item, vault_id = resolved.item, resolved.vault_id
        version, held = self._files.get(item.id, (None, {}))
        if version != item.version:
            held = {}
        contents = {}
        for file in item.files:  # one at a time, as the Go operator: items have few files
            contents[file.id] = held[file.id] if file.id in held else await self._download(vault_id, item, file)
        self._files[item.id] = (item.version, contents)
        return ResolvedItem(item=item, vault_id=vault_id, files=dict(contents))

    async def _download(self, vault_id: str, item: Item, file: File) -> bytes:
        if file.content is None and file.size > MAX_FILE_BYTES:  # refused from its metadata: never downloaded
            cause = TooLargeError(
                f"the file is {file.size} bytes; a Secret holds at most {MAX_FILE_BYTES} bytes",
                limit=MAX_FILE_BYTES,
            )
            raise ResolveError(
                ResolveErrorKind.CONNECT,
                f"file {go_quote(file.name)} of item {go_quote(item.id)} is too large: {cause}",
                cause,
            )
        try:
            return await self._backend.read_file(vault_id, item.id, file)
        except ConnectError as err:
            raise ResolveError(
                ResolveErrorKind.CONNECT,
                f"failed to get content of file {go_quote(file.name)} of item {go_quote(item.id)}: {err}",
                err,
            ) from err


def _forget(tasks: dict[str, asyncio.Task[T]], key: str, done: asyncio.Task[T]) -> None:
    """A done callback: drop ``done`` from ``tasks`` (unless a newer task took its place)."""
    if tasks.get(key) is done:
        del tasks[key]


def _item_error(vault_id: str, segment: str, err: ConnectError) -> ResolveError:
    message = f"failed to get item for vaultID='{vault_id}' and itemNameOrID='{segment}': {err}"
    return ResolveError(ResolveErrorKind.CONNECT, message, err)
