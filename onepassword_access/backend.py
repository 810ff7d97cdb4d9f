"""``Backend``: the one interface to 1Password, whichever way it is reached.

Two implementations: ``ConnectBackend`` (a 1Password Connect server, through ``ConnectClient``) and
``SdkBackend`` (a service account, through 1Password's SDK; ``onepassword_access.sdk``). Both answer in the
models of ``onepassword_access.models`` (the SDK backend maps its items onto them, as the Go operator maps both
of its clients onto one item model) and fail with ``ConnectError`` subclasses, so the resolver
(``onepassword_access.resolve``) and everything above it never know which one they talk to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from typing import Protocol

from onepassword_access.changes import ChangeReport, VaultChangeDetector
from onepassword_access.client import ConnectClient, content_path
from onepassword_access.models import File, Item, ItemSummary, Listed, Vault

Tracked = Mapping[str, Set[str]]
"""Vault id -> the ids of the items in it whose versions the caller follows."""


class Backend(Protocol):
    """What opsync asks of 1Password. Every method may raise a ``ConnectError``."""

    @property
    def name(self) -> str:
        """``connect`` or ``sdk`` (for logs and ``opsync check``)."""
        ...

    @property
    def titles_case_sensitive(self) -> bool:
        """Whether an item title must match in case (the SDK: yes; Connect's filter: no). Vault names never do."""
        ...

    async def list_vaults(self, *, name: str | None = None) -> list[Vault]:
        """The vaults the credentials read; with ``name``, those so named (case-insensitive)."""
        ...

    async def list_items(self, vault_id: str, *, title: str) -> list[ItemSummary]:
        """The active items of a vault with this title (``titles_case_sensitive`` says how it is compared)."""
        ...

    async def list_all_items(self, vault_id: str) -> list[Listed]:
        """Every active item of a vault, with titles (resolving many titles from one listing)."""
        ...

    async def get_item(self, vault_id: str, item_id: str) -> Item:
        """The full item: fields, URLs, tags, version and file metadata (not the files' content)."""
        ...

    async def read_file(self, vault_id: str, item_id: str, file: File) -> bytes:
        """One file's content."""
        ...

    async def poll(self, tracked: Tracked, *, keep: Iterable[str] = ()) -> ChangeReport:
        """What changed in the ``tracked`` vaults since the last poll; vaults neither given nor in ``keep``
        (vaults not due this time, when vaults are polled at different intervals) are forgotten.

        Errors are reported per vault in the report, not raised. ``versions()`` then holds what was learnt.
        """
        ...

    def versions(self, vault_id: str) -> Mapping[str, int] | None:
        """Item id -> version in ``vault_id`` as of the last poll that read it (None: never read)."""
        ...

    async def close(self) -> None:
        """Release connections (idempotent)."""
        ...


class ConnectBackend:
    """A ``Backend`` on a Connect server: a quiet poll costs one ``GET`` per vault (``VaultChangeDetector``)."""

    name = "connect"
    titles_case_sensitive = False

    def __init__(self, client: ConnectClient) -> None:
        self.client = client
        self._detector = VaultChangeDetector(client)

    def __repr__(self) -> str:
        return f"ConnectBackend({self.client!r})"

    async def list_vaults(self, *, name: str | None = None) -> list[Vault]:
        """``GET /v1/vaults`` (with Connect's name filter)."""
        return await self.client.list_vaults(name=name)

    async def list_items(self, vault_id: str, *, title: str) -> list[ItemSummary]:
        """``GET /v1/vaults/{id}/items`` with Connect's title filter."""
        return await self.client.list_items(vault_id, title=title)

    async def list_all_items(self, vault_id: str) -> list[Listed]:
        """``GET /v1/vaults/{id}/items`` (with versions)."""
        return await self.client.list_listed(vault_id)

    async def get_item(self, vault_id: str, item_id: str) -> Item:
        """``GET /v1/vaults/{id}/items/{id}``."""
        return await self.client.get_item(vault_id, item_id)

    async def read_file(self, vault_id: str, item_id: str, file: File) -> bytes:
        """The inline content if the answer carried it, else its ``/content``."""
        if file.content is not None:
            return file.content
        return await self.client.get_file_content(file.content_path or content_path(vault_id, item_id, file.id))

    async def poll(self, tracked: Tracked, *, keep: Iterable[str] = ()) -> ChangeReport:
        """One ``GET`` per tracked vault, plus an item listing (with versions) where ``contentVersion`` moved."""
        return await self._detector.poll(tracked, keep=keep)

    def versions(self, vault_id: str) -> Mapping[str, int] | None:
        """Every item's version in the vault as last listed."""
        return self._detector.versions(vault_id)

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.client.close()
