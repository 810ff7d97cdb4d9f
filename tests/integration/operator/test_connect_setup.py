"""``MANAGE_CONNECT=true`` (``controllers.connect_setup``) on the real API server: opsync creates Connect's
Service and Deployment in its namespace when absent, exactly as the Go operator's ``config/connect/*.yaml``
(read from ``../shared/upstream`` beside the repository), only on the leader, and leaves existing ones alone.

The Service is a NodePort on 30080/30081, which are unique in a cluster: every test that may create it deletes
it afterwards and waits until it is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from controllers import check, connect_setup
from controllers.connect_setup import NAME, SERVICES
from controllers.main import Operator, build_operator, connect_client
from onepassword_access.emulator import Emulator
from opsync.client import Client, count_request
from opsync.envtest import ControlPlane
from opsync.resources import DEPLOYMENTS, LEASES, KubeObject
from tests.integration.chart.test_chart import installed_chart
from tests.support.harness import RequestLog, emulator_data, operator_settings
from tests.support.objects import get_or_none
from tests.support.upstream import upstream
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

LEASE = "c26807fd.onepassword.com"


def go_manifest(name: str) -> KubeObject:
    """One of the Go operator's ``config/connect`` manifests, as 1Password ships it."""
    path = upstream() / "onepassword-operator-1.12.0" / "config" / "connect" / name
    manifest: KubeObject = yaml.safe_load(path.read_text())
    return manifest


# The API server writes quantities in canonical form.
CANONICAL = {"0.2": "200m"}


def missing(actual: Any, expected: Any, where: str = "") -> list[str]:
    """Where ``actual`` lacks or differs from what ``expected`` has (the API server adds defaults to what was
    sent, so more is fine)."""
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            return [where]
        return [m for k, v in expected.items() for m in missing(actual.get(k), v, f"{where}.{k}")]
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [where]
        return [
            m for i, (a, e) in enumerate(zip(actual, expected, strict=True)) for m in missing(a, e, f"{where}[{i}]")
        ]
    return [] if actual == CANONICAL.get(expected, expected) else [f"{where}: {actual!r} != {expected!r}"]


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(emulator_data({"k8s": []})) as emu:
        yield emu


@pytest.fixture
async def connect_cleanup(kube: Client, namespace: str) -> AsyncIterator[None]:
    """Delete Connect's Service after the test and wait until its node ports are free again."""
    yield
    if await get_or_none(kube, SERVICES, NAME, namespace) is not None:
        await kube.delete(SERVICES, NAME, namespace)

    async def gone() -> bool:
        return await get_or_none(kube, SERVICES, NAME, namespace) is None

    await eventually(gone, message="Connect's Service was not deleted")


@asynccontextmanager
async def run_until_exit(run: Callable[[asyncio.Event], Awaitable[None]]) -> AsyncIterator[None]:
    """Run ``run(stopping)`` until the block ends, then set ``stopping`` (as SIGTERM does) and wait for it."""
    stopping = asyncio.Event()
    task = asyncio.create_task(run(stopping))
    try:
        yield
    finally:
        stopping.set()
        async with asyncio.timeout(60):
            await task


@asynccontextmanager
async def running(
    control_plane: ControlPlane, emulator: Emulator, namespace: str, **overrides: Any
) -> AsyncIterator[tuple[Operator, RequestLog]]:
    """opsync as ``build_operator`` makes it with ``MANAGE_CONNECT=true``, running in ``namespace``."""
    settings = operator_settings(emulator, [namespace], manage_connect=True, **overrides)
    requests = RequestLog()
    client = await Client.from_kubeconfig(control_plane.kubeconfig_path, observers=[count_request, requests])
    connect = connect_client(settings)
    try:
        operator = build_operator(settings, client, connect)
        async with run_until_exit(operator.run):
            yield operator, requests
    finally:
        await connect.close()
        await client.close()


def test_the_objects_are_the_go_operators_manifests() -> None:
    assert connect_setup.connect_service() == go_manifest("service.yaml")
    assert connect_setup.connect_deployment() == go_manifest("deployment.yaml")


@pytest.mark.usefixtures("connect_cleanup")
async def test_only_the_leader_creates_connect(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POD_NAMESPACE", namespace)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    held = {"holderIdentity": "another-replica", "leaseDurationSeconds": 3600, "acquireTime": now, "renewTime": now}
    await kube.create(
        LEASES,
        {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": LEASE}, "spec": held},
        namespace,
    )

    async with running(control_plane, emulator, namespace, leader_elect=True, leader_election_namespace=namespace) as (
        operator,
        client,
    ):

        async def standing_by() -> bool:
            asked = any(f"/leases/{LEASE}" in path for _, path in client.requests)
            return asked and operator.manager.cache.has_synced()

        await eventually(standing_by, message="opsync did not try the Lease")
        assert not operator.manager.is_leader
        assert not [path for _, path in client.requests if "/services" in path or f"/deployments/{NAME}" in path]
        assert await get_or_none(kube, SERVICES, NAME, namespace) is None

        await kube.delete(LEASES, LEASE, namespace)  # the other replica is gone: this one takes over

        async def created() -> bool:
            return all([await get_or_none(kube, kind, NAME, namespace) for kind in (SERVICES, DEPLOYMENTS)])

        await eventually(created, message="the new leader did not create Connect's Service and Deployment")
        assert operator.manager.is_leader

    service = await kube.get(SERVICES, NAME, namespace)
    deployment = await kube.get(DEPLOYMENTS, NAME, namespace)
    assert missing(service, go_manifest("service.yaml")) == []
    assert missing(deployment, go_manifest("deployment.yaml")) == []
    assert [(p["port"], p["nodePort"]) for p in service["spec"]["ports"]] == [(8080, 30080), (8081, 30081)]
    api, sync = deployment["spec"]["template"]["spec"]["containers"]
    assert (api["image"], sync["image"]) == ("1password/connect-api:latest", "1password/connect-sync:latest")
    session = {"name": "OP_SESSION", "valueFrom": {"secretKeyRef": {"name": "op-credentials", "key": "op-session"}}}
    assert session in api["env"] and session in sync["env"]


def users_service() -> KubeObject:
    """Connect's Service as a user made it: ClusterIP, other ports, a label of theirs."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAME, "labels": {"owner": "platform-team"}},
        "spec": {"selector": {"app": NAME}, "ports": [{"port": 8443, "name": "https"}]},
    }


def users_deployment() -> KubeObject:
    """Connect's Deployment as a user made it: another image and replica count."""
    labels = {"app": NAME}
    pod = {"containers": [{"name": "connect-api", "image": "registry.example/connect-api:1.8.2"}]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "labels": {"owner": "platform-team"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


@pytest.mark.usefixtures("connect_cleanup")
@pytest.mark.parametrize("existing", ["service", "deployment", "both"])
async def test_existing_objects_are_left_as_they_are(
    control_plane: ControlPlane,
    kube: Client,
    namespace: str,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    existing: str,
) -> None:
    monkeypatch.setenv("POD_NAMESPACE", namespace)
    made = {}
    if existing in ("service", "both"):
        made["Service"] = await kube.create(SERVICES, users_service(), namespace)
    if existing in ("deployment", "both"):
        made["Deployment"] = await kube.create(DEPLOYMENTS, users_deployment(), namespace)

    async with running(control_plane, emulator, namespace) as (_, client):

        async def both_exist_and_were_looked_at() -> bool:
            looked = {
                path.rsplit("/", 2)[-2]
                for method, path in client.requests
                if method == "GET" and path.endswith(f"/{NAME}")
            }
            found = [await get_or_none(kube, kind, NAME, namespace) for kind in (SERVICES, DEPLOYMENTS)]
            return looked >= {"services", "deployments"} and all(found)

        await eventually(both_exist_and_were_looked_at, message="opsync did not look at both objects")

    writes = [
        (method, path)
        for method, path in client.writes()
        if path.rsplit("/", 1)[-1] in ("services", "deployments", NAME)
    ]
    assert len(writes) == 2 - len(made), writes  # one create for each missing object, nothing else
    assert all(method == "POST" for method, _ in writes)
    for kind, before in made.items():
        resource = SERVICES if kind == "Service" else DEPLOYMENTS
        after = await kube.get(resource, NAME, namespace)
        # The Deployment's status moves on (the controllers work on it); what the user wrote stays.
        assert (after["spec"], after["metadata"].get("generation")) == (
            before["spec"],
            before["metadata"].get("generation"),
        )
        assert after["metadata"]["labels"] == {"owner": "platform-team"}


@asynccontextmanager
async def connect_setup_as(kubeconfig: str, namespace: str) -> AsyncIterator[None]:
    """``ConnectSetup`` alone, acting as whoever ``kubeconfig`` names."""
    async with (
        await Client.from_kubeconfig(kubeconfig) as client,
        run_until_exit(connect_setup.ConnectSetup(client, namespace).run),
    ):
        yield


@pytest.mark.usefixtures("connect_cleanup")
async def test_the_charts_service_account_may_create_connect_only_with_manage_connect(
    control_plane: ControlPlane, kube: Client, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        installed_chart(control_plane, namespace, {"replicas": 0}) as chart,
        connect_setup_as(chart.kubeconfig, namespace),
    ):

        def refused() -> bool:
            return any("MANAGE_CONNECT: not allowed to get or create Service" in r.getMessage() for r in caplog.records)

        await eventually(refused, message="no log line saying what permission is missing")
        assert f"grant get and create on services in {namespace}" in caplog.text
        assert await get_or_none(kube, SERVICES, NAME, namespace) is None

    async with (
        installed_chart(control_plane, namespace, {"replicas": 0, "manageConnect": True}) as chart,
        connect_setup_as(chart.kubeconfig, namespace),
    ):

        async def created() -> bool:
            return all([await get_or_none(kube, kind, NAME, namespace) for kind in (SERVICES, DEPLOYMENTS)])

        await eventually(created, message="the chart's ServiceAccount could not create Connect")


@pytest.mark.parametrize("granted", [False, True], ids=["chart-without-manageConnect", "chart-with-manageConnect"])
async def test_opsync_check_reviews_the_manage_connect_permissions(
    control_plane: ControlPlane,
    namespace: str,
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    granted: bool,
) -> None:
    monkeypatch.setenv("POD_NAMESPACE", namespace)
    values = {"replicas": 0, "watchNamespace": [namespace], "manageConnect": granted}
    async with installed_chart(control_plane, namespace, values) as chart:
        settings = operator_settings(
            emulator,
            [namespace],
            manage_connect=True,
            kubeconfig=chart.kubeconfig,
            leader_elect=True,
            leader_election_namespace=namespace,
        )
        rows = {row.check: row for row in await check.run_checks(settings) if row.check.startswith("kubernetes: ")}

    services = rows["kubernetes: services"]
    if granted:
        assert [row for row in rows.values() if row.status != "ok"] == []
    else:
        assert services.status == "FAIL"
        assert services.detail == (
            f"missing: get in {namespace}, create in {namespace} — MANAGE_CONNECT=true: create Connect's Service "
            "when absent (never updated)"
        )
