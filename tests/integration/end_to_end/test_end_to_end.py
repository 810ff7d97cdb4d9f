"""The whole story, and the quiet restart: opsync in-process, the real control plane, the Connect emulator."""

from __future__ import annotations

import pytest

from controllers.constants import AUTO_RESTART_ANNOTATION, LAST_RESTARTED_ANNOTATION, RESTART_VERSIONS_ANNOTATION
from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client
from opsync.envtest import ControlPlane
from opsync.resources import DAEMONSETS, DEPLOYMENTS, NAMESPACES, REPLICASETS, SECRETS, KubeObject
from tests.support.harness import CONNECT, BackendKind, Vaults, eventually, run_operator
from tests.support.objects import decoded, opi, wait_for_data, wait_for_ready, workload

pytestmark = pytest.mark.integration

VAULT = "k8s"
DB_PATH, API_PATH = f"vaults/{VAULT}/items/db", f"vaults/{VAULT}/items/api"
DB = {"username": "admin", "password": "one"}
EXPECTED = {"db": DB, "api": {"token": "t", "ca.crt": "C"}, "named-db": DB}


@pytest.fixture
def vaults() -> Vaults:
    items = [
        {"title": "db", "fields": [{"label": "username", "value": "admin"}, {"label": "password", "value": "one"}]},
        {"title": "api", "fields": [{"label": "token", "value": "t"}], "files": [{"name": "ca.crt", "content": "C"}]},
    ]
    return {VAULT: items}


async def template_stamp(kube: Client, namespace: str, name: str) -> str | None:
    deployment = await kube.get(DEPLOYMENTS, name, namespace)
    return ((deployment["spec"]["template"].get("metadata") or {}).get("annotations") or {}).get(
        LAST_RESTARTED_ANNOTATION
    )


async def replica_sets(kube: Client, namespace: str, deployment: str) -> list[KubeObject]:
    found = (await kube.list(REPLICASETS, namespace))["items"]
    return [rs for rs in found if any(ref["name"] == deployment for ref in rs["metadata"].get("ownerReferences") or [])]


async def test_item_to_secret_to_rollout_to_garbage_collection(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    app = workload("Deployment", "app", env_secret="db", annotations={AUTO_RESTART_ANNOTATION: "true"})
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace], polling_interval=2) as op:
        await kube.create(ONEPASSWORDITEMS, opi("db", DB_PATH), namespace)
        await kube.create(DEPLOYMENTS, app, namespace)
        await op.caught_up([await wait_for_data(kube, namespace, "db", {"username": "admin", "password": "one"})])
        await wait_for_ready(kube, namespace, "db", "True", "Synced")

        async def one_replica_set() -> bool:
            return len(await replica_sets(kube, namespace, "app")) == 1

        await eventually(one_replica_set, message="the deployment controller made no ReplicaSet")
        assert await template_stamp(kube, namespace, "app") is None  # creating the Secret rolls nothing

        emulator.update_item(VAULT, "db", fields={"password": "two"})
        await op.wait_for_polls(2)  # the poll running at the change may have read the vault just before it
        await op.settled()
        assert decoded(await kube.get(SECRETS, "db", namespace)) == {"username": "admin", "password": "two"}
        stamp = await template_stamp(kube, namespace, "app")
        assert stamp is not None

        async def rolled_out() -> bool:
            sets = await replica_sets(kube, namespace, "app")
            return len(sets) == 2

        await eventually(rolled_out, message="the Deployment did not roll out a new ReplicaSet")
        await op.wait_for_polls(2)
        await op.settled()
        assert await template_stamp(kube, namespace, "app") == stamp  # exactly once
        assert len(await replica_sets(kube, namespace, "app")) == 2

        await kube.delete(ONEPASSWORDITEMS, "db", namespace)
        await wait_for_data(kube, namespace, "db", None)


async def test_restart_in_sync_writes_nothing(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    """After a restart with everything in sync, opsync sends no write to the API server. Through Connect it
    fetches no item either: the first poll's listings show each Secret's item at the version it holds
    (tests/integration/operator/test_connect_cost.py counts it all); the SDK backend fetches each item once."""
    await kube.patch(NAMESPACES, namespace, {"metadata": {"annotations": {AUTO_RESTART_ANNOTATION: "true"}}})
    objects = [
        (ONEPASSWORDITEMS, opi("db", DB_PATH, metadata={"labels": {"team": "a"}})),
        (ONEPASSWORDITEMS, opi("api", API_PATH, metadata={"annotations": {AUTO_RESTART_ANNOTATION: "false"}})),
        (DEPLOYMENTS, workload("Deployment", "app", env_secret="db", volume_secret="api")),
        (DEPLOYMENTS, workload("Deployment", "named", item_path=DB_PATH, item_name="named-db")),
        (DAEMONSETS, workload("DaemonSet", "agent", env_from_secret="named-db")),
    ]
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]) as op:
        for resource, manifest in objects:
            await kube.create(resource, manifest, namespace)
        secrets = [await wait_for_data(kube, namespace, name, data) for name, data in EXPECTED.items()]
        await op.caught_up(secrets)

        async def recorded() -> bool:
            names = ("app", "named")
            found = [await kube.get(DEPLOYMENTS, name, namespace) for name in names]
            return all(RESTART_VERSIONS_ANNOTATION in d["metadata"].get("annotations", {}) for d in found)

        await eventually(recorded, message="the restart records were not written")
        await op.wait_for_polls(2)
        await op.settled()

    emulator.request_counts.clear()
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]) as op:
        await op.wait_for_polls(3)
        await op.settled()
        assert op.requests.writes() == []
    fetches = emulator.request_counts[backend.get_item]
    # the SDK: db and api once each (the first poll's items.get_all may have fetched them first)
    assert fetches == 0 if backend is CONNECT else fetches <= 2
