"""Titles resolved from one vault listing, ``ItemResolver.verify``, and trusting a Secret without its item
(``desired.desired_from_existing``): issue 17's request counts, on a fake backend."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from controllers.constants import DATA_DIGEST_ANNOTATION
from controllers.desired import SecretMetadata, desired_from_existing, desired_secret
from controllers.merge import plan_update
from controllers.secretdata import ItemField, ItemInput
from onepassword_access.changes import ChangeReport
from onepassword_access.errors import NotFoundError
from onepassword_access.models import File, Item, ItemSummary, Listed, Ref, Vault
from onepassword_access.paths import ItemPath
from onepassword_access.resolve import ItemResolver

VAULT = "hfnjvi6aymbsnfc2xeeoheizda"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def item_id(n: int) -> str:
    return f"{n:026d}".replace("0", "a")


class FakeBackend:
    """One vault named ``k8s``; counts calls."""

    name = "connect"
    titles_case_sensitive = False

    def __init__(self, titles: Iterable[str]) -> None:
        self.items = {
            item_id(n): Item(id=item_id(n), title=t, vault=Ref(id=VAULT), version=1, created_at=T0 + timedelta(n))
            for n, t in enumerate(titles)
        }
        self.calls: Counter[str] = Counter()

    async def list_vaults(self, *, name: str | None = None) -> list[Vault]:
        self.calls["list_vaults"] += 1
        await asyncio.sleep(0)
        return [Vault(id=VAULT, name="k8s")] if name in (None, "k8s") else []

    async def list_items(self, vault_id: str, *, title: str) -> list[ItemSummary]:
        self.calls["list_items(title)"] += 1
        return [ItemSummary.model_validate(i.model_dump()) for i in self.items.values() if i.title == title]

    async def list_all_items(self, vault_id: str) -> list[Listed]:
        self.calls["list_all_items"] += 1
        await asyncio.sleep(0)
        return [Listed.of(ItemSummary.model_validate(i.model_dump())) for i in self.items.values()]

    async def get_item(self, vault_id: str, item_id: str) -> Item:
        self.calls["get_item"] += 1
        if item_id not in self.items:
            raise NotFoundError("status 404: item not found")
        return self.items[item_id]

    async def read_file(self, vault_id: str, item_id: str, file: File) -> bytes:
        raise AssertionError("no files here")

    async def poll(self, tracked: Mapping[str, Any], *, keep: Iterable[str] = ()) -> ChangeReport:
        raise AssertionError("not polled here")

    def versions(self, vault_id: str) -> Mapping[str, int] | None:
        return None

    async def close(self) -> None:
        return None


async def test_titles_share_one_listing_of_the_vault() -> None:
    backend = FakeBackend([f"item {n}" for n in range(10)])
    resolver = ItemResolver(backend)
    found = await asyncio.gather(*(resolver.resolve(f"vaults/k8s/items/item {n}") for n in range(10)))
    assert [f.item.id for f in found] == [item_id(n) for n in range(10)]
    assert backend.calls == {"list_vaults": 1, "list_all_items": 1, "get_item": 10}


async def test_what_the_listing_cannot_tell_falls_back_to_the_title_lookup() -> None:
    backend = FakeBackend(["db", "api"])
    resolver = ItemResolver(backend)
    await resolver.resolve("vaults/k8s/items/db")
    backend.calls.clear()
    # renamed since the listing: the title now belongs to another item, which the title lookup finds
    backend.items[item_id(0)] = backend.items[item_id(0)].model_copy(update={"title": "old db"})
    backend.items[item_id(7)] = Item(id=item_id(7), title="db", vault=Ref(id=VAULT), version=1)
    assert (await resolver.resolve("vaults/k8s/items/db")).item.id == item_id(7)
    # created since the listing
    backend.items[item_id(8)] = Item(id=item_id(8), title="new", vault=Ref(id=VAULT), version=1)
    assert (await resolver.resolve("vaults/k8s/items/new")).item.id == item_id(8)
    # deleted since the listing
    del backend.items[item_id(1)]
    backend.items[item_id(9)] = Item(id=item_id(9), title="api", vault=Ref(id=VAULT), version=1)
    assert (await resolver.resolve("vaults/k8s/items/api")).item.id == item_id(9)
    assert backend.calls["list_items(title)"] == 3


async def test_verify_trusts_only_the_listed_id_and_version() -> None:
    backend = FakeBackend(["db", "api"])
    resolver = ItemResolver(backend)
    made_from = ItemPath(VAULT, item_id(0))
    assert resolver.verify(ItemPath("k8s", "db"), made_from, 1) is None  # nothing listed yet
    summaries = [Listed.of(ItemSummary.model_validate(i.model_dump())) for i in backend.items.values()]
    resolver.note_listing(VAULT, summaries)
    assert resolver.verify(ItemPath("k8s", "db"), made_from, 1) is None  # the vault name is not known
    resolver.note_vaults([Vault(id=VAULT, name="k8s")])
    assert backend.calls == {}
    listed = resolver.verify(ItemPath("k8s", "DB"), made_from, 1)  # Connect's titles: any case
    assert listed is not None and (listed.id, listed.title, listed.vault.id) == (item_id(0), "db", VAULT)
    assert resolver.verify(ItemPath(VAULT, item_id(0)), made_from, 1) is not None
    assert resolver.verify(ItemPath("k8s", "db"), made_from, 2) is None  # another version
    assert resolver.verify(ItemPath("k8s", "api"), made_from, 1) is None  # another item
    older = ItemSummary(id=item_id(5), title="db", vault=Ref(id=VAULT), version=1, created_at=T0 - timedelta(1))
    resolver.note_listing(VAULT, [*summaries, Listed.of(older)])
    assert resolver.verify(ItemPath("k8s", "db"), made_from, 1) is None  # the title resolves to the older one
    resolver.note_listing(VAULT, summaries[1:])
    assert resolver.verify(ItemPath("k8s", "db"), made_from, 1) is None  # gone (recreated: another id)


def test_a_secret_is_trusted_without_its_item_only_as_opsync_wrote_it() -> None:
    item = ItemInput(id=item_id(0), vault_id=VAULT, version=3, title="db", fields=(ItemField("password", "pw"),))
    metadata = SecretMetadata({"team": "a"}, {})
    owners = [{"apiVersion": "onepassword.com/v1", "kind": "OnePasswordItem", "name": "db", "uid": "u"}]
    written = desired_secret(name="db", namespace="ns", item=item, metadata=metadata, owner_references=owners)
    existing = {**written.secret, "metadata": {**written.secret["metadata"], "resourceVersion": "7"}}
    trusted = desired_from_existing(existing, name="db", namespace="ns", metadata=metadata, owner_references=owners)
    assert trusted is not None and plan_update(existing, trusted) is None
    # another label wanted now: an update, of the metadata only
    relabelled = desired_from_existing(
        existing, name="db", namespace="ns", metadata=SecretMetadata({}, {}), owner_references=owners
    )
    assert relabelled is not None and plan_update(existing, relabelled) is not None
    # edited by hand, or built with another ALLOW_EMPTY_VALUES: the item must be fetched
    edited = {**existing, "data": {"password": base64.b64encode(b"edited").decode()}}
    assert desired_from_existing(edited, name="db", namespace="ns", metadata=metadata) is None
    assert desired_from_existing(existing, name="db", namespace="ns", metadata=metadata, allow_empty=True) is None
    unsalted = {**existing, "metadata": {**existing["metadata"], "namespace": "other"}}
    assert desired_from_existing(unsalted, name="db", namespace="other", metadata=metadata) is None
    no_digest = {**existing, "metadata": {**existing["metadata"], "annotations": {}}}
    assert desired_from_existing(no_digest, name="db", namespace="ns", metadata=metadata) is None
    assert DATA_DIGEST_ANNOTATION in written.secret["metadata"]["annotations"]
