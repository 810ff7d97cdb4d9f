"""Cheap change detection: one ``GET`` per vault per poll while nothing changes.

A vault's ``contentVersion`` rises whenever any of its items changes, and item summaries carry each item's
``version``. So a poll reads every vault, and lists the items of only those whose ``contentVersion`` moved:
V unchanged vaults cost V requests, whatever the number of items in them. A poll that reads vaults for the
first time (at start-up) reads them all with one listing of the vaults instead, which also gives the vaults'
names to the item resolver.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from onepassword_access.client import ConnectClient
from onepassword_access.errors import ConnectError
from onepassword_access.models import Listed, Vault


@dataclass(frozen=True, slots=True)
class VaultChange:
    """What changed in one vault since the previous poll."""

    vault_id: str
    content_version: int
    versions: Mapping[str, int]
    """Items now in the vault with their versions: every item (Connect), the tracked ones (the SDK backend)."""
    changed: frozenset[str]
    """Items added or at another version (all of them the first time the vault is seen)."""
    removed: frozenset[str]
    """Items gone."""
    first_seen: bool
    """No earlier poll read this vault, so every item counts as changed."""
    changed_at: Mapping[str, float] = field(default_factory=dict)
    """When each item of ``changed`` changed (its ``updatedAt``, seconds since the epoch), when 1Password said:
    the poller hands the oldest changes on first."""
    listed: tuple[Listed, ...] | None = None
    """The listing the versions came from (Connect: every item, with titles; the SDK backend: None), for the
    item resolver to resolve titles from (``ItemResolver.note_listing``) without asking again. Kept lean
    (``Listed``), not as the client's models: a poll holds every vault's listing until it ends."""


@dataclass(frozen=True, slots=True)
class ChangeReport:
    """One poll: the vaults whose content moved, and the vaults that could not be read."""

    changes: Mapping[str, VaultChange]
    errors: Mapping[str, ConnectError]
    vaults: tuple[Vault, ...] | None = None
    """Every vault the credentials read, when this poll listed them (Connect: a poll reading a vault for the
    first time), for the item resolver's vault names (``ItemResolver.note_vaults``)."""


class VaultChangeDetector:
    """Remembers each vault's ``contentVersion`` and item versions between polls."""

    def __init__(self, client: ConnectClient, *, concurrency: int = 8) -> None:
        self._client = client
        self._concurrency = concurrency
        self._seen: dict[str, tuple[int, dict[str, int]]] = {}  # vault id -> (content version, item versions)

    def versions(self, vault_id: str) -> Mapping[str, int] | None:
        """The item versions of ``vault_id`` as of the last poll that read them, if any."""
        seen = self._seen.get(vault_id)
        return dict(seen[1]) if seen else None

    async def poll(self, vault_ids: Iterable[str], *, keep: Iterable[str] = ()) -> ChangeReport:
        """Read the given vaults; those neither given nor in ``keep`` (vaults not due this time, when vaults are
        polled at different intervals) are forgotten. Errors are per vault and reported."""
        wanted = set(vault_ids)
        for gone in self._seen.keys() - wanted - set(keep):
            del self._seen[gone]
        gate = asyncio.Semaphore(self._concurrency)
        listed: dict[str, Vault] = {}
        vaults: tuple[Vault, ...] | None = None
        if wanted - self._seen.keys():  # vaults never read: one listing of all vaults, not one GET each
            try:
                vaults = tuple(await self._client.list_vaults())
            except ConnectError:
                vaults = None  # each vault is read on its own below, and its error reported there
            listed = {vault.id: vault for vault in vaults or ()}

        async def one(vault_id: str) -> VaultChange | ConnectError | None:
            async with gate:
                try:
                    return await self._poll_vault(vault_id, listed.get(vault_id))
                except ConnectError as err:
                    return err

        ordered = sorted(wanted)
        outcomes = await asyncio.gather(*(one(vault_id) for vault_id in ordered))
        changes = {v: o for v, o in zip(ordered, outcomes, strict=True) if isinstance(o, VaultChange)}
        errors = {v: o for v, o in zip(ordered, outcomes, strict=True) if isinstance(o, ConnectError)}
        return ChangeReport(changes=changes, errors=errors, vaults=vaults)

    async def _poll_vault(self, vault_id: str, listed: Vault | None) -> VaultChange | None:
        vault = listed or await self._client.get_vault(vault_id)
        seen = self._seen.get(vault_id)
        if seen is not None and seen[0] == vault.content_version:
            return None
        # Read after the vault: a change in between moves contentVersion again and is seen next poll.
        entries = tuple(await self._client.list_listed(vault_id))
        versions = {item.id: item.version for item in entries}
        before = seen[1] if seen else {}
        self._seen[vault_id] = (vault.content_version, versions)
        changed = [item for item in entries if before.get(item.id) != item.version]
        return VaultChange(
            vault_id=vault_id,
            content_version=vault.content_version,
            versions=versions,
            changed=frozenset(item.id for item in changed),
            removed=frozenset(before.keys() - versions.keys()),
            first_seen=seen is None,
            changed_at={item.id: item.updated_at.timestamp() for item in changed if item.updated_at},
            listed=entries,
        )
