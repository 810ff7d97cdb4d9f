"""Restarts of CronJobs and Argo Rollouts, the restart delay, and Jobs and bare Pods as users of a Secret.

Each workload uses the Secret of one OnePasswordItem; the item changes in the Connect emulator and the
workload's ``metadata.generation`` (it moves with the spec only, for these kinds) counts its rollouts.
"""

from __future__ import annotations

from typing import Any

import pytest

from controllers.constants import (
    AUTO_RESTART_ANNOTATION,
    ITEM_NAME_ANNOTATION,
    ITEM_PATH_ANNOTATION,
    LAST_RESTARTED_ANNOTATION,
    RESTART_DELAY_ANNOTATION,
    RESTART_VERSIONS_ANNOTATION,
)
from controllers.resources import ONEPASSWORDITEMS, ROLLOUTS
from onepassword_access.emulator import Emulator
from opsync import metrics
from opsync.client import AlreadyExistsError, Client
from opsync.envtest import ControlPlane
from opsync.resources import (
    CONFIGMAPS,
    CRDS,
    CRONJOBS,
    DEPLOYMENTS,
    JOBS,
    PODS,
    REPLICASETS,
    SECRETS,
    STATEFULSETS,
    KubeObject,
    Resource,
)
from tests.support.harness import RunningOperator, Vaults, run_operator
from tests.support.objects import get_or_none, opi, wait_for_data, wait_for_event, workload
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

VAULT = "k8s"
DB_PATH = f"vaults/{VAULT}/items/db"
OLD = {"password": "old"}
ON = {AUTO_RESTART_ANNOTATION: "true"}

ROLLOUT_CRD: KubeObject = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "rollouts.argoproj.io"},
    "spec": {
        "group": "argoproj.io",
        "names": {"kind": "Rollout", "listKind": "RolloutList", "plural": "rollouts", "singular": "rollout"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            }
        ],
    },
}
"""The Argo Rollouts CRD, reduced to what the API server needs to serve Rollouts (no Argo controller runs)."""


@pytest.fixture
def vaults() -> Vaults:
    return {VAULT: [{"title": "db", "fields": [{"label": "password", "value": "old"}]}]}


def restarts(kind: str) -> float:
    return metrics.REGISTRY.get_sample_value("opsync_workload_restarts_total", {"kind": kind}) or 0.0


def cronjob(name: str, secret: str, annotations: dict[str, str]) -> KubeObject:
    pod = workload("Deployment", name, env_secret=secret)["spec"]["template"]
    pod["spec"]["restartPolicy"] = "Never"
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"schedule": "0 0 1 1 *", "suspend": True, "jobTemplate": {"spec": {"template": pod}}},
    }


def job(name: str, secret: str) -> KubeObject:
    pod = workload("Deployment", name, env_secret=secret)["spec"]["template"]
    pod["spec"]["restartPolicy"] = "Never"
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": {"template": pod}}


def bare_pod(name: str, secret: str) -> KubeObject:
    pod = workload("Deployment", name, env_secret=secret)["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": pod["spec"]}


async def generation(kube: Client, kind: Resource, namespace: str, name: str) -> int:
    return int((await kube.get(kind, name, namespace))["metadata"]["generation"])


async def change_and_wait_for_generation(
    op: RunningOperator,
    kube: Client,
    emulator: Emulator,
    namespace: str,
    target: tuple[Resource, str],
    password: str,
    expected_generation: int,
) -> KubeObject:
    """Change the item, wait for the Secret and for the workload to reach ``expected_generation``, then for
    opsync to be idle, and check the generation stayed there (a second rollout would move it on)."""
    emulator.update_item(VAULT, "db", fields={"password": password})
    await wait_for_data(kube, namespace, "db", {"password": password})
    kind, name = target

    async def reached() -> bool:
        return await generation(kube, kind, namespace, name) >= expected_generation

    await eventually(reached, message=f"{kind.kind} {name} did not roll")
    obj = await kube.get(kind, name, namespace)
    await op.caught_up([obj])
    await op.wait_for_polls(2)
    await op.settled()
    assert await generation(kube, kind, namespace, name) == expected_generation
    return await kube.get(kind, name, namespace)


async def test_cronjob_template_is_updated_exactly_once_per_change(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator
) -> None:
    await kube.create(ONEPASSWORDITEMS, opi("db", DB_PATH), namespace)
    await kube.create(CRONJOBS, cronjob("nightly", "db", ON), namespace)
    async with run_operator(control_plane, emulator, namespaces=[namespace]) as op:
        await op.caught_up([await wait_for_data(kube, namespace, "db", OLD)])
        assert await generation(kube, CRONJOBS, namespace, "nightly") == 1
        before = restarts("CronJob")
        rolled = await change_and_wait_for_generation(op, kube, emulator, namespace, (CRONJOBS, "nightly"), "new", 2)
        template = rolled["spec"]["jobTemplate"]["spec"]["template"]
        assert LAST_RESTARTED_ANNOTATION in template["metadata"]["annotations"]
        assert restarts("CronJob") == before + 1
        event = await wait_for_event(kube, namespace, "nightly", "Restarted", "Normal")
        assert 'Secret "db"' in event["message"]
        assert "@1 ->" in event["message"]
        assert "@2" in event["message"]
        assert "new" not in event["message"].replace("->", "")  # versions, never values
        await change_and_wait_for_generation(op, kube, emulator, namespace, (CRONJOBS, "nightly"), "newer", 3)


async def install_rollout_crd(kube: Client) -> None:
    try:
        await kube.create(CRDS, ROLLOUT_CRD)
    except AlreadyExistsError:
        return

    async def established() -> bool:
        crd = await kube.get(CRDS, "rollouts.argoproj.io")
        conditions = (crd.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    await eventually(established, message="the Rollout CRD was not established")


async def test_argo_rollout_rolls_exactly_once_per_change(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator
) -> None:
    """Without the Rollout CRD opsync runs as usual; installed while it runs, Rollouts are restarted too."""
    await kube.create(ONEPASSWORDITEMS, opi("db", DB_PATH), namespace)
    async with run_operator(control_plane, emulator, namespaces=[namespace], auto_restart=True) as op:
        await op.caught_up([await wait_for_data(kube, namespace, "db", OLD)])
        await install_rollout_crd(kube)
        manifest = workload("Deployment", "canary", env_secret="db")
        manifest.update(apiVersion="argoproj.io/v1alpha1", kind="Rollout")
        await kube.create(ROLLOUTS, manifest, namespace)

        async def recorded() -> bool:
            rollout = await kube.get(ROLLOUTS, "canary", namespace)
            return RESTART_VERSIONS_ANNOTATION in (rollout["metadata"].get("annotations") or {})

        # The informer asks again for the kind with backoff (at most 30 s apart) until it is served.
        await eventually(recorded, timeout=90, message="opsync never picked up the Rollout")
        assert "restartAt" not in (await kube.get(ROLLOUTS, "canary", namespace))["spec"]
        before = restarts("Rollout")
        rolled = await change_and_wait_for_generation(op, kube, emulator, namespace, (ROLLOUTS, "canary"), "new", 2)
        assert rolled["spec"]["restartAt"]
        assert restarts("Rollout") == before + 1
        await change_and_wait_for_generation(op, kube, emulator, namespace, (ROLLOUTS, "canary"), "newer", 3)


async def test_restart_delay_coalesces_changes_into_one_rollout(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator
) -> None:
    await kube.create(ONEPASSWORDITEMS, opi("db", DB_PATH), namespace)
    app = workload("StatefulSet", "app", env_secret="db", annotations={**ON, RESTART_DELAY_ANNOTATION: "6s"})
    await kube.create(STATEFULSETS, app, namespace)
    async with run_operator(control_plane, emulator, namespaces=[namespace]) as op:
        await op.caught_up([await wait_for_data(kube, namespace, "db", OLD)])
        emulator.update_item(VAULT, "db", fields={"password": "first"})
        await wait_for_data(kube, namespace, "db", {"password": "first"})
        emulator.update_item(VAULT, "db", fields={"password": "second"})
        latest = await wait_for_data(kube, namespace, "db", {"password": "second"})
        assert await generation(kube, STATEFULSETS, namespace, "app") == 1, "rolled before the delay ended"

        async def rolled() -> bool:
            return await generation(kube, STATEFULSETS, namespace, "app") == 2

        await eventually(rolled, message="the StatefulSet did not roll after its restart delay")
        await op.wait_for_polls(2)
        await op.settled()
        app = await kube.get(STATEFULSETS, "app", namespace)
        assert app["metadata"]["generation"] == 2
        record = app["metadata"]["annotations"][RESTART_VERSIONS_ANNOTATION]
        assert latest["metadata"]["annotations"]["opsync.dev/data-version"] in record  # both changes, one rollout


async def test_jobs_and_bare_pods_keep_a_workload_secret(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator
) -> None:
    annotated = workload("Deployment", "maker", item_path=DB_PATH, item_name="shared")
    await kube.create(DEPLOYMENTS, annotated, namespace)
    async with run_operator(control_plane, emulator, namespaces=[namespace]) as op:
        await wait_for_data(kube, namespace, "shared", OLD)
        await kube.create(JOBS, job("migrate", "shared"), namespace)
        await kube.create(PODS, bare_pod("debug", "shared"), namespace)
        dropped: dict[str, Any] = {
            "metadata": {"annotations": {ITEM_PATH_ANNOTATION: None, ITEM_NAME_ANNOTATION: None}}
        }
        maker = await kube.patch(DEPLOYMENTS, "maker", dropped, namespace)
        await op.caught_up(
            [maker, await kube.get(JOBS, "migrate", namespace), await kube.get(PODS, "debug", namespace)]
        )
        assert await get_or_none(kube, SECRETS, "shared", namespace) is not None, "deleted under its Job and Pod"
        await kube.delete(JOBS, "migrate", namespace, propagation_policy="Background")

        async def job_gone() -> bool:
            return await get_or_none(kube, JOBS, "migrate", namespace) is None

        await eventually(job_gone, message="the Job was not deleted")
        await op.settled()
        assert await get_or_none(kube, SECRETS, "shared", namespace) is not None, "deleted under its bare Pod"
        await kube.delete(PODS, "debug", namespace)
        await wait_for_data(kube, namespace, "shared", None)


async def test_only_pods_no_controller_owns_are_cached(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator
) -> None:
    """A controller's Pods are covered by its template: the cache holds the Pods made by hand, not every Pod of
    every workload in the namespace."""
    async with run_operator(control_plane, emulator, namespaces=[namespace]) as op:
        (pods,) = [i for i in op.operator.manager.cache.informers if i.resource is PODS]
        spec = {**workload("Deployment", "web", env_secret="shared")["spec"], "replicas": 1}
        replicaset = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web"}, "spec": spec}
        await kube.create(REPLICASETS, replicaset, namespace)  # its controller makes a Pod for it
        selector = ",".join(f"{k}={v}" for k, v in spec["selector"]["matchLabels"].items())

        async def replicaset_pods() -> list[KubeObject]:
            return list((await kube.list(PODS, namespace, label_selector=selector))["items"])

        await eventually(replicaset_pods, message="the ReplicaSet controller made no Pod")
        debug = await kube.create(PODS, bare_pod("debug", "shared"), namespace)
        await op.caught_up([debug])  # the Pod watch has seen the ReplicaSet's Pod too: it came first
        assert [p["metadata"]["name"] for p in pods.list(namespace)] == ["debug"]

        # Given a controller, a Pod leaves the cache.
        owner = await kube.create(
            CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}}, namespace
        )
        reference = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": "owner",
            "uid": owner["metadata"]["uid"],
            "controller": True,
        }
        await kube.patch(PODS, "debug", {"metadata": {"ownerReferences": [reference]}}, namespace)

        async def left() -> bool:
            return pods.get(namespace, "debug") is None

        await eventually(left, message="a Pod with a controller stayed in the cache")
