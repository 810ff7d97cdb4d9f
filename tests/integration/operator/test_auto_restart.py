"""Auto-restart: which workloads roll when an item changes, and that each rolls exactly once.

Replays the Go operator's poller restart tests (9.2 #43-57) against the real control plane: one
item change, several workloads set up differently, and the pod template's ``last-restarted`` annotation (and
``metadata.generation``) tell which rolled.
"""

from __future__ import annotations

import pytest

from controllers.constants import AUTO_RESTART_ANNOTATION, LAST_RESTARTED_ANNOTATION, RESTART_VERSIONS_ANNOTATION
from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client
from opsync.envtest import ControlPlane
from opsync.resources import (
    DAEMONSETS,
    DEPLOYMENTS,
    NAMESPACES,
    REPLICASETS,
    SECRETS,
    STATEFULSETS,
    KubeObject,
    Resource,
)
from tests.support.harness import BackendKind, RunningOperator, Vaults, eventually, run_operator
from tests.support.objects import opi, wait_for_data, wait_for_event, workload

pytestmark = pytest.mark.integration

VAULT = "k8s"
DB_PATH = f"vaults/{VAULT}/items/db"
OLD = {"username": "admin", "password": "old"}
NEW = {"username": "admin", "password": "new"}
KINDS = {"Deployment": DEPLOYMENTS, "StatefulSet": STATEFULSETS, "DaemonSet": DAEMONSETS}
ON, OFF = {AUTO_RESTART_ANNOTATION: "true"}, {AUTO_RESTART_ANNOTATION: "false"}


@pytest.fixture
def vaults() -> Vaults:
    items = [
        {"title": "db", "fields": [{"label": "username", "value": "admin"}, {"label": "password", "value": "old"}]}
    ]
    return {VAULT: items}


async def generation(kube: Client, kind: Resource, namespace: str, name: str) -> int:
    return int((await kube.get(kind, name, namespace))["metadata"]["generation"])


async def last_restarted(kube: Client, kind: Resource, namespace: str, name: str) -> str | None:
    obj = await kube.get(kind, name, namespace)
    return ((obj["spec"]["template"].get("metadata") or {}).get("annotations") or {}).get(LAST_RESTARTED_ANNOTATION)


async def rollouts(kube: Client, kind: str, namespace: str, name: str) -> int:
    """How many times the workload's pod template changed since it was created.

    Deployments: their ReplicaSets minus one (a Deployment's generation also moves with its annotations,
    where opsync records restarts). StatefulSets and DaemonSets: their generation minus one.
    """
    if kind != "Deployment":
        return await generation(kube, KINDS[kind], namespace, name) - 1
    sets = (await kube.list(REPLICASETS, namespace))["items"]
    owned = [rs for rs in sets if any(ref["name"] == name for ref in rs["metadata"].get("ownerReferences") or [])]
    return len(owned) - 1


async def create_all(kube: Client, namespace: str, objects: list[KubeObject]) -> None:
    resources = {"OnePasswordItem": ONEPASSWORDITEMS, **KINDS}
    for obj in objects:
        await kube.create(resources[obj["kind"]], obj, namespace)


async def first_rollouts(kube: Client, namespace: str) -> None:
    """Wait until the deployment controller has made each Deployment's first ReplicaSet.

    A template that opsync changes before the controller saw the first one is rolled out once, not twice, and
    the rollout count would read 0: on a loaded machine the controller can lag that far behind.
    """
    names = [d["metadata"]["name"] for d in (await kube.list(DEPLOYMENTS, namespace))["items"]]
    for name in names:

        async def made(name: str = name) -> bool:
            return await rollouts(kube, "Deployment", namespace, name) >= 0

        # kube-controller-manager's, not opsync's, latency: seen over 30 s on a loaded 2-core CI machine
        await eventually(made, timeout=90, message=f"Deployment/{name} has no ReplicaSet")


async def change_item_and_settle(
    op: RunningOperator, kube: Client, emulator: Emulator, namespace: str, secrets: list[str]
) -> None:
    """Change the item once every Deployment has its first ReplicaSet, wait until every Secret has the new data
    and opsync has reacted to it."""
    await first_rollouts(kube, namespace)
    emulator.update_item(VAULT, "db", fields={"password": "new"})
    updated = [await wait_for_data(kube, namespace, name, NEW) for name in secrets]
    await op.caught_up(updated)


async def assert_rolled(kube: Client, namespace: str, expected: dict[str, bool]) -> dict[str, str | None]:
    """Each workload (``Kind/name``) rolled exactly once, or not at all; returns their ``last-restarted``."""
    stamps: dict[str, str | None] = {}
    for key, rolled in expected.items():
        kind, name = key.split("/")
        stamps[key] = await last_restarted(kube, KINDS[kind], namespace, name)
        assert (stamps[key] is not None) == rolled, f"{key} rolled: {stamps[key] is not None}, expected {rolled}"

        seen = [0]  # the last count, for the failure message

        async def counted(kind: str = kind, name: str = name, rolled: bool = rolled, seen: list[int] = seen) -> bool:
            seen[0] = await rollouts(kube, kind, namespace, name)
            return seen[0] == int(rolled)

        await eventually(
            counted,
            message=lambda key=key, rolled=rolled, seen=seen: (
                f"{key} did not roll out exactly {int(rolled)} time(s): last counted {seen[0]}"
            ),
        )
    return stamps


async def test_precedence_with_auto_restart_off(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    """AUTO_RESTART=false: 9.2 #48 (nothing set: no restart), #49 (item true beats workload false),
    #51 (workload true beats the default), #46 (use through a volume), #43 (item-name of another Secret)."""
    await create_all(
        kube,
        namespace,
        [
            opi("plain", DB_PATH),
            opi("item-on", DB_PATH, metadata={"annotations": ON}),
            workload("Deployment", "nothing-set", env_secret="plain"),
            workload("Deployment", "item-beats-workload", env_secret="item-on", annotations=OFF),
            workload("Deployment", "workload-on", env_secret="plain", annotations=ON),
            workload("StatefulSet", "volume-workload-on", volume_secret="plain", annotations=ON),
            workload("Deployment", "names-another", annotations={**ON, "operator.1password.io/item-name": "other"}),
        ],
    )
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace], auto_restart=False) as op:
        before = [await wait_for_data(kube, namespace, name, OLD) for name in ("plain", "item-on")]
        await op.caught_up(before)
        await change_item_and_settle(op, kube, emulator, namespace, ["plain", "item-on"])
        await assert_rolled(
            kube,
            namespace,
            {
                "Deployment/nothing-set": False,
                "Deployment/item-beats-workload": True,
                "Deployment/workload-on": True,
                "StatefulSet/volume-workload-on": True,
                "Deployment/names-another": False,
            },
        )


async def test_precedence_with_auto_restart_on(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    """AUTO_RESTART=true: 9.2 #44 (env, other template annotations kept), #45 (item-name annotation),
    #50 (item false beats workload true), and every way of using a Secret, for all three kinds."""
    templated = workload("Deployment", "env", env_secret="plain")
    templated["spec"]["template"]["metadata"]["annotations"] = {"keep": "me"}
    await create_all(
        kube,
        namespace,
        [
            opi("plain", DB_PATH),
            opi("item-off", DB_PATH, metadata={"annotations": OFF}),
            templated,
            workload("Deployment", "named", item_path=DB_PATH, item_name="named-secret"),
            workload("Deployment", "item-beats-workload", env_secret="item-off", annotations=ON),
            workload("StatefulSet", "env-from", env_from_secret="plain"),
            workload("DaemonSet", "projected", projected_secret="plain"),
            workload("DaemonSet", "init", init_env_secret="plain"),
            workload("Deployment", "unrelated"),
        ],
    )
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace], auto_restart=True) as op:
        before = [await wait_for_data(kube, namespace, name, OLD) for name in ("plain", "item-off", "named-secret")]
        await op.caught_up(before)
        await assert_rolled(kube, namespace, {"Deployment/env": False, "Deployment/named": False})  # not on creation
        await change_item_and_settle(op, kube, emulator, namespace, ["plain", "item-off", "named-secret"])
        expected = {
            "Deployment/env": True,
            "Deployment/named": True,
            "Deployment/item-beats-workload": False,
            "StatefulSet/env-from": True,
            "DaemonSet/projected": True,
            "DaemonSet/init": True,
            "Deployment/unrelated": False,
        }
        stamps = await assert_rolled(kube, namespace, expected)
        await wait_for_event(kube, namespace, "env", "Restarted", "Normal")

        # exactly once: later polls and reconciles do not roll again
        await op.wait_for_polls(3)
        await op.settled()
        assert await assert_rolled(kube, namespace, expected) == stamps
    env = await kube.get(DEPLOYMENTS, "env", namespace)
    assert env["spec"]["template"]["metadata"]["annotations"]["keep"] == "me"
    assert env["spec"]["template"]["metadata"]["annotations"][LAST_RESTARTED_ANNOTATION].endswith("Z")
    assert RESTART_VERSIONS_ANNOTATION in env["metadata"]["annotations"]


@pytest.mark.parametrize(
    ("namespace_value", "global_default", "cluster_wide", "expected"),
    [
        # 9.2 #53, #54, #52, watching every namespace (#55)
        ("true", False, True, {"Deployment/env": True, "Deployment/workload-off": False}),
        # 9.2 #57, watching a list of namespaces (#58)
        ("false", True, False, {"Deployment/env": False, "Deployment/workload-off": False}),
    ],
    ids=["namespace-on", "namespace-off"],
)
async def test_namespace_annotation(
    control_plane: ControlPlane,
    kube: Client,
    namespace: str,
    emulator: Emulator,
    namespace_value: str,
    global_default: bool,
    cluster_wide: bool,
    expected: dict[str, bool],
    backend: BackendKind,
) -> None:
    await kube.patch(NAMESPACES, namespace, {"metadata": {"annotations": {AUTO_RESTART_ANNOTATION: namespace_value}}})
    await create_all(
        kube,
        namespace,
        [
            opi("plain", DB_PATH),
            workload("Deployment", "env", env_secret="plain"),
            workload("Deployment", "workload-off", env_secret="plain", annotations=OFF),
        ],
    )
    watched = None if cluster_wide else [namespace]
    async with run_operator(control_plane, emulator, backend, namespaces=watched, auto_restart=global_default) as op:
        await op.caught_up([await wait_for_data(kube, namespace, "plain", OLD)])
        await change_item_and_settle(op, kube, emulator, namespace, ["plain"])
        await assert_rolled(kube, namespace, expected)


async def test_change_while_opsync_is_down_rolls_once_when_it_is_back(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    await create_all(kube, namespace, [opi("plain", DB_PATH), workload("Deployment", "env", env_secret="plain")])
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace], auto_restart=True) as op:
        await op.caught_up([await wait_for_data(kube, namespace, "plain", OLD)])

        async def recorded() -> bool:
            deployment = await kube.get(DEPLOYMENTS, "env", namespace)
            return RESTART_VERSIONS_ANNOTATION in deployment["metadata"].get("annotations", {})

        await eventually(recorded, message="the restart record was not written")
    emulator.update_item(VAULT, "db", fields={"password": "new"})
    await assert_rolled(kube, namespace, {"Deployment/env": False})
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace], auto_restart=True) as op:
        await op.caught_up([await wait_for_data(kube, namespace, "plain", NEW)])
        stamps = await assert_rolled(kube, namespace, {"Deployment/env": True})
        await op.wait_for_polls(2)
        await op.settled()
        assert await assert_rolled(kube, namespace, {"Deployment/env": True}) == stamps


async def test_repairs_and_ignored_changes_do_not_restart(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    """A Secret deleted or edited by hand is put back without a rollout, and so is a change of an item
    tagged ignore-secret: the data the pods see did not change."""
    await create_all(kube, namespace, [opi("plain", DB_PATH), workload("Deployment", "env", env_secret="plain")])
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace], auto_restart=True) as op:
        await op.caught_up([await wait_for_data(kube, namespace, "plain", OLD)])
        await kube.patch(SECRETS, "plain", {"data": {"password": "aGFja2Vk"}}, namespace)
        await op.caught_up([await wait_for_data(kube, namespace, "plain", OLD)])
        await kube.delete(SECRETS, "plain", namespace)
        await op.caught_up([await wait_for_data(kube, namespace, "plain", OLD)])
        emulator.update_item(VAULT, "db", fields={"password": "ignored"}, tags=["operator.1password.io:ignore-secret"])
        await op.wait_for_polls(2)
        await op.settled()
        await assert_rolled(kube, namespace, {"Deployment/env": False})
        assert (await kube.get(SECRETS, "plain", namespace))["data"]["password"] == "b2xk"  # "old"
