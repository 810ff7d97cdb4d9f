"""Item resolution (the Go operator's rules, with memory) and vault change detection, against the emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from onepassword_access import (
    ConnectBackend,
    ConnectClient,
    ForbiddenError,
    ItemPath,
    ItemPathError,
    ItemResolver,
    RateLimitedError,
    ResolvedItem,
    ResolveError,
    ResolveErrorKind,
    RetryPolicy,
    VaultChangeDetector,
)
from onepassword_access.emulator import Emulator

DATA = Path(__file__).resolve().parents[2] / "data" / "connect-emulator.yaml"
FAST = RetryPolicy(attempts=3, total=10, backoff=0.01, max_backoff=0.05)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(DATA) as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[ConnectClient]:
    async with ConnectClient(emu.url, "full-token", retry=FAST) as connect:
        yield connect


@pytest.fixture
def resolver(client: ConnectClient) -> ItemResolver:
    return ItemResolver(ConnectBackend(client))


def which(resolved: ResolvedItem | Exception) -> str:
    assert isinstance(resolved, ResolvedItem), resolved
    return next(f.value for f in resolved.item.fields if f.label == "which")


def requests(emu: Emulator) -> int:
    return sum(emu.request_counts.values())


async def test_titles_resolve_to_the_item_its_vault_and_its_files(emu: Emulator, resolver: ItemResolver) -> None:
    resolved = await resolver.resolve("vaults/dEMO/items/db-credentials")
    demo = emu.vault_id("Demo")
    item = emu.get_item("Demo", "db-credentials")
    assert resolved.vault_id == demo
    assert resolved.item.id == item.id
    assert resolved.path == ItemPath(demo, item.id)
    assert str(resolved.path) == f"vaults/{demo}/items/{item.id}"
    assert resolved.version == 1
    assert resolved.files == {item.files[0].id: b"demo certificate\n"}


async def test_ids_resolve_too(emu: Emulator, resolver: ItemResolver) -> None:
    item = emu.get_item("Other", "other-item")
    resolved = await resolver.resolve(ItemPath(item.vault.id, item.id))
    assert which(resolved) == "other"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("vaults/Demo/items/duplicate", "older"),  # the oldest createdAt wins
        ("vaults/Demo/items/tie", "a"),  # equal createdAt: the smaller id, every time
        ("vaults/TWIN/items/which-twin", "twin1"),  # vault names too, case-insensitively
        ("vaults/Demo/items/test26charlongitemtitle123", "title26"),  # looks like an id, is a title
    ],
)
async def test_several_matches_and_id_like_titles(resolver: ItemResolver, path: str, expected: str) -> None:
    assert which(await resolver.resolve(path)) == expected


async def test_errors_carry_the_go_operator_texts(emu: Emulator, resolver: ItemResolver) -> None:
    demo = emu.vault_id("Demo")
    with pytest.raises(ResolveError) as no_vault:
        await resolver.resolve("vaults/Nope/items/x")
    assert str(no_vault.value) == (
        "failed to 'getVaultID' for vaultNameOrID='Nope': no vaults found with identifier \"Nope\""
    )
    assert no_vault.value.kind is ResolveErrorKind.VAULT_NOT_FOUND
    with pytest.raises(ResolveError) as no_item:
        await resolver.resolve("vaults/Demo/items/nope")
    assert str(no_item.value) == f'no items found with identifier "nope" in vault "{demo}"'
    assert no_item.value.cause is None
    assert no_item.value.kind is ResolveErrorKind.ITEM_NOT_FOUND
    missing = "z" * 26
    with pytest.raises(ResolveError) as unknown_vault_id:
        await resolver.resolve(f"vaults/{missing}/items/x")
    assert str(unknown_vault_id.value) == (
        f"failed to get item for vaultID='{missing}' and itemNameOrID='x': status 404: vault {missing} not found"
    )
    assert unknown_vault_id.value.kind is ResolveErrorKind.CONNECT
    with pytest.raises(ItemPathError):
        await resolver.resolve("vaults/Demo/x")


async def test_scope_and_rate_limits_are_reported_with_their_cause(emu: Emulator) -> None:
    async with ConnectClient(emu.url, "reader-token", retry=FAST) as reader:
        with pytest.raises(ResolveError) as forbidden:
            await ItemResolver(ConnectBackend(reader)).resolve(f"vaults/{emu.vault_id('Other')}/items/other-item")
    assert isinstance(forbidden.value.cause, ForbiddenError)
    async with ConnectClient(emu.url, "full-token", retry=FAST) as client:
        await emu.set_faults(status=429, retry_after=60)
        with pytest.raises(ResolveError, match="failed to get vault by title") as limited:
            await ItemResolver(ConnectBackend(client)).resolve("vaults/Demo/items/duplicate")
    assert isinstance(limited.value.cause, RateLimitedError)


async def test_an_outage_on_an_id_lookup_is_not_followed_by_a_title_lookup(
    emu: Emulator, resolver: ItemResolver
) -> None:
    item = emu.get_item("Demo", "duplicate")
    await emu.set_faults(status=503, match="/items/")
    with pytest.raises(ResolveError, match="status 503"):
        await resolver.resolve(f"vaults/{item.vault.id}/items/{item.id}")
    assert emu.request_counts["GET /v1/vaults/{vault}/items"] == 0


async def test_resolving_again_costs_one_request_and_no_download(emu: Emulator, resolver: ItemResolver) -> None:
    first = await resolver.resolve("vaults/Demo/items/db-credentials")
    assert requests(emu) == 4  # vault by name, item by title, the item, its file
    emu.request_counts.clear()
    again = await resolver.resolve("vaults/Demo/items/db-credentials")
    assert again.files == first.files
    assert dict(emu.request_counts) == {"GET /v1/vaults/{vault}/items/{item}": 1}


async def test_files_are_downloaded_again_only_when_the_version_changed(emu: Emulator, resolver: ItemResolver) -> None:
    await resolver.resolve("vaults/Demo/items/db-credentials")
    emu.update_item("Demo", "db-credentials", files={"ca.pem": "rotated certificate\n"})
    emu.request_counts.clear()
    resolved = await resolver.resolve("vaults/Demo/items/db-credentials")
    assert resolved.version == 2
    assert list(resolved.files.values()) == [b"rotated certificate\n"]
    assert requests(emu) == 2  # the item, then its file (new version)


async def test_a_remembered_item_that_is_gone_is_looked_up_again(emu: Emulator, resolver: ItemResolver) -> None:
    before = await resolver.resolve("vaults/Demo/items/duplicate")
    emu.delete_item("Demo", before.item.id)
    after = await resolver.resolve("vaults/Demo/items/duplicate")
    assert (which(before), which(after)) == ("older", "newer")


async def test_a_remembered_item_that_was_renamed_is_looked_up_again(emu: Emulator, resolver: ItemResolver) -> None:
    before = await resolver.resolve("vaults/Demo/items/duplicate")
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer full-token"}) as http:
        patch = [{"op": "replace", "path": "/title", "value": "renamed"}]
        async with http.patch(f"{emu.url}/v1/vaults/{before.vault_id}/items/{before.item.id}", json=patch) as answer:
            assert answer.status == 200
    after = await resolver.resolve("vaults/Demo/items/duplicate")
    assert (which(before), which(after)) == ("older", "newer")


async def test_unchanged_vaults_cost_one_request_each(emu: Emulator, client: ConnectClient) -> None:
    detector = VaultChangeDetector(client)
    vaults = list(emu.store.vaults)
    assert len(vaults) == 4
    first = await detector.poll(vaults)
    assert set(first.changes) == set(vaults)
    assert all(change.first_seen for change in first.changes.values())
    changed = {(c.vault_id, i) for c in first.changes.values() for i in c.changed}
    assert changed == {(v.id, i) for v in emu.store.vaults.values() for i in v.items}
    emu.request_counts.clear()
    second = await detector.poll(vaults)
    assert (second.changes, second.errors) == ({}, {})
    assert dict(emu.request_counts) == {"GET /v1/vaults/{vault}": len(vaults)}


async def test_changed_and_removed_items_are_reported(emu: Emulator, client: ConnectClient) -> None:
    detector = VaultChangeDetector(client)
    demo, other = emu.vault_id("Demo"), emu.vault_id("Other")
    await detector.poll([demo, other])
    changed = emu.update_item("Demo", "db-credentials", fields={"password": "rotated"})
    removed = emu.get_item("Demo", "tie")
    emu.delete_item("Demo", removed.id)
    emu.request_counts.clear()
    report = await detector.poll([demo, other])
    (change,) = report.changes.values()
    assert (change.vault_id, change.changed, change.removed, change.first_seen) == (
        demo,
        frozenset({changed.id}),
        frozenset({removed.id}),
        False,
    )
    assert change.versions[changed.id] == 2
    assert change.changed_at == {changed.id: changed.updated_at.timestamp()}  # the poller hands the oldest on first
    assert emu.request_counts["GET /v1/vaults/{vault}/items"] == 1
    assert detector.versions(demo) == change.versions


async def test_unreadable_vaults_are_reported_and_forgotten_vaults_dropped(emu: Emulator) -> None:
    demo, other = emu.vault_id("Demo"), emu.vault_id("Other")
    async with ConnectClient(emu.url, "reader-token", retry=FAST) as reader:
        detector = VaultChangeDetector(reader)
        report = await detector.poll([demo, other])
        assert set(report.changes) == {demo}
        assert isinstance(report.errors[other], ForbiddenError)
        await detector.poll([])
        assert detector.versions(demo) is None
