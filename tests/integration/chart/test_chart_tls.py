"""The chart's recommended Connect set-up, end to end: HTTPS with a private CA (docs/security.md).

The chart is installed with ``connect.host`` on an HTTPS Connect emulator whose certificate a throwaway CA
signed, and ``tls.trust.secret`` naming a Secret that holds that CA. The control plane has no kubelet, so the
test plays its part for the rendered operator container: it mounts the Secret volumes into a folder, resolves
``valueFrom``, and starts ``opsync run`` with exactly the container's arguments and environment (paths
under the mounts moved into that folder), as the chart's ServiceAccount. The item syncs over TLS; without the
trust Secret, the same install refuses the certificate and sends nothing.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client
from opsync.envtest import ControlPlane
from opsync.resources import SECRETS, KubeObject
from tests.integration.chart.test_chart import InstalledChart, installed_chart, one
from tests.integration.onepassword_access.test_connect_client import tls_files  # noqa: F401 - a fixture (a throwaway CA and a server certificate)
from tests.integration.operator.test_connect_tls import VAULT, https_emulator  # noqa: F401 - the HTTPS emulator fixture
from tests.support.harness import TOKEN
from tests.support.objects import opi, wait_for_data, wait_for_ready
from tests.support.processes import OpsyncProcess

pytestmark = pytest.mark.integration


async def as_the_kubelet_would(kube: Client, deployment: KubeObject, root: Path) -> tuple[list[str], dict[str, str]]:
    """The operator container's arguments and environment, its Secret volumes written under ``root``."""
    pod = deployment["spec"]["template"]["spec"]
    namespace = deployment["metadata"]["namespace"]
    (container,) = pod["containers"]
    mounts: dict[str, Path] = {}
    for volume in pod.get("volumes") or []:
        source = volume.get("secret")
        if source is None:
            continue
        data = (await kube.get(SECRETS, source["secretName"], namespace)).get("data") or {}
        folder = root / volume["name"]
        folder.mkdir(parents=True)
        items = source.get("items") or [{"key": key, "path": key} for key in data]
        for item in items:
            (folder / item["path"]).write_bytes(base64.b64decode(data[item["key"]]))
        mounts[volume["name"]] = folder
    moved = {m["mountPath"]: mounts[m["name"]] for m in container.get("volumeMounts") or [] if m["name"] in mounts}

    def local(value: str) -> str:
        for mount_path, folder in moved.items():
            if value.startswith(mount_path + "/"):
                return str(folder / value[len(mount_path) + 1 :])
        return value

    env: dict[str, str] = {}
    for variable in container.get("env") or []:
        source = variable.get("valueFrom")
        if source is None:
            env[variable["name"]] = local(str(variable.get("value", "")))
        elif (field := source.get("fieldRef")) is not None:
            assert field["fieldPath"] == "metadata.namespace", field
            env[variable["name"]] = namespace
        else:
            ref: Mapping[str, Any] = source["secretKeyRef"]
            secret = await kube.get(SECRETS, ref["name"], namespace)
            env[variable["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    return list(container["args"]), env


async def run_the_charts_opsync(kube: Client, chart: InstalledChart, tmp_path: Path) -> OpsyncProcess:
    args, env = await as_the_kubelet_would(kube, one(chart.objects, "Deployment"), tmp_path / "mounts")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OP_", "SSL_CERT"))}
    # Ports of this machine instead of the pod's; appended, so they win over the chart's.
    args += ["--metrics-bind-address=0", "--health-probe-bind-address=0"]
    process = OpsyncProcess(args, {**base, **env, "KUBECONFIG": chart.kubeconfig}, tmp_path / "opsync.log")
    return await process.start()


def chart_values(emulator: Emulator, apps: str, trust: bool) -> dict[str, Any]:
    return {
        "connect": {"host": emulator.url},
        "token": {"value": TOKEN},
        "watchNamespace": [apps],
        "pollingInterval": 10,
        "admissionPolicy": {"enabled": False},  # not what this test is about; tested in test_chart_security
        **({"tls": {"trust": {"secret": "connect-ca"}}} if trust else {}),
    }


@pytest.mark.parametrize("trust", [True, False], ids=["trusted", "untrusted"])
async def test_the_chart_runs_opsync_over_tls_with_a_private_ca(
    control_plane: ControlPlane,
    kube: Client,
    namespace: str,
    https_emulator: Emulator,  # noqa: F811 - the fixture
    tls_files: dict[str, Path],  # noqa: F811 - the fixture
    tmp_path: Path,
    trust: bool,
) -> None:
    ca = base64.b64encode(tls_files["ca.pem"].read_bytes()).decode()
    await kube.create(
        SECRETS,
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "connect-ca"}, "data": {"tls.crt": ca}},
        namespace,
    )
    async with installed_chart(control_plane, namespace, chart_values(https_emulator, namespace, trust)) as chart:
        opsync = await run_the_charts_opsync(kube, chart, tmp_path)
        try:
            await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{VAULT}/items/db"), namespace)
            if trust:
                await wait_for_data(kube, namespace, "db", {"password": "pw"})
            else:
                condition = await wait_for_ready(kube, namespace, "db", "False", "ConnectUnavailable")
                assert "certificate" in condition["message"].lower(), condition["message"]
                assert not https_emulator.request_counts  # nothing, the token least of all, was sent
        finally:
            await opsync.kill()
