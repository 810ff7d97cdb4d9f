"""``SdkBackend`` through the real SDK's Python layer, with the emulator's SDK core in place of the native one.

The same store serves Connect (``ConnectBackend``), so each test can hold the two backends side by side: the
same items make the same Secrets, and the SDK's change detection costs what docs/service-accounts.md says.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from controllers.secretdata import build_secret_data, item_input_from_connect
from onepassword_access import (
    ConnectBackend,
    ConnectClient,
    InvalidResponseError,
    ItemResolver,
    RateLimitedError,
    ResolveError,
    SdkBackend,
    TooLargeError,
    UnauthorizedError,
)
from onepassword_access.emulator import Emulator
from onepassword_access.limits import MAX_FILE_BYTES, MAX_ITEM_BYTES, MIB
from tests.integration.onepassword_access.test_connect_client import replace_file
from tests.support.waiting import eventually

DATA = Path(__file__).resolve().parents[2] / "data" / "connect-emulator.yaml"
TOKEN = "full-token"


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(DATA) as emulator:
        with emulator.sdk_core.installed():
            yield emulator


def sdk_backend(emu: Emulator, calls: Counter[str] | None = None) -> SdkBackend:
    record: Callable[[str, str], None] | None = None
    if calls is not None:
        record = lambda operation, outcome: calls.update([operation])  # noqa: E731
    return SdkBackend(emu.service_account_token(TOKEN), integration_version="0.1.0", on_call=record)


async def test_every_item_makes_the_same_secret_through_both_backends(emu: Emulator) -> None:
    sdk = sdk_backend(emu)
    async with ConnectClient(emu.url, TOKEN) as client:
        connect = ItemResolver(ConnectBackend(client))
        via_sdk = ItemResolver(sdk)
        compared = 0
        for vault in emu.store.vaults.values():
            for item_id in vault.items:
                path = f"vaults/{vault.id}/items/{item_id}"
                a, b = await connect.resolve(path), await via_sdk.resolve(path)
                data_a = build_secret_data(item_input_from_connect(a.item, a.files)).data
                data_b = build_secret_data(item_input_from_connect(b.item, b.files)).data
                assert data_b == data_a, path
                assert (b.version, b.item.title, b.item.tags, b.path) == (a.version, a.item.title, a.item.tags, a.path)
                compared += 1
    assert compared == sum(len(v.items) for v in emu.store.vaults.values()) >= 10


async def test_titles_follow_the_go_operators_sdk_rules(emu: Emulator) -> None:
    resolver = ItemResolver(sdk_backend(emu))
    resolved = await resolver.resolve("vaults/dEMO/items/db-credentials")  # vault names: any case
    assert resolved.item.title == "db-credentials"
    assert resolved.files and next(iter(resolved.files.values())) == b"demo certificate\n"
    with pytest.raises(ResolveError, match='no items found with identifier "DB-credentials"'):
        await resolver.resolve("vaults/Demo/items/DB-credentials")  # item titles: exact, unlike Connect's filter
    older = await resolver.resolve("vaults/Demo/items/duplicate")
    assert next(f.value for f in older.item.fields if f.label == "which") == "older"
    long_title = await resolver.resolve("vaults/Demo/items/test26charlongitemtitle123")  # looks like an id
    assert long_title.item.tags == ["long"]


@pytest.fixture
async def thousand() -> AsyncIterator[Emulator]:
    """N = 1,000 items in 5 vaults."""
    vaults = [
        {
            "name": f"vault-{v}",
            "items": [{"title": f"item-{i}", "fields": [{"label": "k", "value": "v"}]} for i in range(200)],
        }
        for v in range(5)
    ]
    async with Emulator({"tokens": [{"token": TOKEN}], "vaults": vaults}) as emulator:
        with emulator.sdk_core.installed():
            yield emulator


async def test_a_quiet_poll_is_one_call_and_a_change_costs_calls_per_vault_not_per_item(thousand: Emulator) -> None:
    """Every one of the 1,000 items tracked: the benchmark row of docs/service-accounts.md."""
    emu = thousand
    calls: Counter[str] = Counter()
    backend = sdk_backend(emu, calls)
    tracked = {vault.id: set(vault.items) for vault in emu.store.vaults.values()}
    first = await backend.poll(tracked)
    assert not first.errors and len(first.changes) == 5
    assert calls == {"Authenticate": 1, "VaultsList": 1, "ItemsList": 5, "ItemsGetAll": 5 * 4}  # 50 ids a call

    calls.clear()
    for _ in range(3):
        quiet = await backend.poll(tracked)
        assert not quiet.changes and not quiet.errors
    assert calls == {"VaultsList": 3}  # one call per quiet poll, for all 5 vaults

    calls.clear()
    edits = [emu.update_item("vault-2", f"item-{index}", fields={"k": f"v{index}"}) for index in range(20)]
    changed = await backend.poll(tracked)
    assert set(changed.changes) == {emu.vault_id("vault-2")}
    assert len(changed.changes[emu.vault_id("vault-2")].changed) == 20
    # when each changed, for the poller to hand the oldest on first
    assert changed.changes[emu.vault_id("vault-2")].changed_at == {e.id: e.updated_at.timestamp() for e in edits}
    assert calls == {"VaultsList": 1, "ItemsList": 1, "ItemsGetAll": 1}
    item = await backend.get_item(emu.vault_id("vault-2"), emu.get_item("vault-2", "item-7").id)
    assert next(f.value for f in item.fields if f.label == "k") == "v7"
    assert "ItemsGet" not in calls  # the poll's items.get_all already fetched it

    async with ConnectClient(emu.url, TOKEN) as client:
        connect = ConnectBackend(client)
        await connect.poll(tracked)
        emu.request_counts.clear()
        await connect.poll(tracked)
        assert emu.request_counts == {"GET /v1/vaults/{vault}": 5}  # Connect: one GET per vault


async def test_a_deleted_item_is_reported_removed(emu: Emulator) -> None:
    backend = sdk_backend(emu)
    demo = emu.vault_id("Demo")
    item = emu.get_item("Demo", "binary")
    await backend.poll({demo: {item.id}})
    emu.delete_item("Demo", "binary")
    report = await backend.poll({demo: {item.id}})
    assert report.changes[demo].removed == {item.id}
    assert item.id not in (backend.versions(demo) or {})


async def test_the_sdks_own_types_reject_odd_answers(emu: Emulator) -> None:
    backend = sdk_backend(emu)
    demo = emu.vault_id("Demo")
    item_id = emu.get_item("Demo", "db-credentials").id
    await emu.set_faults(body='{"id": 1}', match="^sdk:ItemsGet$")
    with pytest.raises(InvalidResponseError, match="ItemsGet: unexpected answer: ") as caught:
        await backend.get_item(demo, item_id)
    assert "hunter2" not in str(caught.value)
    await emu.set_faults(status=429, match="^sdk:VaultsList$")
    report = await backend.poll({demo: {item_id}})
    assert isinstance(report.errors[demo], RateLimitedError) and not report.changes


@pytest.fixture
async def big() -> AsyncIterator[Emulator]:
    """A file larger than a Secret, an item of 100,000 fields (about 8 MiB as Connect's JSON), a small file."""
    items = [
        {"title": "huge-file", "files": [{"name": "disk.img", "content": "x" * (2 * MIB)}]},
        {"title": "many-fields", "fields": [{"label": f"f{i}", "value": "v"} for i in range(100_000)]},
        {"title": "small-file", "files": [{"name": "key.pem", "content": "small"}]},
    ]
    async with Emulator({"tokens": [{"token": TOKEN}], "vaults": [{"name": "big", "items": items}]}) as emulator:
        with emulator.sdk_core.installed():
            yield emulator


def too_large(err: ResolveError) -> TooLargeError:
    assert isinstance(err.cause, TooLargeError), err
    return err.cause


async def test_answers_beyond_their_bound_are_refused_as_with_connect(big: Emulator) -> None:
    """Issue 16 for the service-account backend: a file announced larger than a Secret holds is never read, an
    item beyond ``MAX_ITEM_BYTES`` makes no model (nor is it kept by a poll, which goes on for the vault), and
    a file read larger than announced is not kept."""
    calls: Counter[str] = Counter()
    backend = sdk_backend(big, calls)
    resolver = ItemResolver(backend)
    with pytest.raises(ResolveError) as file_refused:
        await resolver.resolve("vaults/big/items/huge-file")
    assert f"is too large: the file is {2 * MIB} bytes; a Secret holds at most {MAX_FILE_BYTES} bytes" in str(
        file_refused.value
    )
    assert too_large(file_refused.value).limit == MAX_FILE_BYTES
    assert "ItemsFilesRead" not in calls

    with pytest.raises(ResolveError) as item_refused:
        await resolver.resolve("vaults/big/items/many-fields")
    assert f"the item is larger than opsync accepts ({MAX_ITEM_BYTES // MIB} MiB)" in str(item_refused.value)
    assert too_large(item_refused.value).limit == MAX_ITEM_BYTES

    vault, many = big.vault_id("big"), big.get_item("big", "many-fields").id
    report = await backend.poll({vault: {many}})
    assert not report.errors and many in report.changes[vault].changed  # the change is seen, this item only
    with pytest.raises(TooLargeError):
        await backend.get_item(vault, many)  # not handed out from the poll: refused again

    oversized = "[" + ",".join(["120"] * (MAX_FILE_BYTES + 1)) + "]"  # the SDK's answer: the bytes as numbers
    await big.set_faults(body=oversized, match="^sdk:ItemsFilesRead$")
    with pytest.raises(ResolveError) as read_refused:
        await resolver.resolve("vaults/big/items/small-file")
    assert f"the file is {MAX_FILE_BYTES + 1} bytes" in str(read_refused.value)
    assert too_large(read_refused.value).limit == MAX_FILE_BYTES


async def test_a_rotated_service_account_token_file_is_used_without_a_restart(emu: Emulator, tmp_path: Path) -> None:
    """Issue 16: the token file was read once, so a rotated token needed a restart."""
    token_file = tmp_path / "token"
    token_file.write_text(emu.service_account_token("reader-token") + "\n")
    backend = SdkBackend(
        emu.service_account_token("reader-token"), integration_version="0.1.0", token_file=str(token_file)
    )
    assert {v.name for v in await backend.list_vaults()} == {"Demo"}
    emu.end_token("reader-token", how="revoked")
    replace_file(token_file, emu.service_account_token(TOKEN) + "\n")

    async def every_vault() -> bool:
        try:
            return len(await backend.list_vaults()) > 1
        except UnauthorizedError:
            return False

    await eventually(every_vault, timeout=10, message="the rotated token was not picked up")
    replace_file(token_file, "")  # half-written or emptied: the last good token stays in use
    backend._checked = 0.0  # the next call looks at the file again
    assert await every_vault()
