"""``opsync check`` reviews exactly the permissions ``controllers.permissions.REQUIRED`` lists, where opsync needs
them, and names the one that is missing.

The identity is the Helm chart's ServiceAccount (``test_chart.installed_chart``), whose RBAC ``test_chart``
proves equal to REQUIRED and ``test_chart_identity`` proves sufficient to run opsync. Here the check passes with
it as installed, and after one verb is taken away from it, ``opsync check`` (the command) names that verb, the
place and why opsync needs it, and exits 1.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Callable
from typing import NamedTuple

import pytest

from controllers import check
from controllers.config import Settings
from controllers.permissions import REQUIRED
from onepassword_access.emulator import Emulator
from opsync.client import Client
from opsync.envtest import ControlPlane
from opsync.resources import CLUSTERROLES, ROLES, KubeObject
from tests.integration.chart.test_chart import (
    allowed,
    extra_namespaces,
    installed_chart,
    of_kind,
    operator_cluster_role,
)
from tests.support.harness import TOKEN, Vaults
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

VAULT = "k8s"
CHECK_TIMEOUT = 60.0


@pytest.fixture
def vaults() -> Vaults:
    items = [{"title": "db", "fields": [{"label": "password", "value": "one"}]}]
    return {VAULT: items}


@pytest.mark.parametrize("namespaced", [False, True], ids=["cluster-wide", "namespaced"])
async def test_check_passes_with_the_charts_permissions(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, namespaced: bool
) -> None:
    async with (
        extra_namespaces(kube, 1) as (apps,),
        installed_chart(
            control_plane, namespace, {"replicas": 0, "watchNamespace": [apps] if namespaced else []}
        ) as chart,
    ):
        settings = Settings.model_validate(
            {
                "connect_host": emulator.url,
                "connect_token": TOKEN,
                "kubeconfig": chart.kubeconfig,
                "watch_namespaces": [apps] if namespaced else [],
                "leader_elect": True,
                "leader_election_namespace": namespace,
            }
        )
        rows = await check.run_checks(settings)

    # Cluster-wide, check also reads the vaults of every item in the cluster: other tests' items in this
    # shared control plane name vaults this emulator does not have, and saying so is right. Judge the rest.
    judged = [row for row in rows if namespaced or not row.check.startswith("connect: vault ")]
    assert [row for row in judged if row.status != "ok"] == []
    reviewed = {row.check.removeprefix("kubernetes: ") for row in rows if row.check.startswith("kubernetes: ")}
    assert reviewed == {permission.display for permission in REQUIRED}


async def run_check(env: dict[str, str], *args: str) -> tuple[int, dict[str, tuple[str, str]]]:
    """``opsync check`` as a process: its exit code and its table, check -> (status, detail)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "opsync",
        "check",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(CHECK_TIMEOUT):
        stdout, stderr = await process.communicate()
    table: dict[str, tuple[str, str]] = {}
    for line in stdout.decode().splitlines():
        name, status, *detail = re.split(r"\s{2,}", line.strip(), maxsplit=2)
        table[name] = (status, "".join(detail))
    assert process.returncode is not None, stderr.decode()
    return process.returncode, table


class Revoked(NamedTuple):
    """One verb taken from the chart's RBAC, and the row ``opsync check`` must print about it."""

    grant: tuple[str, str, str]  # apiGroup, resource, verb
    kind: str  # where the chart grants it: the watched namespace's Role, or the ClusterRole
    review: str  # how the API server is asked: "namespace" (the watched one), "name" (it), or "" (cluster)
    row: str
    detail: str  # what the row's detail starts with; {apps} is the watched namespace


REVOKED = {
    "secrets-delete": Revoked(
        ("", "secrets", "delete"), "Role", "namespace", "secrets", "missing: delete in {apps} — write the Secrets"
    ),
    "access-policies-watch": Revoked(
        ("onepassword.com", "onepasswordaccesspolicies", "watch"),
        "ClusterRole",
        "",
        "onepasswordaccesspolicies.onepassword.com",
        "missing: watch cluster-wide — which namespaces may sync which vaults",
    ),
    "namespace-list-by-name": Revoked(
        ("", "namespaces", "list"), "ClusterRole", "name", "namespaces", "missing: list on {apps} — auto-restart"
    ),
}


def without(verb: str, resource: str) -> Callable[[KubeObject], bool]:
    """A ``Client.mutate`` function taking ``verb`` on ``resource`` out of a Role's or ClusterRole's rules."""

    def edit(role: KubeObject) -> bool:
        for rule in role["rules"]:
            if resource in rule["resources"] and verb in rule["verbs"]:
                rule["verbs"].remove(verb)
                return True
        raise AssertionError(f"the chart grants no {verb} on {resource} in {role['metadata']['name']}")

    return edit


@pytest.mark.parametrize("case", REVOKED.values(), ids=REVOKED.keys())
async def test_check_names_a_missing_permission_and_exits_1(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, case: Revoked
) -> None:
    _, resource, verb = case.grant
    async with (
        extra_namespaces(kube, 1) as (apps,),
        installed_chart(control_plane, namespace, {"replicas": 0, "watchNamespace": [apps]}) as chart,
    ):
        if case.kind == "Role":
            role = next(o for o in of_kind(chart.objects, "Role") if o["metadata"]["namespace"] == apps)
            await kube.mutate(ROLES, role["metadata"]["name"], apps, without(verb, resource))
        else:
            cluster_role = operator_cluster_role(chart.objects)["metadata"]["name"]
            await kube.mutate(CLUSTERROLES, cluster_role, None, without(verb, resource))
        async with await Client.from_kubeconfig(chart.kubeconfig) as identity:
            review = {case.review: apps} if case.review else {}

            async def revoked() -> bool:
                return not await allowed(identity, case.grant, **review)

            await eventually(revoked, message="the API server's authorizer never saw the edited role")

        env = {
            "OP_CONNECT_HOST": emulator.url,
            "OP_CONNECT_TOKEN": TOKEN,
            "WATCH_NAMESPACE": apps,
            "KUBECONFIG": chart.kubeconfig,
        }
        code, table = await run_check(env, "--leader-elect", f"--leader-election-namespace={namespace}")

    assert code == 1
    status, detail = table[f"kubernetes: {case.row}"]
    assert status == "FAIL"
    assert detail.startswith(case.detail.format(apps=apps)), detail
    assert {name for name, (status, _) in table.items() if status != "ok"} == {f"kubernetes: {case.row}"}
    reviewed = {name.removeprefix("kubernetes: ") for name in table if name.startswith("kubernetes: ")}
    assert reviewed == {permission.display for permission in REQUIRED}
