"""Switching from the Go operator, and Secrets opsync must not take.

A cluster the Go operator managed has items and Deployments carrying its finalizer, and Secrets with its
annotations and a plain owner reference, without opsync's label. opsync takes them over without rewriting
data or rolling workloads, and both kinds can still be deleted. Secrets nobody manages are never overwritten.
"""

from __future__ import annotations

import base64

import pytest

from controllers.constants import (
    AUTO_RESTART_ANNOTATION,
    FINALIZER,
    ITEM_NAME_ANNOTATION,
    ITEM_PATH_ANNOTATION,
    ITEM_VERSION_ANNOTATION,
    LAST_RESTARTED_ANNOTATION,
    MANAGED_LABEL,
)
from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client
from opsync.envtest import ControlPlane
from opsync.resources import DEPLOYMENTS, SECRETS, KubeObject
from tests.support.harness import BackendKind, Vaults, eventually, run_operator
from tests.support.objects import (
    decoded,
    get_or_none,
    opi,
    wait_for_data,
    wait_for_event,
    wait_for_ready,
    workload,
)

pytestmark = pytest.mark.integration

VAULT = "k8s"
DB_PATH = f"vaults/{VAULT}/items/db"
DATA = {"username": "admin", "password": "s3cret"}


@pytest.fixture
def vaults() -> Vaults:
    fields = [{"label": "username", "value": "admin"}, {"label": "password", "value": "s3cret"}]
    return {VAULT: [{"title": "db", "fields": fields}]}


def go_secret(name: str, emulator: Emulator, owner: KubeObject, extra: dict[str, str] | None = None) -> KubeObject:
    """A Secret as the Go operator writes it: its annotations, one plain owner reference, no label."""
    item = emulator.get_item(VAULT, "db")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "annotations": {
                ITEM_PATH_ANNOTATION: f"vaults/{item.vault.id}/items/{item.id}",
                ITEM_VERSION_ANNOTATION: str(item.version),
                **(extra or {}),
            },
            "ownerReferences": [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                }
            ],
        },
        "type": "Opaque",
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in DATA.items()},
    }


async def test_go_operator_objects_are_taken_over(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    item = await kube.create(ONEPASSWORDITEMS, opi("db", DB_PATH, metadata={"finalizers": [FINALIZER]}), namespace)
    ready = {"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"}
    await kube.patch(ONEPASSWORDITEMS, "db", {"status": {"conditions": [ready]}}, namespace, subresource="status")
    await kube.create(SECRETS, go_secret("db", emulator, item), namespace)
    web = workload("Deployment", "web", item_path=DB_PATH, item_name="web-db")
    web["metadata"]["finalizers"] = [FINALIZER]
    web = await kube.create(DEPLOYMENTS, web, namespace)
    await kube.create(SECRETS, go_secret("web-db", emulator, web, {ITEM_NAME_ANNOTATION: "web-db"}), namespace)
    user = workload("Deployment", "user", env_secret="db", annotations={AUTO_RESTART_ANNOTATION: "true"})
    await kube.create(DEPLOYMENTS, user, namespace)
    before = {name: await kube.get(SECRETS, name, namespace) for name in ("db", "web-db")}

    async with run_operator(control_plane, emulator, backend, namespaces=[namespace], auto_restart=True) as op:
        condition = await wait_for_ready(kube, namespace, "db", "True", "Synced")
        assert condition["lastTransitionTime"] == "2024-01-01T00:00:00Z"  # status did not change, reason added

        async def taken_over() -> bool:
            secrets = [await kube.get(SECRETS, name, namespace) for name in ("db", "web-db")]
            objects = [await kube.get(ONEPASSWORDITEMS, "db", namespace), await kube.get(DEPLOYMENTS, "web", namespace)]
            labelled = all((s["metadata"].get("labels") or {}).get(MANAGED_LABEL) == "true" for s in secrets)
            return labelled and not any(o["metadata"].get("finalizers") for o in objects)

        await eventually(taken_over, message="the Go operator's objects were not taken over")
        db = await kube.get(SECRETS, "db", namespace)
        await op.caught_up([db, await kube.get(SECRETS, "web-db", namespace)])
        assert db["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "onepassword.com/v1",
                "kind": "OnePasswordItem",
                "name": "db",
                "uid": item["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        for name, old in before.items():
            assert (await kube.get(SECRETS, name, namespace))["data"] == old["data"]
        user_template = (await kube.get(DEPLOYMENTS, "user", namespace))["spec"]["template"]["metadata"]
        assert LAST_RESTARTED_ANNOTATION not in (user_template.get("annotations") or {})  # taking over rolls nothing

        await kube.delete(ONEPASSWORDITEMS, "db", namespace)
        await kube.delete(DEPLOYMENTS, "web", namespace)
        await wait_for_data(kube, namespace, "db", None)
        await wait_for_data(kube, namespace, "web-db", None)
        assert await get_or_none(kube, ONEPASSWORDITEMS, "db", namespace) is None


async def test_a_foreign_secret_is_never_overwritten(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    mine = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "taken"}, "stringData": {"mine": "yes"}}
    foreign = await kube.create(SECRETS, mine, namespace)
    await kube.create(SECRETS, {**mine, "metadata": {"name": "web-db"}}, namespace)
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]) as op:
        await kube.create(ONEPASSWORDITEMS, opi("taken", DB_PATH), namespace)
        await kube.create(DEPLOYMENTS, workload("Deployment", "web", item_path=DB_PATH, item_name="web-db"), namespace)
        condition = await wait_for_ready(kube, namespace, "taken", "False", "SecretConflict")
        assert f"{MANAGED_LABEL}=true" in condition["message"]
        event = await wait_for_event(kube, namespace, "taken", "SecretConflict")
        assert "Delete or rename it" in event["message"]
        await wait_for_event(kube, namespace, "web", "SecretConflict")
        await op.settled()
        assert (await kube.get(SECRETS, "taken", namespace))["metadata"]["resourceVersion"] == (
            foreign["metadata"]["resourceVersion"]
        )
        assert decoded(await kube.get(SECRETS, "web-db", namespace)) == {"mine": "yes"}

        # the documented ways out: label the Secret for opsync to adopt it, or delete it
        await kube.patch(SECRETS, "taken", {"metadata": {"labels": {MANAGED_LABEL: "true"}}}, namespace)
        adopted = await wait_for_data(kube, namespace, "taken", DATA)
        assert adopted["metadata"]["ownerReferences"][0]["kind"] == "OnePasswordItem"
        await wait_for_ready(kube, namespace, "taken", "True", "Synced")
        await kube.delete(SECRETS, "web-db", namespace)
        await wait_for_data(kube, namespace, "web-db", DATA, timeout=60)


async def test_an_item_named_like_a_workload_secret_does_not_take_it_over(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator
) -> None:
    """Issue 16: an item created after a workload's Secret of the same name took it over, dropping the
    workload's owner reference and replacing its data. Now the item is refused, for opsync's workload Secrets
    and for the Go operator's alike; the reverse order is covered by test_workloads."""
    legacy = await kube.create(DEPLOYMENTS, workload("Deployment", "legacy", env_secret="go-db"), namespace)
    await kube.create(SECRETS, go_secret("go-db", emulator, legacy, {ITEM_NAME_ANNOTATION: "go-db"}), namespace)
    async with run_operator(control_plane, emulator, namespaces=[namespace]) as op:
        await kube.create(DEPLOYMENTS, workload("Deployment", "web", item_path=DB_PATH, item_name="web-db"), namespace)
        made = await wait_for_data(kube, namespace, "web-db", DATA)
        go_made = await kube.get(SECRETS, "go-db", namespace)
        await kube.create(ONEPASSWORDITEMS, opi("web-db", DB_PATH), namespace)
        await kube.create(ONEPASSWORDITEMS, opi("go-db", DB_PATH), namespace)
        for name, user in (("web-db", 'Deployment "web"'), ("go-db", 'Deployment "legacy"')):
            condition = await wait_for_ready(kube, namespace, name, "False", "SecretConflict")
            assert f"was made for {user} from their annotations" in condition["message"]
        await op.settled()
        for before in (made, go_made):
            after = await kube.get(SECRETS, before["metadata"]["name"], namespace)
            assert after["metadata"]["ownerReferences"] == before["metadata"]["ownerReferences"]
            assert after["data"] == before["data"]
