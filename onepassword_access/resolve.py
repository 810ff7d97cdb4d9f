"""Item paths to items, with the Go operator's rules and less traffic.

Rules (as ``GetOnePasswordItemByPath``): the vault segment is first looked up as a vault name
(case-insensitive), then taken as an id if it looks like one; the item segment is fetched by id when it looks
like one, falling back to a title lookup (a 26-character title looks like an id). Several matches: the
oldest ``createdAt`` wins, ties broken by id so the choice is stable (the Go operator's is not, issue #252).
Error texts are the Go operator's.

Unlike the Go operator, an ``ItemResolver`` remembers what a path resolved to, so resolving it again costs
one ``GET`` of the item (the memory is dropped when that answers 404 or the item no longer has the title),
remembers vault names across items (dropped when the vault answers 404), and downloads a file only when the
item's version changed. What it cannot notice by itself (a vault renamed, an older item renamed to a
remembered title) ``forget()`` clears. A ``ResolveMemo`` scopes one poll: every path
in it is resolved at most once, however many Secrets use it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from onepassword_access.client import ConnectClient, content_path
from onepassword_access.errors import (
    ConnectError,
    InvalidResponseError,
    NotFoundError,
    RateLimitedError,
    TooLargeError,
)
from onepassword_access.limits import MAX_FILE_BYTES
from onepassword_access.models import File, Item, ItemSummary, Vault
from onepassword_access.paths import ItemPath, go_quote, looks_like_id, parse_item_path

log = logging.getLogger(__name__)

_EARLIEST = datetime.min.replace(tzinfo=UTC)  # a missing createdAt sorts first, like Go's zero time
Dated = TypeVar("Dated", Vault, ItemSummary)
VAULT_NAME_TTL = 600.0
"""Seconds a vault name → id lookup is reused (the Go operator looks it up on every request)."""


class ResolveError(Exception):
    """An item path could not be resolved. ``cause`` is the Connect error behind it, if there was one."""

    def __init__(self, message: str, cause: ConnectError | None = None) -> None:
        super().__init__(message)
        self.cause = cause

    @property
    def rate_limited(self) -> bool:
        """Connect answered 429: the Go operator requeues such items after 15 minutes."""
        return isinstance(self.cause, RateLimitedError)


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


class ResolveMemo:
    """Resolutions shared by the callers of one poll: each path is resolved once, errors included."""

    def __init__(self) -> None:
        self._results: dict[ItemPath, asyncio.Future[ResolvedItem]] = {}

    async def run(self, key: ItemPath, compute: Callable[[], Awaitable[ResolvedItem]]) -> ResolvedItem:
        """The result for ``key``: the one already computed or being computed, else ``compute()``'s."""
        shared = self._results.get(key)
        if shared is not None:
            return await asyncio.shield(shared)  # one waiter being cancelled must not cancel the others' result
        shared = asyncio.get_running_loop().create_future()
        self._results[key] = shared
        try:
            result = await compute()
        except asyncio.CancelledError:
            del self._results[key]
            shared.cancel()
            raise
        except Exception as err:
            shared.set_exception(err)
            shared.exception()  # retrieved: nobody else may ever wait for it
            raise
        shared.set_result(result)
        return result

    def add(self, key: ItemPath, result: ResolvedItem) -> None:
        """Remember ``result`` under another path too (its ids)."""
        if key not in self._results:
            self._results[key] = asyncio.get_running_loop().create_future()
            self._results[key].set_result(result)


class ItemResolver:
    """Resolves ``vaults/<vault>/items/<item>`` paths through one ``ConnectClient``."""

    def __init__(
        self,
        client: ConnectClient,
        *,
        vault_name_ttl: float = VAULT_NAME_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``vault_name_ttl``: seconds a vault name's id is trusted before it is looked up again (a vault
        renamed, and another given its old name, must not keep mapping the name to the wrong vault)."""
        self._client = client
        self._ids: dict[ItemPath, ItemPath] = {}  # path asked for -> path by ids
        self._vault_ids: dict[str, tuple[str, float]] = {}  # vault segment, case-folded -> (vault id, when)
        self._files: dict[str, tuple[int, dict[str, bytes]]] = {}  # item id -> (version, file id -> content)
        self._vault_name_ttl = vault_name_ttl
        self._clock = clock

    def retain_files(self, item_ids: Iterable[str]) -> None:
        """Drop the file contents held for items other than ``item_ids`` (items no longer in use)."""
        keep = set(item_ids)
        for item_id in self._files.keys() - keep:
            del self._files[item_id]

    def forget(self) -> None:
        """Drop what was remembered: the next resolutions look everything up again."""
        self._ids.clear()
        self._vault_ids.clear()
        self._files.clear()

    async def resolve(
        self, path: ItemPath | str, *, memo: ResolveMemo | None = None, files: bool = True
    ) -> ResolvedItem:
        """The item at ``path``; raises ``ItemPathError`` for a malformed path, ``ResolveError`` otherwise.

        ``files=False``: without file contents (``files`` empty), so that the caller can decide whether it
        may have them before any is downloaded (``with_files``).
        """
        path = parse_item_path(path) if isinstance(path, str) else path
        if memo is None:
            return await self._resolve(path, files)
        result = await memo.run(self._ids.get(path, path), lambda: self._resolve(path, files))
        memo.add(result.path, result)
        return result

    async def resolve_many(
        self, paths: Iterable[ItemPath | str], *, memo: ResolveMemo | None = None, concurrency: int = 8
    ) -> dict[ItemPath | str, ResolvedItem | Exception]:
        """Resolve several paths (each distinct one once), ``concurrency`` at a time; failures are returned."""
        memo = memo or ResolveMemo()
        gate = asyncio.Semaphore(concurrency)

        async def one(path: ItemPath | str) -> ResolvedItem | Exception:
            async with gate:
                try:
                    return await self.resolve(path, memo=memo)
                except (ResolveError, ValueError) as err:
                    return err

        unique = list(dict.fromkeys(paths))
        return dict(zip(unique, await asyncio.gather(*(one(p) for p in unique)), strict=True))

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
            item = await self._client.get_item(known.vault, known.item)
        except NotFoundError:
            self._files.pop(known.item, None)
            self._vault_ids.pop(path.vault.casefold(), None)
            return None
        except ConnectError as err:
            raise _item_error(known.vault, path.item, err) from err
        if path.item != item.id and path.item.casefold() != item.title.casefold():
            return None  # renamed: the title may now belong to another item
        return item

    def _vault_fresh(self, segment: str, vault_id: str) -> bool:
        if segment == vault_id:
            return True
        known = self._vault_ids.get(segment.casefold())
        return known is not None and known[0] == vault_id and self._clock() - known[1] < self._vault_name_ttl

    async def _vault_id(self, segment: str) -> str:
        known = self._vault_ids.get(segment.casefold())
        if known is not None and self._clock() - known[1] < self._vault_name_ttl:
            return known[0]
        prefix = f"failed to 'getVaultID' for vaultNameOrID='{segment}'"
        try:
            vaults = await self._client.list_vaults(name=segment)
        except ConnectError as err:
            if looks_like_id(segment):
                return segment  # as the Go operator: the lookup error is moot when the segment is an id
            raise ResolveError(f"{prefix}: failed to get vault by title {go_quote(segment)}: {err}", err) from err
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
        raise ResolveError(f"{prefix}: no vaults found with identifier {go_quote(segment)}")

    async def _item(self, vault_id: str, segment: str) -> Item:
        if looks_like_id(segment):
            try:
                return await self._client.get_item(vault_id, segment)
            except ConnectError as err:
                # An outage would meet a title lookup too, and a malformed answer is no "no such id":
                # searching titles then would report a misleading "no items found".
                if err.transient or isinstance(err, InvalidResponseError | TooLargeError):
                    raise _item_error(vault_id, segment, err) from err
                # else: a 26-character title looks like an id; look it up as a title (Go operator #226)
        try:
            summaries = await self._client.list_items(vault_id, title=segment)
        except ConnectError as err:
            raise _item_error(vault_id, segment, err) from err
        if not summaries:
            raise ResolveError(f"no items found with identifier {go_quote(segment)} in vault {go_quote(vault_id)}")
        chosen = oldest(summaries)
        if len(summaries) > 1:
            log.info(
                "several items have this title; using the oldest",
                extra={"vaultID": vault_id, "item": segment, "itemID": chosen.id, "matches": len(summaries)},
            )
        try:
            return await self._client.get_item(vault_id, chosen.id)
        except ConnectError as err:
            raise _item_error(vault_id, segment, err) from err

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
        if file.content is not None:
            return file.content
        if file.size > MAX_FILE_BYTES:  # refused from its metadata: never downloaded
            cause = TooLargeError(
                f"the file is {file.size} bytes; a Secret holds at most {MAX_FILE_BYTES} bytes",
                limit=MAX_FILE_BYTES,
            )
            raise ResolveError(f"file {go_quote(file.name)} of item {go_quote(item.id)} is too large: {cause}", cause)
        try:
            return await self._client.get_file_content(file.content_path or content_path(vault_id, item.id, file.id))
        except ConnectError as err:
            raise ResolveError(
                f"failed to get content of file {go_quote(file.name)} of item {go_quote(item.id)}: {err}", err
            ) from err


def _item_error(vault_id: str, segment: str, err: ConnectError) -> ResolveError:
    return ResolveError(f"failed to get item for vaultID='{vault_id}' and itemNameOrID='{segment}': {err}", err)
