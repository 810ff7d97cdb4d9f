"""opsync works with exactly the permissions ``controllers.permissions.REQUIRED`` lists, and no more.

The RBAC objects are generated from that list for one watched namespace: a Role there for the namespaced
rules, and for the Namespace object itself a ClusterRole restricted by ``resourceNames`` (list and watch of a
cluster-scoped kind by name cannot be granted by a Role).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from operator_harness import emulator_data, run_operator
from operator_helpers import opi, wait_for_data, wait_for_ready, workload

from controllers.constants import AUTO_RESTART_ANNOTATION, LAST_RESTARTED_ANNOTATION
from controllers.permissions import REQUIRED, Permission
from opsync.client import Client, NotFoundError
from opsync.envtest import ControlPlane
from opsync.metrics import REGISTRY
from opsync.onepassword.emulator import Emulator
from opsync.resources import CLUSTERROLEBINDINGS, CLUSTERROLES, DEPLOYMENTS, ONEPASSWORDITEMS, ROLEBINDINGS, ROLES

pytestmark = pytest.mark.integration

VAULT = "k8s"
ACCOUNT = "opsync"


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    items = [{"title": "db", "fields": [{"label": "password", "value": "one"}]}]
    async with Emulator(emulator_data({VAULT: items})) as emu:
        yield emu


def rule(permission: Permission, **extra: Any) -> dict[str, Any]:
    resource = f"{permission.resource}/{permission.subresource}" if permission.subresource else permission.resource
    return {"apiGroups": [permission.group], "resources": [resource], "verbs": list(permission.verbs), **extra}


def rbac(namespace: str) -> list[tuple[Any, dict[str, Any]]]:
    """Role, ClusterRole and their bindings granting REQUIRED to ServiceAccount ``namespace/opsync``."""
    name = f"opsync-{namespace}"
    subject = [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": namespace}]
    namespaced = [rule(p) for p in REQUIRED if p.resource != "namespaces"]  # leader election: same namespace
    by_name = [rule(p, resourceNames=[namespace]) for p in REQUIRED if p.resource == "namespaces"]
    role_ref = {"apiGroup": "rbac.authorization.k8s.io", "name": name}
    return [
        (ROLES, {"metadata": {"name": name, "namespace": namespace}, "rules": namespaced}),
        (ROLEBINDINGS, {"metadata": {"name": name, "namespace": namespace}, "subjects": subject,
                        "roleRef": {**role_ref, "kind": "Role"}}),
        (CLUSTERROLES, {"metadata": {"name": name}, "rules": by_name}),
        (CLUSTERROLEBINDINGS, {"metadata": {"name": name}, "subjects": subject,
                               "roleRef": {**role_ref, "kind": "ClusterRole"}}),
    ]  # fmt: skip


def forbidden() -> float:
    """Requests the API server refused with 403 so far, for any client in this process."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "rest_client_requests"
        for sample in metric.samples
        if sample.name == "rest_client_requests_total" and sample.labels.get("code") == "403"
    )


@pytest.fixture
async def least_privilege(control_plane: ControlPlane, kube: Client, namespace: str) -> AsyncIterator[str]:
    """A kubeconfig for a ServiceAccount holding exactly REQUIRED in ``namespace``."""
    objects = rbac(namespace)
    for resource, body in objects:
        await kube.create(resource, {"apiVersion": resource.api_version, "kind": resource.kind, **body}, namespace)
    yield await asyncio.to_thread(control_plane.service_account_kubeconfig, namespace, ACCOUNT)
    for resource, body in objects:
        if not resource.namespaced:
            with contextlib.suppress(NotFoundError):
                await kube.delete(resource, body["metadata"]["name"])


async def test_opsync_runs_with_the_listed_permissions_only(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, least_privilege: str
) -> None:
    app = workload("Deployment", "app", env_secret="db", annotations={AUTO_RESTART_ANNOTATION: "true"})
    overrides = {"leader_elect": True, "leader_election_namespace": namespace}
    refused = forbidden()
    async with run_operator(
        control_plane, emulator, namespaces=[namespace], kubeconfig=least_privilege, **overrides
    ) as op:
        await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{VAULT}/items/db"), namespace)
        await kube.create(DEPLOYMENTS, app, namespace)
        await kube.create(
            DEPLOYMENTS,
            workload("Deployment", "named", item_path=f"vaults/{VAULT}/items/db", item_name="named"),
            namespace,
        )
        await op.caught_up([await wait_for_data(kube, namespace, "db", {"password": "one"})])
        await wait_for_data(kube, namespace, "named", {"password": "one"})
        await wait_for_ready(kube, namespace, "db", "True", "Synced")
        emulator.update_item(VAULT, "db", fields={"password": "two"})
        await op.caught_up([await wait_for_data(kube, namespace, "db", {"password": "two"})])
        template = (await kube.get(DEPLOYMENTS, "app", namespace))["spec"]["template"]["metadata"]
        assert LAST_RESTARTED_ANNOTATION in template.get("annotations", {})
    assert forbidden() == refused  # opsync never needed more than it has
