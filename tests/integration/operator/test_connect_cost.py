"""Connect requests counted on the emulator (issue 17): an initial sync by title, and restarts with the Secrets
already in sync (nothing fetched), with an item changed, recreated or a Secret edited by hand meanwhile.

Counts are asserted, never times. Shaped Secrets (``spec.extraItems``, ``spec.template``) restart as cheaply;
the SDK backend's restart costs its poll (docs/service-accounts.md): the last test counts its calls.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from typing import Any

import pytest

from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client
from opsync.envtest import ControlPlane
from opsync.metrics import REGISTRY
from opsync.resources import DEPLOYMENTS, SECRETS, KubeObject
from tests.support.harness import SDK, RunningOperator, Vaults, eventually, run_operator
from tests.support.objects import decoded, get_or_none, opi, wait_for_data, workload

pytestmark = pytest.mark.integration

VAULT_NAMES = ("k8s", "ops")
PER_VAULT = 10
N, V = PER_VAULT * len(VAULT_NAMES), len(VAULT_NAMES)
QUIET = 600  # polling interval: only the poll at start-up happens during a test
GET_ITEM = "GET /v1/vaults/{vault}/items/{item}"


def title(vault: str, index: int) -> str:
    return f"{vault} item {index}"  # a title with spaces, as users name items


def secret_name(vault: str, index: int) -> str:
    return f"{vault}-item-{index}"


def password(vault: str, index: int, version: str = "1") -> str:
    return f"{vault}-{index}-v{version}"


NAMES = [(vault, index) for vault in VAULT_NAMES for index in range(PER_VAULT)]


@pytest.fixture
def vaults() -> Vaults:
    return {
        vault: [
            {"title": title(vault, index), "fields": [{"label": "password", "value": password(vault, index)}]}
            for index in range(PER_VAULT)
        ]
        for vault in VAULT_NAMES
    }


def reconciles(controller: str) -> float:
    return sum(
        REGISTRY.get_sample_value("controller_runtime_reconcile_total", {"controller": controller, "result": r}) or 0.0
        for r in ("success", "error", "requeue", "requeue_after")
    )


async def sync_all(kube: Client, namespace: str) -> list[KubeObject]:
    """Apply the N items (by vault and item title) and a Deployment naming a Secret of the first item."""
    await asyncio.gather(
        *(
            kube.create(ONEPASSWORDITEMS, opi(secret_name(v, i), f"vaults/{v}/items/{title(v, i)}"), namespace)
            for v, i in NAMES
        )
    )
    deployment = workload("Deployment", "web", item_path=f"vaults/k8s/items/{title('k8s', 0)}", item_name="web")
    await kube.create(DEPLOYMENTS, deployment, namespace)
    return [
        *[await wait_for_data(kube, namespace, secret_name(v, i), {"password": password(v, i)}) for v, i in NAMES],
        await wait_for_data(kube, namespace, "web", {"password": password("k8s", 0)}),
    ]


async def restarted(
    op: RunningOperator, items_before: float, workloads_before: float, *, items: int = N, workloads: int = 1
) -> None:
    """Wait until every item and the Deployment's Secret was reconciled after the start, then until idle."""

    async def all_reconciled() -> bool:
        return (
            reconciles("onepassworditem") - items_before >= items
            and reconciles("workload-secrets") - workloads_before >= workloads
        )

    await eventually(all_reconciled, timeout=60, message="not every key was reconciled after the restart")
    await op.settled(60)


def total(counts: dict[str, int]) -> int:
    return sum(counts.values())


async def test_initial_sync_by_title_costs_one_listing_per_vault_and_one_get_per_item(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator
) -> None:
    async with run_operator(control_plane, emulator, namespaces=[namespace], polling_interval=QUIET, workers=4) as op:
        emulator.request_counts.clear()
        op.requests.requests.clear()
        op.requests.statuses.clear()
        reconciled_before = reconciles("onepassworditem")
        await op.caught_up(await sync_all(kube, namespace), timeout=60)
        await op.settled(60)
        item_reconciles = reconciles("onepassworditem") - reconciled_before
        counts = dict(emulator.request_counts)
        sent = list(zip(op.requests.requests, op.requests.statuses, strict=True))
    # per vault one name lookup and one listing of its items (shared by its titles), then one GET per item;
    # the Deployment's Secret is made from an item already held
    assert total(counts) <= N + 2 * V, counts
    assert counts[GET_ITEM] == N, counts
    assert counts.get("GET /v1/vaults/{vault}/items", 0) <= V, counts
    # the API server: each new Secret is one create, not a read and a create (docs/benchmarks.md lists each
    # write). A reconcile running again before the cache holds the Secret its last run made may get
    # AlreadyExists (409) and then read it, unless the cache has it by then.
    secrets_path = f"/api/v1/namespaces/{namespace}/secrets"
    creates = [status for (method, path), status in sent if (method, path) == ("POST", secrets_path)]
    reads = [path for (method, path), _ in sent if method == "GET" and path.startswith(secrets_path + "/")]
    assert creates.count(201) == N + 1, creates
    assert len(reads) <= creates.count(409), (creates, reads)
    # One reconcile per item, not two: the watch event of a Secret opsync just wrote (its echo) queues
    # nothing. An echo the watch delivers before the create's answer is back still does, so not exactly N.
    assert N <= item_reconciles < 2 * N, item_reconciles


async def test_a_restart_in_sync_asks_connect_per_vault_only_and_writes_nothing(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator
) -> None:
    settings: dict[str, Any] = {"namespaces": [namespace], "polling_interval": QUIET, "workers": 4}
    async with run_operator(control_plane, emulator, **settings) as op:
        synced = await sync_all(kube, namespace)
        await op.caught_up(synced, timeout=60)

    # 1. Everything in sync: the poll at start-up (one listing of the vaults, one of each vault's items), no
    # item fetched, nothing written.
    emulator.request_counts.clear()
    before = reconciles("onepassworditem"), reconciles("workload-secrets")
    async with run_operator(control_plane, emulator, **settings) as op:
        await restarted(op, *before)
        counts = dict(emulator.request_counts)
        writes = op.requests.writes()
    assert total(counts) <= 2 * V, counts
    assert GET_ITEM not in counts, counts
    assert writes == [], writes

    # 2. While opsync is down: one item changes, one is deleted and recreated under the same title (a new id,
    # version 1 again), and a Secret is edited by hand. Each costs one GET of its item; the rest nothing.
    changed, recreated, edited = ("k8s", 1), ("ops", 2), ("ops", 3)
    emulator.update_item(changed[0], title(*changed), fields={"password": password(*changed, "2")})
    emulator.delete_item(recreated[0], title(*recreated))
    new_item = {"id": "recreated" + "0" * 17, "title": title(*recreated)}  # 1Password never reuses an id
    fields = [{"label": "password", "value": password(*recreated, "new")}]
    emulator.add_item(recreated[0], {**new_item, "fields": fields})
    hand_edited = await kube.get(SECRETS, secret_name(*edited), namespace)
    hand_edited["data"]["password"] = base64.b64encode(b"edited by hand").decode()
    await kube.replace(SECRETS, hand_edited)
    emulator.request_counts.clear()
    before = reconciles("onepassworditem"), reconciles("workload-secrets")
    async with run_operator(control_plane, emulator, **settings) as op:
        await restarted(op, *before)
        expected = {
            changed: password(*changed, "2"),
            recreated: password(*recreated, "new"),
            edited: password(*edited),
        }
        for (vault, index), value in expected.items():
            await wait_for_data(kube, namespace, secret_name(vault, index), {"password": value})
        await op.settled(60)
        counts = dict(emulator.request_counts)
        written = {path.rsplit("/", 1)[-1] for method, path in op.requests.writes() if "/secrets/" in path}

        # 3. A hand edit while opsync runs is repaired too (from the item it now holds: no request).
        emulator.request_counts.clear()
        live = await kube.get(SECRETS, secret_name(*changed), namespace)
        live["data"]["password"] = base64.b64encode(b"edited again").decode()
        await kube.replace(SECRETS, live)
        repaired = await wait_for_data(kube, namespace, secret_name(*changed), {"password": expected[changed]})
        await op.caught_up([repaired])
        repaired_counts = dict(emulator.request_counts)
    assert total(counts) <= 2 * V + len(expected), counts
    assert counts[GET_ITEM] == len(expected), counts
    assert written == {secret_name(*key) for key in expected}, written
    assert GET_ITEM not in repaired_counts, repaired_counts
    assert await untouched(kube, namespace, [k for k in NAMES if k not in expected])


async def untouched(kube: Client, namespace: str, keys: Sequence[tuple[str, int]]) -> bool:
    """Every other Secret still holds its item's first value."""
    for vault, index in keys:
        secret = await get_or_none(kube, SECRETS, secret_name(vault, index), namespace)
        assert decoded(secret) == {"password": password(vault, index)}, (vault, index)
    return True


def shaped(index: int) -> KubeObject:
    """A shaped item: k8s item ``index``, ops item ``index`` merged in with a prefix, and a templated key."""
    body = opi(f"shaped-{index}", f"vaults/k8s/items/{title('k8s', index)}")
    body["spec"] |= {
        "extraItems": [{"itemPath": f"vaults/ops/items/{title('ops', index)}", "prefix": "ops-"}],
        "template": {"data": {"url": "db://{{ fields.password }}"}, "metadata": {"labels": {"tier": "db"}}},
    }
    return body


def shaped_data(index: int, ops_version: str = "1") -> dict[str, str]:
    main = password("k8s", index)
    return {"password": main, "ops-password": password("ops", index, ops_version), "url": f"db://{main}"}


async def test_a_restart_in_sync_fetches_no_item_of_shaped_secrets(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator
) -> None:
    settings: dict[str, Any] = {"namespaces": [namespace], "polling_interval": QUIET, "workers": 4}
    async with run_operator(control_plane, emulator, **settings) as op:
        await asyncio.gather(*(kube.create(ONEPASSWORDITEMS, shaped(i), namespace) for i in range(PER_VAULT)))
        synced = [await wait_for_data(kube, namespace, f"shaped-{i}", shaped_data(i)) for i in range(PER_VAULT)]
        await op.caught_up(synced, timeout=60)

    # 1. In sync: the poll at start-up only; neither the items nor their extra items fetched; nothing written.
    emulator.request_counts.clear()
    before = reconciles("onepassworditem"), reconciles("workload-secrets")
    async with run_operator(control_plane, emulator, **settings) as op:
        await restarted(op, *before, items=PER_VAULT, workloads=0)
        counts = dict(emulator.request_counts)
        writes = op.requests.writes()
    assert total(counts) <= 2 * V, counts
    assert GET_ITEM not in counts, counts
    assert writes == [], writes

    # 2. An extra item changed while opsync was down: that Secret alone is rebuilt (its two items fetched).
    emulator.update_item("ops", title("ops", 1), fields={"password": password("ops", 1, "2")})
    emulator.request_counts.clear()
    before = reconciles("onepassworditem"), reconciles("workload-secrets")
    async with run_operator(control_plane, emulator, **settings) as op:
        await restarted(op, *before, items=PER_VAULT, workloads=0)
        await wait_for_data(kube, namespace, "shaped-1", shaped_data(1, ops_version="2"))
        await op.settled(60)
        counts = dict(emulator.request_counts)
        written = {path.rsplit("/", 1)[-1] for method, path in op.requests.writes() if "/secrets/" in path}
    assert counts[GET_ITEM] == 2, counts
    assert written == {"shaped-1"}, written
    for index in (0, *range(2, PER_VAULT)):
        assert decoded(await kube.get(SECRETS, f"shaped-{index}", namespace)) == shaped_data(index)


async def test_a_restart_in_sync_with_the_sdk_costs_its_poll_and_writes_nothing(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator
) -> None:
    """The SDK's listings carry no item versions (only ``updatedAt``), so its first poll fetches the tracked
    items, 50 a call (``items.get_all``), and the reconcilers take them from there: no ``items.get``. The
    vault names resolve from the poll's ``vaults.list()``; titles from one more ``items.list`` per vault."""
    settings: dict[str, Any] = {"namespaces": [namespace], "polling_interval": QUIET, "workers": 4}
    async with run_operator(control_plane, emulator, SDK, **settings) as op:
        await op.caught_up(await sync_all(kube, namespace), timeout=60)

    emulator.request_counts.clear()
    before = reconciles("onepassworditem"), reconciles("workload-secrets")
    async with run_operator(control_plane, emulator, SDK, **settings) as op:
        await restarted(op, *before)
        counts = {call: n for call, n in emulator.request_counts.items() if call.startswith("SDK ")}
        writes = op.requests.writes()
    assert counts.pop("SDK VaultsList") == 1, counts
    assert counts.pop(SDK.list_items) == 2 * V, counts
    assert counts.pop("SDK ItemsGetAll") == V, counts  # one per vault: 10 items each, 50 a call
    assert counts == {}, counts
    assert writes == [], writes
