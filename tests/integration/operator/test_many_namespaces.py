"""``WATCH_NAMESPACE`` naming many namespaces: every watch holds a connection of its own for its life.

Over HTTP/1.1 each (namespace, kind) watch is a connection that stays open, nine per watched namespace. This
test runs opsync as the chart's ServiceAccount, with the chart's per-namespace RBAC, over more namespaces than a
connection pool of 100 has room for watches, and checks that it still syncs, follows changes and restarts
workloads in the last of them (what each watch holds: tests/integration/framework/test_client.py).
"""

from __future__ import annotations

import pytest

from controllers.constants import AUTO_RESTART_ANNOTATION, LAST_RESTARTED_ANNOTATION
from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client
from opsync.envtest import ControlPlane
from opsync.resources import DEPLOYMENTS
from tests.integration.chart.test_chart import extra_namespaces, installed_chart
from tests.support.harness import Vaults, run_operator
from tests.support.objects import opi, wait_for_data, workload
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

VAULT = "k8s"
DB_PATH = f"vaults/{VAULT}/items/db"
OLD, NEW = {"password": "old"}, {"password": "new"}
NAMESPACES = 14  # with nine kinds watched in each, well past the 100 connections kubernetes-asyncio pools


@pytest.fixture
def vaults() -> Vaults:
    return {VAULT: [{"title": "db", "fields": [{"label": "password", "value": "old"}]}]}


async def test_many_watched_namespaces_sync_follow_changes_and_restart(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator
) -> None:
    async with (
        extra_namespaces(kube, NAMESPACES) as watched,
        installed_chart(control_plane, namespace, {"watchNamespace": watched}) as chart,
    ):
        last = watched[-1]
        for where in (watched[0], last):
            await kube.create(ONEPASSWORDITEMS, opi("db", DB_PATH), where)
        annotations = {AUTO_RESTART_ANNOTATION: "true"}
        await kube.create(DEPLOYMENTS, workload("Deployment", "web", env_secret="db", annotations=annotations), last)

        async with run_operator(control_plane, emulator, namespaces=watched, kubeconfig=chart.kubeconfig) as op:
            namespaced = [i for i in op.operator.manager.cache.informers if i.resource.namespaced]
            watches = len(namespaced) * len(watched)
            assert watches > 100, f"only {watches} watches: the test no longer exceeds the pool it is about"
            for where in (watched[0], last):
                await wait_for_data(kube, where, "db", OLD)

            emulator.update_item(VAULT, "db", fields=NEW)
            for where in (watched[0], last):
                await wait_for_data(kube, where, "db", NEW)

            async def restarted() -> bool:
                web = await kube.get(DEPLOYMENTS, "web", last)
                return LAST_RESTARTED_ANNOTATION in (web["spec"]["template"]["metadata"].get("annotations") or {})

            await eventually(restarted, message=f"the Deployment in {last} was not restarted")
