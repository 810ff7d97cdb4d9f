"""Annotated workloads → Secrets, against the real control plane (with its garbage collector).

Replays the Go operator's Deployment controller tests (9.1 #11-15) where the garbage collector
runs (the Go tests ran without one, which hid that shared Secrets were deleted), and covers StatefulSets,
DaemonSets, annotation removal, several workloads naming one Secret, and conflicts.
"""

from __future__ import annotations

from typing import Any

import pytest

from controllers.constants import ITEM_NAME_ANNOTATION, ITEM_PATH_ANNOTATION, ITEM_VERSION_ANNOTATION
from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client
from opsync.envtest import ControlPlane
from opsync.resources import CRONJOBS, DAEMONSETS, DEPLOYMENTS, JOBS, PODS, SECRETS, STATEFULSETS, KubeObject
from tests.support.harness import BackendKind, Vaults, eventually, run_operator
from tests.support.objects import decoded, get_or_none, opi, wait_for_data, wait_for_event, workload

pytestmark = pytest.mark.integration

VAULT = "k8s"
ITEMS: list[dict[str, Any]] = [
    {"title": "db", "fields": [{"label": "username", "value": "admin"}, {"label": "password", "value": "s3cret"}]},
    {"title": "api", "fields": [{"label": "token", "value": "t0ken"}]},
]
DB = {"username": "admin", "password": "s3cret"}
API = {"token": "t0ken"}
DB_PATH, API_PATH = f"vaults/{VAULT}/items/db", f"vaults/{VAULT}/items/api"


@pytest.fixture
def vaults() -> Vaults:
    return {VAULT: ITEMS}


async def owners(kube: Client, namespace: str, name: str) -> list[str]:
    secret = await kube.get(SECRETS, name, namespace)
    return sorted(f"{ref['kind']}/{ref['name']}" for ref in secret["metadata"].get("ownerReferences") or [])


async def wait_for_owners(kube: Client, namespace: str, name: str, expected: list[str]) -> None:
    async def matches() -> bool:
        return await owners(kube, namespace, name) == sorted(expected)

    await eventually(matches, message=f"Secret {name} is not owned by {expected}")


async def test_annotated_deployment_gets_its_secret(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    """9.1 #11 setup and #11: the Secret is made, and deleting the Deployment deletes it."""
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]):
        created = await kube.create(
            DEPLOYMENTS, workload("Deployment", "test-deployment", item_path=DB_PATH, item_name="test-item"), namespace
        )
        secret = await wait_for_data(kube, namespace, "test-item", DB)
        meta = secret["metadata"]
        assert meta["annotations"][ITEM_NAME_ANNOTATION] == "test-item"
        assert meta["annotations"][ITEM_PATH_ANNOTATION].startswith("vaults/")
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": "test-deployment",
                "uid": created["metadata"]["uid"],
            }
        ]
        assert not (await kube.get(DEPLOYMENTS, "test-deployment", namespace))["metadata"].get("finalizers")

        await kube.delete(DEPLOYMENTS, "test-deployment", namespace)
        await wait_for_data(kube, namespace, "test-item", None)


async def test_reannotating_with_another_item_updates_the_secret(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    """9.1 #12."""
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]):
        await kube.create(
            DEPLOYMENTS, workload("Deployment", "test-deployment", item_path=DB_PATH, item_name="test-item"), namespace
        )
        await wait_for_data(kube, namespace, "test-item", DB)
        patch = {"metadata": {"annotations": {ITEM_PATH_ANNOTATION: API_PATH}}}
        await kube.patch(DEPLOYMENTS, "test-deployment", patch, namespace)
        await wait_for_data(kube, namespace, "test-item", API)


async def test_unrelated_deployment_update_leaves_the_secret_alone(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    """9.1 #13: the data stays, and nothing is written to the Secret."""
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]) as op:
        await kube.create(
            DEPLOYMENTS, workload("Deployment", "test-deployment", item_path=DB_PATH, item_name="test-item"), namespace
        )
        before = await wait_for_data(kube, namespace, "test-item", DB)
        item_reads = emulator.request_counts[backend.get_item]
        patch = {"metadata": {"labels": {"team": "a"}}, "spec": {"replicas": 2}}
        await kube.patch(DEPLOYMENTS, "test-deployment", patch, namespace)

        async def seen() -> bool:
            cached = op.operator.manager.cache.informer(DEPLOYMENTS).get(namespace, "test-deployment")
            return cached is not None and (cached["metadata"].get("labels") or {}).get("team") == "a"

        await eventually(seen)
        await op.settled()
        after = await kube.get(SECRETS, "test-item", namespace)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert emulator.request_counts[backend.get_item] == item_reads  # the item was not fetched again


@pytest.mark.parametrize(
    "reference",
    [
        {"env_secret": "test-item"},  # 9.1 #14
        {"volume_secret": "test-item"},  # 9.1 #15
        {"env_from_secret": "test-item"},
        {"projected_secret": "test-item"},
        {"init_env_secret": "test-item"},
    ],
    ids=["env", "volume", "envFrom", "projected", "initContainer"],
)
async def test_secret_is_kept_while_another_workload_uses_it(
    control_plane: ControlPlane,
    kube: Client,
    namespace: str,
    emulator: Emulator,
    reference: dict[str, str],
    backend: BackendKind,
) -> None:
    """9.1 #14-15, with the garbage collector running: the Secret outlives the annotated Deployment as long
    as another workload uses it, in any way, and stays in sync from its own annotations."""
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]):
        await kube.create(
            DEPLOYMENTS, workload("Deployment", "test-deployment", item_path=DB_PATH, item_name="test-item"), namespace
        )
        await kube.create(STATEFULSETS, workload("StatefulSet", "user", **reference), namespace)
        await wait_for_data(kube, namespace, "test-item", DB)
        await wait_for_owners(kube, namespace, "test-item", ["Deployment/test-deployment", "StatefulSet/user"])

        await kube.delete(DEPLOYMENTS, "test-deployment", namespace)
        await wait_for_owners(kube, namespace, "test-item", ["StatefulSet/user"])
        emulator.update_item(VAULT, "db", fields={"password": "changed"})
        await wait_for_data(kube, namespace, "test-item", {**DB, "password": "changed"})

        await kube.delete(STATEFULSETS, "user", namespace)
        await wait_for_data(kube, namespace, "test-item", None)


async def test_removing_the_annotations_deletes_an_unused_secret(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]):
        await kube.create(DAEMONSETS, workload("DaemonSet", "agent", item_path=DB_PATH, item_name="agent"), namespace)
        await wait_for_data(kube, namespace, "agent", DB)
        remove = {"metadata": {"annotations": {ITEM_PATH_ANNOTATION: None, ITEM_NAME_ANNOTATION: None}}}
        await kube.patch(DAEMONSETS, "agent", remove, namespace)
        await wait_for_data(kube, namespace, "agent", None)
        assert await get_or_none(kube, DAEMONSETS, "agent", namespace) is not None


async def test_removing_the_annotations_keeps_a_secret_still_referenced(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]):
        manifest = workload("Deployment", "web", item_path=DB_PATH, item_name="web-db", env_secret="web-db")
        await kube.create(DEPLOYMENTS, manifest, namespace)
        await wait_for_data(kube, namespace, "web-db", DB)
        remove = {"metadata": {"annotations": {ITEM_PATH_ANNOTATION: None, ITEM_NAME_ANNOTATION: None}}}
        await kube.patch(DEPLOYMENTS, "web", remove, namespace)
        emulator.update_item(VAULT, "db", fields={"password": "rotated"})
        await wait_for_data(kube, namespace, "web-db", {**DB, "password": "rotated"})


async def test_statefulset_and_daemonset_annotations(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    """Annotations work on StatefulSets and DaemonSets, on the metadata (9.2 #29) or, only when the metadata
    has none, on the pod template (#30), and item-name is sanitised as the Go operator does."""
    template_annotated = workload("DaemonSet", "agent")
    template_annotated["spec"]["template"]["metadata"]["annotations"] = {
        ITEM_PATH_ANNOTATION: API_PATH,
        ITEM_NAME_ANNOTATION: "Agent Token",
    }
    foreign = {"onepasswordconnect/vaultId": "x", "plain": "y", "operator.1password.io/inject": "app"}
    statefulset = workload("StatefulSet", "db", item_path=DB_PATH, item_name="db", annotations=foreign)
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]):
        await kube.create(STATEFULSETS, statefulset, namespace)
        await kube.create(DAEMONSETS, template_annotated, namespace)
        secret = await wait_for_data(kube, namespace, "db", DB)
        await wait_for_data(kube, namespace, "agent-token", API)
    # 9.2 #28: only operator.1password.io/ annotations are copied to the Secret
    annotations = secret["metadata"]["annotations"]
    assert annotations["operator.1password.io/inject"] == "app"
    assert "onepasswordconnect/vaultId" not in annotations and "plain" not in annotations


async def test_workloads_naming_one_secret_share_it(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    """Two workloads name the same Secret with different paths: the oldest wins, the other is warned, and
    the Secret goes only with the last of them."""
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]):
        await kube.create(
            DEPLOYMENTS, workload("Deployment", "first", item_path=DB_PATH, item_name="shared"), namespace
        )
        await wait_for_data(kube, namespace, "shared", DB)
        await kube.create(
            DEPLOYMENTS, workload("Deployment", "second", item_path=API_PATH, item_name="shared"), namespace
        )
        await wait_for_owners(kube, namespace, "shared", ["Deployment/first", "Deployment/second"])
        assert decoded(await kube.get(SECRETS, "shared", namespace)) == DB
        await wait_for_event(kube, namespace, "second", "SecretConflict")

        await kube.delete(DEPLOYMENTS, "first", namespace)
        await wait_for_data(kube, namespace, "shared", API)  # the remaining workload's path now applies
        await kube.delete(DEPLOYMENTS, "second", namespace)
        await wait_for_data(kube, namespace, "shared", None)


async def test_an_item_owns_its_name_over_annotations(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]):
        await kube.create(ONEPASSWORDITEMS, opi("creds", DB_PATH), namespace)
        await wait_for_data(kube, namespace, "creds", DB)
        await kube.create(DEPLOYMENTS, workload("Deployment", "web", item_path=API_PATH, item_name="creds"), namespace)
        await wait_for_event(kube, namespace, "web", "SecretConflict")
        secret = await kube.get(SECRETS, "creds", namespace)
    assert decoded(secret) == DB
    assert [ref["kind"] for ref in secret["metadata"]["ownerReferences"]] == ["OnePasswordItem"]


async def test_sync_failure_is_reported_on_the_workload(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]):
        manifest = workload("Deployment", "web", item_path=f"vaults/{VAULT}/items/missing", item_name="web")
        await kube.create(DEPLOYMENTS, manifest, namespace)
        event = await wait_for_event(kube, namespace, "web", "ReconcileError")
    assert event["message"].startswith("Failed to sync secret from 1Password: failed to retrieve item: ")
    assert await get_or_none(kube, SECRETS, "web", namespace) is None


async def test_version_annotation_follows_the_item(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]):
        await kube.create(DEPLOYMENTS, workload("Deployment", "web", item_path=DB_PATH, item_name="web"), namespace)
        await wait_for_data(kube, namespace, "web", DB)
        changed = emulator.update_item(VAULT, "db", fields={"password": "next"})
        secret: KubeObject = await wait_for_data(kube, namespace, "web", {**DB, "password": "next"})
    assert secret["metadata"]["annotations"][ITEM_VERSION_ANNOTATION] == str(changed.version)


def _pod_spec_using(secret: str) -> dict[str, Any]:
    env = [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}]
    return {"restartPolicy": "Never", "containers": [{"name": "app", "image": "busybox", "env": env}]}


def _user(kind: str, secret: str) -> tuple[Any, KubeObject]:
    template = {"spec": _pod_spec_using(secret)}
    if kind == "Pod":
        return PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare"}, "spec": _pod_spec_using(secret)}
    if kind == "Job":
        return JOBS, {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "once"},
            "spec": {"template": template},
        }
    cron = {"schedule": "0 0 1 1 *", "jobTemplate": {"spec": {"template": template}}}
    return CRONJOBS, {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"}, "spec": cron}


@pytest.mark.parametrize("kind", ["Pod", "Job", "CronJob"])
async def test_a_secret_bare_pods_jobs_or_cronjobs_use_is_not_deleted(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, kind: str
) -> None:
    """Issue 16: once no annotated workload used it, the Secret was deleted under a Job or CronJob using it."""
    async with run_operator(control_plane, emulator, namespaces=[namespace]) as op:
        await kube.create(DAEMONSETS, workload("DaemonSet", "agent", item_path=DB_PATH, item_name="agent"), namespace)
        await wait_for_data(kube, namespace, "agent", DB)
        resource, user = _user(kind, "agent")
        user = await kube.create(resource, user, namespace)
        remove = {"metadata": {"annotations": {ITEM_PATH_ANNOTATION: None, ITEM_NAME_ANNOTATION: None}}}
        await op.caught_up([await kube.patch(DAEMONSETS, "agent", remove, namespace)])
        await op.settled()
        assert decoded(await kube.get(SECRETS, "agent", namespace)) == DB

        # the deletion of its last user (a watched Pod or Job, or the CronJob workload itself) deletes it
        await kube.delete(resource, user["metadata"]["name"], namespace, propagation_policy="Background")
        await wait_for_data(kube, namespace, "agent", None)
