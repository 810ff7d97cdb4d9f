"""``opsync run`` as in a pod: no kubeconfig, only what kubelet gives a pod.

The process reads its ServiceAccount token, the cluster's CA and its namespace from kubelet's paths under
``/var/run/secrets/kubernetes.io/serviceaccount`` and the API server's address from ``KUBERNETES_SERVICE_HOST``
and ``_PORT``, as the chart's Deployment runs it. The files live only in a private mount namespace
(``bench.processes.InCluster``, the way ``make bench`` runs both operators side by side), which needs root, as
CI has; elsewhere the test is skipped with that reason.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bench.processes import InCluster, Opsync
from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client
from opsync.envtest import ControlPlane
from tests.integration.chart.test_chart import installed_chart
from tests.support.harness import Vaults
from tests.support.objects import opi, wait_for_data, wait_for_ready

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("unshare") is None,
        reason="a private mount namespace for kubelet's files needs root and unshare (CI runs as root)",
    ),
]

VAULT = "k8s"


@pytest.fixture
def vaults() -> Vaults:
    return {VAULT: [{"title": "db", "fields": [{"label": "password", "value": "one"}]}]}


async def test_opsync_run_in_a_pod_syncs_as_the_charts_service_account(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, tmp_path: Path
) -> None:
    async with installed_chart(control_plane, namespace, {"watchNamespace": [namespace]}) as chart:
        pod = await InCluster.service_account(control_plane, namespace, chart.service_account, tmp_path)
        opsync = Opsync(
            connect_url=emulator.url,
            token=emulator.token,
            namespaces=[namespace],
            poll_interval=2,
            workers=2,
            log_path=tmp_path / "opsync.log",
            in_cluster=pod,
        )
        await opsync.spawn()
        try:
            await opsync.wait_ready(within=120)
            await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{VAULT}/items/db"), namespace)
            await wait_for_data(kube, namespace, "db", {"password": "one"})
            await wait_for_ready(kube, namespace, "db", "True", "Synced")

            emulator.update_item(VAULT, "db", fields={"password": "two"})
            await wait_for_data(kube, namespace, "db", {"password": "two"})
        finally:
            await opsync.stop()
        assert "Traceback" not in (tmp_path / "opsync.log").read_text()
