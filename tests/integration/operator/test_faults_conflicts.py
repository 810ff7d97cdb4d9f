"""Write conflicts (docs/reliability.md): a Secret or Deployment changed by someone else between opsync's read and its
write gets a 409; opsync retries from the fresh object, so its change still lands and the other writer's
change is kept. Ends with the shared invariant (``invariants.SecretGuard``).

The interference is made deterministic with a hook on opsync's own client: just before opsync's first
write of the object, the test changes that object through another client, so the write carries a stale
``resourceVersion``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from controllers.constants import AUTO_RESTART_ANNOTATION, LAST_RESTARTED_ANNOTATION, RESTART_VERSIONS_ANNOTATION
from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client, ConflictError
from opsync.envtest import ControlPlane
from opsync.resources import DEPLOYMENTS, REPLICASETS, SECRETS, KubeObject, Resource
from tests.support.harness import RunningOperator, Vaults, eventually, run_operator
from tests.support.invariants import SecretGuard
from tests.support.objects import opi, wait_for_data, wait_for_ready, workload

pytestmark = pytest.mark.integration

VAULT = "k8s"
DB_PATH = f"vaults/{VAULT}/items/db"
FOREIGN = "team.example/owner"


@pytest.fixture
def vaults() -> Vaults:
    fields = [{"label": "user", "value": "db"}, {"label": "password", "value": "v1"}]
    return {VAULT: [{"title": "db", "fields": fields}]}


class Interference:
    """Wraps one method of opsync's client: before its first call matching ``target``, ``interfere`` runs;
    the conflicts opsync's calls then get are counted."""

    def __init__(
        self,
        op: RunningOperator,
        method: str,
        target: Callable[[Resource, KubeObject], bool],
        interfere: Callable[[], Awaitable[object]],
    ) -> None:
        self.done = False
        self.conflicts = 0
        original = getattr(op.client, method)

        async def wrapped(resource: Resource, *args: Any, **kwargs: Any) -> KubeObject:
            body = kwargs.get("body", args[-1] if method == "replace" else args[1])
            if not self.done and target(resource, body):
                self.done = True
                await interfere()
            try:
                result: KubeObject = await original(resource, *args, **kwargs)
            except ConflictError:
                self.conflicts += 1
                raise
            return result

        setattr(op.client, method, wrapped)


async def settled_app(kube: Client, namespace: str, op: RunningOperator) -> None:
    """Item db, its Secret, and Deployment app using it with auto-restart, restart record written."""
    app = workload("Deployment", "app", env_secret="db", annotations={AUTO_RESTART_ANNOTATION: "true"})
    await kube.create(ONEPASSWORDITEMS, opi("db", DB_PATH), namespace)
    await kube.create(DEPLOYMENTS, app, namespace)
    await wait_for_data(kube, namespace, "db", {"user": "db", "password": "v1"})

    async def recorded() -> bool:
        found = await kube.get(DEPLOYMENTS, "app", namespace)
        return RESTART_VERSIONS_ANNOTATION in found["metadata"].get("annotations", {})

    await eventually(recorded, message="the restart record was not written")
    await op.settled()


async def test_a_secret_changed_between_read_and_write_is_retried(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator
) -> None:
    async with run_operator(control_plane, emulator, namespaces=[namespace]) as op:
        await settled_app(kube, namespace, op)
        async with SecretGuard(kube, namespace, emulator) as guard:

            async def annotate() -> None:
                await kube.patch(SECRETS, "db", {"metadata": {"annotations": {FOREIGN: "ops"}}}, namespace)

            hook = Interference(
                op, "replace", lambda r, body: r == SECRETS and body["metadata"]["name"] == "db", annotate
            )
            emulator.update_item(VAULT, "db", fields={"password": "v2"})
            guard.item_changed()
            await guard.converged()
            assert hook.conflicts == 1, "opsync's write did not conflict: the test proves nothing"
            secret = await kube.get(SECRETS, "db", namespace)
            assert secret["metadata"]["annotations"][FOREIGN] == "ops"  # the other writer's change is kept
            await wait_for_ready(kube, namespace, "db", "True", "Synced")


async def replica_sets(kube: Client, namespace: str) -> int:
    """How many ReplicaSets Deployment app has had: one per pod template, so one more per rollout."""
    found = (await kube.list(REPLICASETS, namespace))["items"]
    return sum(1 for rs in found if any(ref["name"] == "app" for ref in rs["metadata"].get("ownerReferences") or []))


async def test_a_deployment_changed_between_read_and_write_is_still_rolled_once(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator
) -> None:
    async with run_operator(control_plane, emulator, namespaces=[namespace]) as op:
        await settled_app(kube, namespace, op)
        await eventually(lambda: _count_is(kube, namespace, 1), message="no first ReplicaSet")
        async with SecretGuard(kube, namespace, emulator) as guard:

            async def annotate() -> None:
                await kube.patch(DEPLOYMENTS, "app", {"metadata": {"annotations": {FOREIGN: "ops"}}}, namespace)

            def rolls_app(resource: Resource, body: KubeObject) -> bool:
                return resource == DEPLOYMENTS and "template" in (body.get("spec") or {})

            hook = Interference(op, "patch", rolls_app, annotate)
            emulator.update_item(VAULT, "db", fields={"password": "v2"})
            guard.item_changed()
            await guard.converged()
            await eventually(lambda: _count_is(kube, namespace, 2), message="the rollout was dropped after a 409")
            await op.wait_for_polls(2)
            await op.settled()
            assert hook.conflicts >= 1, "opsync's patch did not conflict: the test proves nothing"
            assert await replica_sets(kube, namespace) == 2  # rolled exactly once
            found = await kube.get(DEPLOYMENTS, "app", namespace)
            assert found["metadata"]["annotations"][FOREIGN] == "ops"  # the other writer's change is kept
            assert LAST_RESTARTED_ANNOTATION in found["spec"]["template"]["metadata"]["annotations"]


async def _count_is(kube: Client, namespace: str, count: int) -> bool:
    return await replica_sets(kube, namespace) == count
