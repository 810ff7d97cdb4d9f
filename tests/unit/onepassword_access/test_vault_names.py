"""Vault names are looked up again (issue 16): a path names its vault by name, policies decide by that name,
and ``ItemResolver`` trusts a name's id for ``VAULT_NAME_TTL`` seconds only. On a fake backend and clock."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from onepassword_access.changes import ChangeReport
from onepassword_access.errors import NotFoundError
from onepassword_access.models import File, Item, ItemSummary, Listed, Ref, Vault
from onepassword_access.resolve import VAULT_NAME_TTL, ItemResolver, ResolveError, ResolveErrorKind

OLD, NEW = "o" * 26, "n" * 26


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Vaults:
    """A backend of vaults (id -> name), each holding one item titled ``db`` whose id is the vault's, uppercased."""

    name = "connect"
    titles_case_sensitive = False

    def __init__(self, vaults: dict[str, str]) -> None:
        self.vaults = vaults
        self.calls: Counter[str] = Counter()

    def _item(self, vault_id: str) -> Item:
        return Item(id=vault_id.upper(), title="db", vault=Ref(id=vault_id), version=1)

    async def list_vaults(self, *, name: str | None = None) -> list[Vault]:
        self.calls["list_vaults"] += 1
        return [Vault(id=i, name=n) for i, n in self.vaults.items() if name is None or n.casefold() == name.casefold()]

    async def list_items(self, vault_id: str, *, title: str) -> list[ItemSummary]:
        return [ItemSummary.model_validate(self._item(vault_id).model_dump())] if vault_id in self.vaults else []

    async def list_all_items(self, vault_id: str) -> list[Listed]:
        if vault_id not in self.vaults:
            raise NotFoundError("status 404: vault not found")
        return [Listed.of(summary) for summary in await self.list_items(vault_id, title="db")]

    async def get_item(self, vault_id: str, item_id: str) -> Item:
        if vault_id not in self.vaults or item_id != vault_id.upper():
            raise NotFoundError("status 404: item not found")
        return self._item(vault_id)

    async def read_file(self, vault_id: str, item_id: str, file: File) -> bytes:
        raise AssertionError("no files here")

    async def poll(self, tracked: Mapping[str, Any], *, keep: Iterable[str] = ()) -> ChangeReport:
        raise AssertionError("not polled here")

    def versions(self, vault_id: str) -> Mapping[str, int] | None:
        return None

    async def close(self) -> None:
        return None


async def test_a_renamed_vault_is_seen_after_the_refresh_period_not_before() -> None:
    """``k8s`` is renamed and another vault takes the name: the path follows the name once its id is looked
    up again, at ``VAULT_NAME_TTL``, and keeps its remembered vault until then."""
    backend, clock = Vaults({OLD: "k8s"}), Clock()
    resolver = ItemResolver(backend, clock=clock)
    assert (await resolver.resolve("vaults/k8s/items/db")).vault_id == OLD

    backend.vaults = {OLD: "k8s-archive", NEW: "k8s"}
    clock.now += VAULT_NAME_TTL - 1
    before = await resolver.resolve("vaults/k8s/items/db")
    assert (before.vault_id, before.item.vault.id) == (OLD, OLD)  # not yet: the name's id is still trusted
    assert backend.calls["list_vaults"] == 1

    clock.now += 1
    after = await resolver.resolve("vaults/k8s/items/db")
    assert (after.vault_id, after.item.vault.id) == (NEW, NEW)
    assert backend.calls["list_vaults"] == 2


async def test_a_renamed_vault_no_vault_took_the_name_of_is_not_found_after_the_refresh_period() -> None:
    backend, clock = Vaults({OLD: "k8s"}), Clock()
    resolver = ItemResolver(backend, clock=clock)
    await resolver.resolve("vaults/k8s/items/db")
    backend.vaults = {OLD: "k8s-archive"}
    clock.now += VAULT_NAME_TTL
    with pytest.raises(ResolveError) as gone:
        await resolver.resolve("vaults/k8s/items/db")
    assert gone.value.kind is ResolveErrorKind.VAULT_NOT_FOUND


async def test_a_vault_recreated_under_the_same_name_is_followed_at_once() -> None:
    """The old vault is deleted and a new one created with its name (a new id): the remembered vault answers
    404, so the name is looked up again then, without waiting for the refresh period."""
    backend, clock = Vaults({OLD: "k8s"}), Clock()
    resolver = ItemResolver(backend, clock=clock)
    await resolver.resolve("vaults/k8s/items/db")
    backend.vaults = {NEW: "k8s"}
    clock.now += 1
    resolved = await resolver.resolve("vaults/k8s/items/db")
    assert (resolved.vault_id, resolved.item.vault.id) == (NEW, NEW)


async def test_names_the_poller_lists_refresh_the_lookup_too() -> None:
    """The poller's vault listing (``note_vaults``) counts as a lookup: a rename it saw is followed at once."""
    backend, clock = Vaults({OLD: "k8s"}), Clock()
    resolver = ItemResolver(backend, clock=clock)
    await resolver.resolve("vaults/k8s/items/db")
    backend.vaults = {OLD: "k8s-archive", NEW: "k8s"}
    resolver.note_vaults(await backend.list_vaults())
    assert (await resolver.resolve("vaults/k8s/items/db")).vault_id == NEW
