"""opsync runs as the Helm chart's ServiceAccount, with the chart's RBAC and nothing else, and does its job.

The chart is rendered by helm and applied to the real API server (``test_chart.installed_chart``), cluster-wide
and with ``watchNamespace``; opsync then runs in this process with a token of the chart's ServiceAccount
(leader election on, in the release namespace, as the chart runs it). It syncs an item and a Deployment's
Secret and restarts the Deployment when the item changes, and the API server never refuses it a request:
the chart's RBAC (which ``test_chart`` proves equal to ``controllers.permissions.REQUIRED``) is sufficient.
"""

from __future__ import annotations

import pytest

from controllers.constants import AUTO_RESTART_ANNOTATION, LAST_RESTARTED_ANNOTATION
from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client, ForbiddenError
from opsync.envtest import ControlPlane
from opsync.metrics import REGISTRY
from opsync.resources import DEPLOYMENTS, NAMESPACES, REPLICASETS, SECRETS
from tests.integration.chart.test_chart import extra_namespaces, installed_chart
from tests.support.harness import Vaults, run_operator
from tests.support.objects import opi, wait_for_data, wait_for_ready, workload
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

VAULT = "k8s"


@pytest.fixture
def vaults() -> Vaults:
    items = [{"title": "db", "fields": [{"label": "password", "value": "one"}]}]
    return {VAULT: items}


def refused() -> float:
    """Requests the API server answered with 403 so far, for any client in this process."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "rest_client_requests"
        for sample in metric.samples
        if sample.name == "rest_client_requests_total" and sample.labels.get("code") == "403"
    )


async def replica_sets_of(kube: Client, namespace: str, deployment: str) -> int:
    found = (await kube.list(REPLICASETS, namespace))["items"]
    return sum(any(ref["name"] == deployment for ref in rs["metadata"].get("ownerReferences", [])) for rs in found)


@pytest.mark.parametrize("namespaced", [False, True], ids=["cluster-wide", "namespaced"])
async def test_opsync_syncs_and_restarts_as_the_charts_service_account(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, namespaced: bool
) -> None:
    async with extra_namespaces(kube, 2) as (apps, elsewhere):
        values = {"replicas": 0, "watchNamespace": [apps] if namespaced else []}  # opsync runs here instead
        async with installed_chart(control_plane, namespace, values) as chart:
            before = refused()
            async with run_operator(
                control_plane,
                emulator,
                namespaces=[apps] if namespaced else None,
                kubeconfig=chart.kubeconfig,
                leader_elect=True,
                leader_election_namespace=namespace,
            ) as op:
                path = f"vaults/{VAULT}/items/db"
                app = workload(
                    "Deployment",
                    "app",
                    item_path=path,
                    item_name="app-db",
                    annotations={AUTO_RESTART_ANNOTATION: "true"},
                    env_secret="app-db",
                )
                await kube.create(ONEPASSWORDITEMS, opi("db", path), apps)
                await kube.create(DEPLOYMENTS, app, apps)

                await wait_for_data(kube, apps, "db", {"password": "one"})
                await wait_for_ready(kube, apps, "db", "True", "Synced")
                synced = await wait_for_data(kube, apps, "app-db", {"password": "one"})
                await op.caught_up([synced, await kube.get(DEPLOYMENTS, "app", apps)])
                template = (await kube.get(DEPLOYMENTS, "app", apps))["spec"]["template"]["metadata"]
                restarted_before = (template.get("annotations") or {}).get(LAST_RESTARTED_ANNOTATION)

                emulator.update_item(VAULT, "db", fields={"password": "two"})
                await wait_for_data(kube, apps, "db", {"password": "two"})
                await wait_for_data(kube, apps, "app-db", {"password": "two"})

                async def restarted() -> bool:
                    template = (await kube.get(DEPLOYMENTS, "app", apps))["spec"]["template"]["metadata"]
                    stamp = (template.get("annotations") or {}).get(LAST_RESTARTED_ANNOTATION)
                    return stamp is not None and stamp != restarted_before

                await eventually(restarted, message="the Deployment's pod template was not restarted")

                async def rolled() -> bool:
                    return await replica_sets_of(kube, apps, "app") >= 2

                await eventually(rolled, message="the restart did not roll out a new ReplicaSet")
                await op.settled()
            assert refused() == before, "the API server refused opsync a request: the chart's RBAC is short"

            if namespaced:  # the same identity, nothing outside the watched namespace
                async with await Client.from_kubeconfig(chart.kubeconfig) as identity:
                    with pytest.raises(ForbiddenError):
                        await identity.list(SECRETS, elsewhere)
                    with pytest.raises(ForbiddenError):
                        await identity.list(SECRETS, namespace)  # the release namespace is not watched
                    with pytest.raises(ForbiddenError):
                        await identity.list(NAMESPACES)
