"""A cluster that ran 1Password's operator, installed with its ``connect`` chart: its CRD stays.

Each test gets its own control plane holding what ``helm install`` of ``connect-chart-2.4.1`` (read from the
shared upstream folder, see ``tests/support/upstream.py``) with the operator enabled leaves: 1Password's
``onepassworditems.onepassword.com`` CRD, whose status schema prunes ``reason``, ``observedGeneration`` and
``lastSyncTime``, and the Connect and operator Deployments (Pending: there is no kubelet).

- Before upgrading the CRD, opsync works on it: no status PATCH on every retry, the ``ConnectUnavailable`` retry
  on the first good poll, and one warning line saying how to upgrade; ``opsync check`` warns too. Not allowed
  to read the CRD, opsync says so once and learns what is dropped from its first status write.
- The migration steps of docs/compatibility.md, run as written (helm and kubectl): remove the Go operator, adopt
  the CRD for opsync's release, ``helm install`` opsync. Then Ready reasons show in ``kubectl get -o yaml``,
  nothing is written while idle, and a ``ConnectUnavailable`` item recovers on the first good poll.
- The way back: ``helm uninstall`` opsync keeps the CRDs and every item; the connect chart's operator returns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controllers.constants import FINALIZER
from controllers.crdschema import ITEMS_CRD, OPSYNC_FIELDS, dropped_status_fields
from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client
from opsync.envtest import ControlPlane
from opsync.reconcile import Request
from opsync.resources import CLUSTERROLES, CRDS, DEPLOYMENTS, NAMESPACES, SECRETS
from tests.integration.chart.test_chart import CHART, allowed, helm, kubectl
from tests.integration.chart.test_permissions import run_check
from tests.support.harness import TOKEN, RunningOperator, emulator_data, eventually, run_operator
from tests.support.objects import opi, ready_condition, wait_for_data, wait_for_ready
from tests.support.upstream import CONNECT_CHART, GO_OPERATOR_CRD, upstream

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
VAULT = "k8s"
CONNECT_NAMESPACE = "onepassword"
OPSYNC_NAMESPACE = "opsync-system"
APPS = "apps"
OUTDATED = "older than opsync's"
CRD_GET = ("apiextensions.k8s.io", "customresourcedefinitions", "get")


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    items = [{"title": n, "fields": [{"label": "password", "value": f"{n}-v1"}]} for n in ("db", "api", "late")]
    async with Emulator(emulator_data({VAULT: items})) as emu:
        yield emu


@pytest.fixture
async def go_cluster() -> AsyncIterator[tuple[ControlPlane, Client]]:
    """A control plane after ``helm install connect`` (operator enabled); no opsync CRD; an ``apps`` namespace."""
    async with ControlPlane(crds=[], logs_root=REPO / ".envtest-logs") as plane:
        await helm(
            "install",
            "connect",
            str(upstream() / CONNECT_CHART),
            *target(plane, CONNECT_NAMESPACE),
            "--create-namespace",
            "--set=operator.create=true",
            "--set=operator.token.value=go-operator-token",
        )
        async with await plane.client() as kube:
            await eventually(lambda: established(kube), message=f"{ITEMS_CRD} never became established")
            await kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APPS}})
            yield plane, kube


def target(plane: ControlPlane, namespace: str) -> list[str]:
    return [f"--kubeconfig={plane.kubeconfig_path}", f"--namespace={namespace}"]


async def established(kube: Client) -> bool:
    conditions = ((await kube.get(CRDS, ITEMS_CRD)).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


async def go_operator_item(kube: Client, name: str) -> None:
    """An item as the Go operator leaves it: its finalizer, and its Ready condition (no reason)."""
    item = opi(name, f"vaults/{VAULT}/items/{name}", metadata={"finalizers": [FINALIZER]})
    await kube.create(ONEPASSWORDITEMS, item, APPS)
    ready = {"type": "Ready", "status": "True", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    status = {"conditions": [ready]}
    await kube.patch(ONEPASSWORDITEMS, name, {"status": status}, APPS, subresource="status")


async def adopt_the_crd(plane: ControlPlane) -> None:
    """Step 2 of the migration: the marks that let Helm take the CRD into opsync's release."""
    admin = plane.kubeconfig_path
    await kubectl(admin, "label", "crd", ITEMS_CRD, "app.kubernetes.io/managed-by=Helm")
    await kubectl(
        admin,
        "annotate",
        "crd",
        ITEMS_CRD,
        "meta.helm.sh/release-name=opsync",
        f"meta.helm.sh/release-namespace={OPSYNC_NAMESPACE}",
    )


async def install_opsync(plane: ControlPlane, kube: Client, *values: str) -> None:
    """Step 3: ``helm install`` as documented, then check that the CRD is opsync's, kept, and upgradable."""
    args = [str(CHART), *target(plane, OPSYNC_NAMESPACE), "--set=replicas=0", *values]
    await helm("install", "opsync", *args, "--create-namespace", "--force-conflicts")
    crd = await kube.get(CRDS, ITEMS_CRD)
    assert dropped_status_fields(crd) == ()
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    await kube.get(CRDS, "onepasswordaccesspolicies.onepassword.com")
    await helm("upgrade", "opsync", *args)  # the release owns both CRDs now: later upgrades just work


def outdated_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and OUTDATED in r.getMessage()]


def warning_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def status_patches(op: RunningOperator, name: str) -> int:
    return sum(1 for method, path in op.requests.writes() if method == "PATCH" and path.endswith(f"/{name}/status"))


async def idle_writes_nothing(op: RunningOperator, kube: Client) -> None:
    """Over two polls, opsync sends no write and no item or Secret changes (resourceVersions included)."""

    async def versions() -> dict[str, str]:
        found = {}
        for resource in (ONEPASSWORDITEMS, SECRETS):
            for obj in (await kube.list(resource, APPS))["items"]:
                found[f"{resource.plural}/{obj['metadata']['name']}"] = obj["metadata"]["resourceVersion"]
        return found

    await op.settled()
    before, writes = await versions(), len(op.requests.writes())
    await op.wait_for_polls(2)
    await op.settled()
    assert op.requests.writes()[writes:] == []
    assert await versions() == before


async def connect_unavailable_recovers_on_the_first_good_poll(
    op: RunningOperator, kube: Client, emulator: Emulator, reason: str | None
) -> dict[str, Any]:
    """Connect goes down while a new item needs it: the item fails (``reason`` as stored), retries with backoff
    and one status PATCH in all, and is synced by the first poll after Connect is back, long before its backoff
    would retry it. Returns the failed condition."""
    await emulator.set_faults(outage="503")
    await kube.create(ONEPASSWORDITEMS, opi("late", f"vaults/{VAULT}/items/late"), APPS)

    async def failed() -> bool:
        condition = await ready_condition(kube, APPS, "late")
        return condition is not None and condition["status"] == "False"

    await eventually(failed, message="the item never failed")
    condition = await ready_condition(kube, APPS, "late")
    assert condition is not None
    assert condition.get("reason") == reason
    assert condition["message"].startswith("failed to retrieve item: ")
    queue = op.operator.item_controller.queue
    await eventually(lambda: queue.num_requeues(Request(APPS, "late")) >= 3, timeout=60, message="no retries")
    assert status_patches(op, "late") == 1, "the failed condition was rewritten on a retry"

    await emulator.clear_faults()
    cleared_at = await op.polls()
    await wait_for_data(kube, APPS, "late", {"password": "late-v1"})
    assert await op.polls() <= cleared_at + 2, "the item waited for its backoff instead of the first good poll"
    return condition


async def test_on_the_go_operators_crd_opsync_works_and_warns_once(
    go_cluster: tuple[ControlPlane, Client], emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    plane, kube = go_cluster
    assert dropped_status_fields(await kube.get(CRDS, ITEMS_CRD)) == OPSYNC_FIELDS
    await go_operator_item(kube, "db")
    caplog.set_level(logging.WARNING)

    async with run_operator(plane, emulator, namespaces=[APPS]) as op:
        await wait_for_data(kube, APPS, "db", {"password": "db-v1"})
        await kube.create(ONEPASSWORDITEMS, opi("api", f"vaults/{VAULT}/items/api"), APPS)
        await wait_for_data(kube, APPS, "api", {"password": "api-v1"})

        async def synced_message() -> bool:
            condition = await ready_condition(kube, APPS, "api")
            return condition is not None and condition["message"] == "the Secret is in sync with the 1Password item"

        await eventually(synced_message, message="api's Ready condition never said it is in sync")
        stored = (await kube.get(ONEPASSWORDITEMS, "api", APPS))["status"]
        assert "lastSyncTime" not in stored
        assert {"reason", "observedGeneration"}.isdisjoint(stored["conditions"][0]), "the old schema prunes them"

        await idle_writes_nothing(op, kube)
        await connect_unavailable_recovers_on_the_first_good_poll(op, kube, emulator, reason=None)

    (warning,) = outdated_warnings(caplog)
    assert "kubectl apply --server-side --force-conflicts -f crds/onepassword.com_onepassworditems.yaml" in warning

    env = {"OP_CONNECT_HOST": emulator.url, "OP_CONNECT_TOKEN": TOKEN, "WATCH_NAMESPACE": APPS}
    code, table = await run_check({**env, "KUBECONFIG": plane.kubeconfig_path})
    status, detail = table[f"crd: {ITEMS_CRD}"]
    assert (code, status) == (0, "warn"), table  # opsync works on it: a warning, not a failure
    assert "drops status.conditions[].reason" in detail
    assert "kubectl apply --server-side --force-conflicts" in detail


async def test_without_permission_to_read_the_crd_opsync_learns_what_it_drops(
    go_cluster: tuple[ControlPlane, Client], emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    # An RBAC that predates the CRD check (here: the chart's, that rule taken out), and the CRD left old.
    plane, kube = go_cluster
    values = ["--set=replicas=0", "--set=crds.install=false", f"--set=watchNamespace={{{APPS}}}"]
    await helm("install", "opsync", str(CHART), *target(plane, OPSYNC_NAMESPACE), "--create-namespace", *values)
    cluster_role = f"{OPSYNC_NAMESPACE}-opsync"

    def without_crd_rule(role: dict[str, Any]) -> bool:
        role["rules"] = [r for r in role["rules"] if "customresourcedefinitions" not in r["resources"]]
        return True

    await kube.mutate(CLUSTERROLES, cluster_role, None, without_crd_rule)
    identity = await asyncio.to_thread(plane.service_account_kubeconfig, OPSYNC_NAMESPACE, "opsync")
    async with await Client.from_kubeconfig(identity) as opsync:

        async def forbidden() -> bool:
            return not await allowed(
                opsync, ("apiextensions.k8s.io", "customresourcedefinitions", "get"), name=ITEMS_CRD
            )

        await eventually(forbidden, message="the authorizer never saw the edited ClusterRole")
    caplog.set_level(logging.WARNING)

    async with run_operator(plane, emulator, namespaces=[APPS], kubeconfig=identity) as op:
        await kube.create(ONEPASSWORDITEMS, opi("api", f"vaults/{VAULT}/items/api"), APPS)
        await wait_for_data(kube, APPS, "api", {"password": "api-v1"})
        await connect_unavailable_recovers_on_the_first_good_poll(op, kube, emulator, reason=None)

    # Only opsync's own CRD check: an informer may also log a transient 429 naming the CRD's resource.
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "CustomResourceDefinition" in r.getMessage()
    ]
    assert len(warnings) == 1 and "cannot read CustomResourceDefinition" in warnings[0] and "forbidden" in warnings[0]
    (learnt,) = [r.getMessage() for r in caplog.records if "the API server dropped status." in r.getMessage()]
    assert "status.conditions[].reason" in learnt and "kubectl apply --server-side --force-conflicts" in learnt


async def test_migrating_from_the_connect_chart_and_back(
    go_cluster: tuple[ControlPlane, Client], emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    plane, kube = go_cluster
    connect, admin = target(plane, CONNECT_NAMESPACE), plane.kubeconfig_path
    for name in ("db", "api"):
        await go_operator_item(kube, name)
    chart = str(upstream() / CONNECT_CHART)
    assert (await kube.get(DEPLOYMENTS, "onepassword-connect-operator", CONNECT_NAMESPACE))["spec"]["replicas"] == 1

    # docs/compatibility.md, "Switching over", as written.
    # 1. Keep Connect, remove 1Password's operator.
    await helm("upgrade", "connect", chart, *connect, "--reuse-values", "--set=operator.create=false")
    assert [d["metadata"]["name"] for d in (await kube.list(DEPLOYMENTS, CONNECT_NAMESPACE))["items"]] == [
        "onepassword-connect"
    ]
    # 2. Hand the CRD to opsync's release (Helm adopts an object carrying these).
    await adopt_the_crd(plane)
    # 3. Install opsync (replicas 0: it runs in this process, as the chart's ServiceAccount).
    await install_opsync(plane, kube, f"--set=watchNamespace={{{APPS}}}")

    identity = await asyncio.to_thread(plane.service_account_kubeconfig, OPSYNC_NAMESPACE, "opsync")
    caplog.set_level(logging.WARNING)
    async with run_operator(plane, emulator, namespaces=[APPS], kubeconfig=identity) as op:
        for name in ("db", "api"):
            await wait_for_ready(kube, APPS, name, "True", "Synced")
        listed = yaml.safe_load((await kubectl(admin, "get", "onepassworditems", "-n", APPS, "-o", "yaml")).stdout)
        for item in listed["items"]:
            status = item["status"]
            (condition,) = status["conditions"]
            assert (condition["reason"], condition["observedGeneration"]) == ("Synced", 1), item["metadata"]["name"]
            assert status["lastSyncTime"]
            assert FINALIZER not in item["metadata"].get("finalizers", [])
        table = (await kubectl(admin, "get", "onepassworditems", "-n", APPS)).stdout
        assert table.split("\n")[0].split()[:4] == ["NAME", "ITEM", "READY", "REASON"], table
        assert all(line.split()[3] == "Synced" for line in table.strip().split("\n")[1:]), table

        await idle_writes_nothing(op, kube)
        await connect_unavailable_recovers_on_the_first_good_poll(op, kube, emulator, reason="ConnectUnavailable")
    assert not outdated_warnings(caplog), "opsync's chart upgraded the CRD: nothing is pruned any more"

    # The way back (docs/compatibility.md): the CRDs and every item stay; 1Password's operator returns.
    await helm("uninstall", "opsync", *target(plane, OPSYNC_NAMESPACE))
    assert dropped_status_fields(await kube.get(CRDS, ITEMS_CRD)) == ()
    assert {i["metadata"]["name"] for i in (await kube.list(ONEPASSWORDITEMS, APPS))["items"]} == {"db", "api", "late"}
    assert {s["metadata"]["name"] for s in (await kube.list(SECRETS, APPS))["items"]} >= {"db", "api", "late"}
    await helm("upgrade", "connect", chart, *connect, "--reuse-values", "--set=operator.create=true")
    await kube.get(DEPLOYMENTS, "onepassword-connect-operator", CONNECT_NAMESPACE)


async def test_a_crd_applied_with_kubectl_is_adopted_the_same_way() -> None:
    # The Go operator's kustomize manifests: kubectl applied the CRD (client-side), so its fields belong to
    # kubectl, which is what --force-conflicts settles for Helm 4's server-side apply.
    async with ControlPlane(crds=[], logs_root=REPO / ".envtest-logs") as plane, await plane.client() as kube:
        crd = upstream() / GO_OPERATOR_CRD
        await kubectl(plane.kubeconfig_path, "apply", "-f", str(crd))
        await eventually(lambda: established(kube), message=f"{ITEMS_CRD} never became established")
        await adopt_the_crd(plane)
        await install_opsync(plane, kube)
