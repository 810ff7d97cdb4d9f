"""The poller and 1Password traffic, through Connect and the SDK: what a poll costs, one fetch per changed item,
rate limits, outages, metrics."""

from __future__ import annotations

import pytest

from controllers.items import UNCHECKED_MESSAGE
from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client
from opsync.envtest import ControlPlane
from opsync.metrics import REGISTRY
from opsync.resources import DEPLOYMENTS, SECRETS
from tests.support.harness import CONNECT, BackendKind, Vaults, eventually, run_operator
from tests.support.objects import get_or_none, opi, wait_for_data, wait_for_event, wait_for_ready, workload

pytestmark = pytest.mark.integration

VAULT, OTHER_VAULT = "k8s", "ops"
DB_PATH = f"vaults/{VAULT}/items/db"
OLD, NEW = {"password": "old"}, {"password": "new"}


@pytest.fixture
def vaults() -> Vaults:
    return {
        VAULT: [
            {"title": "db", "fields": [{"label": "password", "value": "old"}]},
            {"title": "api", "fields": [{"label": "token", "value": "t"}]},
        ],
        OTHER_VAULT: [{"title": "mail", "fields": [{"label": "password", "value": "m"}]}],
    }


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_quiet_poll_costs_one_call_per_vault_or_one_in_all(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]) as op:
        await kube.create(ONEPASSWORDITEMS, opi("db", DB_PATH), namespace)
        await kube.create(ONEPASSWORDITEMS, opi("api", f"vaults/{VAULT}/items/api"), namespace)
        await kube.create(ONEPASSWORDITEMS, opi("mail", f"vaults/{OTHER_VAULT}/items/mail"), namespace)
        expected = {"db": OLD, "api": {"token": "t"}, "mail": {"password": "m"}}
        synced = [await wait_for_data(kube, namespace, name, data) for name, data in expected.items()]
        await op.caught_up(synced)
        await op.wait_for_polls(1)  # the first poll after the Secrets exist lists each vault once
        emulator.request_counts.clear()
        writes = len(op.requests.writes())
        await op.wait_for_polls(3)
        await op.settled()
        counts = dict(emulator.request_counts)
        assert set(counts) == {backend.poll_call}
        per_poll = backend.quiet_poll_calls(vaults=2)  # Connect: one GET per vault; the SDK: one vaults.list()
        assert 3 * per_poll <= counts[backend.poll_call] <= 4 * per_poll  # 3 polls (and perhaps one in progress)
        assert len(op.requests.writes()) == writes  # the poller never writes to Kubernetes
        assert sample("opsync_last_successful_poll_timestamp_seconds") > 0


async def test_a_changed_item_is_fetched_once_for_all_its_secrets(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]) as op:
        await kube.create(ONEPASSWORDITEMS, opi("db", DB_PATH), namespace)
        await kube.create(ONEPASSWORDITEMS, opi("db-copy", DB_PATH), namespace)
        await kube.create(DEPLOYMENTS, workload("Deployment", "web", item_path=DB_PATH, item_name="web-db"), namespace)
        await op.caught_up([await wait_for_data(kube, namespace, name, OLD) for name in ("db", "db-copy", "web-db")])
        emulator.request_counts.clear()
        updates = sample("opsync_secret_writes_total", reason="update")
        emulator.update_item(VAULT, "db", fields={"password": "new"})
        await op.caught_up([await wait_for_data(kube, namespace, name, NEW) for name in ("db", "db-copy", "web-db")])
        # Connect: one GET of the item; the SDK: the poll's items.get_all() fetched it (a reconcile running
        # after a later poll began may still ask items.get once)
        fetches = emulator.request_counts[backend.get_item]
        assert fetches == 1 if backend is CONNECT else fetches <= 1
        assert emulator.request_counts[backend.list_items] == 1  # only the vault whose content moved
        assert sample("opsync_secret_writes_total", reason="update") - updates == 3


async def test_changes_one_poll_finds_are_written_oldest_first(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind, vaults: Vaults
) -> None:
    """Changes one poll finds are written in the order they were made in 1Password, across vaults: the
    queues are FIFO, so a change made first never waits behind later ones (one worker makes the order the
    write order)."""
    # title -> (vault, the label of its one field, that field's value), from the fixture
    items = {
        i["title"]: (vault, i["fields"][0]["label"], i["fields"][0]["value"]) for vault, v in vaults.items() for i in v
    }
    labels = {title: (vault, label) for title, (vault, label, _) in items.items()}
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace], workers=1) as op:
        for title, (vault, _) in labels.items():
            await kube.create(ONEPASSWORDITEMS, opi(title, f"vaults/{vault}/items/{title}"), namespace)
        await op.caught_up(
            [await wait_for_data(kube, namespace, title, {label: value}) for title, (_, label, value) in items.items()]
        )

        async def written_after(seen: int, titles: list[str]) -> list[str]:
            """In which order the operator first wrote each of ``titles``' Secrets after its ``seen``-th write, once
            it has read the answers to all of them (the test may see the last Secret before the operator does)."""
            paths = {f"/api/v1/namespaces/{namespace}/secrets/{title}": title for title in titles}

            def found() -> list[str]:
                return list(dict.fromkeys(paths[path] for _, path in op.requests.writes()[seen:] if path in paths))

            await eventually(lambda: len(found()) == len(titles), timeout=10, message=lambda: str(found()))
            return found()

        # Two rounds in opposite orders: whatever order the Secrets were tracked in, one round contradicts it.
        for value, order in (("v1", ["mail", "api", "db"]), ("v2", ["db", "api", "mail"])):
            await op.settled()
            seen = len(op.requests.writes())
            for title in order:  # no await in between: one poll finds every change, each with its updatedAt
                vault, label = labels[title]
                emulator.update_item(vault, title, fields={label: value})
            for title in order:
                await wait_for_data(kube, namespace, title, {labels[title][1]: value})
            assert await written_after(seen, order) == order


async def test_rate_limit_is_reported_and_retried_after_retry_after(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    await emulator.set_faults(status=429, retry_after=120)
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]) as op:
        await kube.create(ONEPASSWORDITEMS, opi("db", DB_PATH), namespace)
        condition = await wait_for_ready(kube, namespace, "db", "False", "RateLimited")
        wait = "2 minutes" if backend is CONNECT else "15 minutes"  # the SDK's rate limit carries no Retry-After
        assert condition["message"] == f"1Password rate limit hit. Requeuing after {wait}."
        event = await wait_for_event(kube, namespace, "db", "RateLimited")
        assert event["message"] == condition["message"]
        await op.settled()
        requests = sum(emulator.request_counts.values())
        await kube.create(ONEPASSWORDITEMS, opi("api", f"vaults/{VAULT}/items/api"), namespace)
        other = await wait_for_ready(kube, namespace, "api", "False", "RateLimited")
        assert other["message"].startswith("1Password rate limit hit. Requeuing after ")
        await op.wait_for_polls(2)
        await op.settled()
        # the limit is the token's: nothing asks 1Password again before Retry-After, polls included
        assert sum(emulator.request_counts.values()) == requests
        if backend is CONNECT:
            assert sample("opsync_connect_requests_total", endpoint="/v1/vaults", code="429") >= 1
        else:
            first_calls = ("Authenticate", "VaultsList")  # signing in meets the limit first, else the vault lookup
            assert sum(sample("opsync_sdk_calls_total", operation=o, outcome="rate_limited") for o in first_calls) >= 1
        assert sample("opsync_polls_total", result="skipped") >= 2


async def test_a_rate_limited_poll_pauses_everything(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]) as op:
        await kube.create(ONEPASSWORDITEMS, opi("db", DB_PATH), namespace)
        await op.caught_up([await wait_for_data(kube, namespace, "db", OLD)])
        await emulator.set_faults(status=429, retry_after=300, match=backend.poll_match)  # the poller's calls
        emulator.update_item(VAULT, "db", fields={"password": "new"})

        async def limited() -> bool:
            return op.operator.fetcher.rate_limited_for() > 0

        await eventually(limited, message="the poller's rate limit did not pause 1Password requests")
        await kube.create(ONEPASSWORDITEMS, opi("api", f"vaults/{VAULT}/items/api"), namespace)
        await wait_for_ready(kube, namespace, "api", "False", "RateLimited")
        assert emulator.request_counts[backend.get_item] == 1  # only db's first fetch: nothing was asked for api
        assert (await kube.get(SECRETS, "db", namespace))["data"]["password"] == "b2xk"  # "old", untouched


async def test_connect_outage_deletes_nothing_and_heals(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]) as op:
        await kube.create(ONEPASSWORDITEMS, opi("db", DB_PATH), namespace)
        before = await wait_for_data(kube, namespace, "db", OLD)
        await op.caught_up([before])
        await emulator.set_faults(outage="503")
        emulator.update_item(VAULT, "db", fields={"password": "new"})
        await kube.create(ONEPASSWORDITEMS, opi("api", f"vaults/{VAULT}/items/api"), namespace)
        condition = await wait_for_ready(kube, namespace, "api", "False", "ConnectUnavailable")
        assert "503" in condition["message"]
        await op.wait_for_polls(2)
        # nothing deleted or emptied meanwhile
        assert (await kube.get(SECRETS, "db", namespace))["data"] == before["data"]
        assert await get_or_none(kube, SECRETS, "api", namespace) is None
        # still Ready (its data is the last good one), saying since when it could not be checked
        unchecked = await wait_for_ready(kube, namespace, "db", "True", "ConnectUnavailable")
        assert unchecked["message"].startswith(UNCHECKED_MESSAGE + " since ") and "503" in unchecked["message"]

        await emulator.clear_faults()
        await wait_for_data(kube, namespace, "db", NEW)
        await wait_for_data(kube, namespace, "api", {"token": "t"})
        await wait_for_ready(kube, namespace, "api", "True", "Synced")
        await wait_for_ready(kube, namespace, "db", "True", "Synced")


async def test_items_gauge_counts_by_reason(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]) as op:
        await kube.create(ONEPASSWORDITEMS, opi("db", DB_PATH), namespace)
        await kube.create(ONEPASSWORDITEMS, opi("missing", f"vaults/{VAULT}/items/missing"), namespace)
        await wait_for_ready(kube, namespace, "db", "True", "Synced")
        await wait_for_ready(kube, namespace, "missing", "False", "ItemNotFound")
        await op.settled()
        assert sample("opsync_items", ready="true", reason="Synced") == 1
        assert sample("opsync_items", ready="false", reason="ItemNotFound") == 1
        if backend is CONNECT:
            assert sample("opsync_connect_requests_total", endpoint="/v1/vaults/{id}/items/{id}", code="200") >= 1
        else:
            assert sample("opsync_sdk_calls_total", operation="ItemsGet", outcome="ok") >= 1
        await kube.delete(ONEPASSWORDITEMS, "missing", namespace)
        await op.caught_up([await kube.get(ONEPASSWORDITEMS, "db", namespace)])

        async def forgotten() -> bool:
            return sample("opsync_items", ready="false", reason="ItemNotFound") == 0

        await eventually(forgotten, message="a deleted item is still counted")
