"""The manager against a real control plane: reconciling, draining, probes, leader election."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from opsync.builder import Builder
from opsync.client import Client, NotFoundError
from opsync.leader import LeaderElectionConfig, LeaderElectionLost
from opsync.manager import Manager
from opsync.reconcile import Request
from opsync.resources import CONFIGMAPS, LEASES, ROLEBINDINGS, ROLES, SERVICEACCOUNTS, KubeObject
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration
_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


async def get_or_none(kube: Client, name: str, namespace: str) -> KubeObject | None:
    try:
        return await kube.get(CONFIGMAPS, name, namespace)
    except NotFoundError:
        return None


def configmap(name: str, namespace: str, data: dict[str, str]) -> KubeObject:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}, "data": data}


@asynccontextmanager
async def running(manager: Manager) -> AsyncIterator[tuple[asyncio.Event, asyncio.Task[None]]]:
    """Run ``manager`` in a task; on exit stop it gracefully (if it still runs) and wait for it."""
    stopping = asyncio.Event()
    task = asyncio.create_task(manager.run(stopping))
    try:
        yield stopping, task
    finally:
        stopping.set()
        async with asyncio.timeout(60):
            await asyncio.gather(task, return_exceptions=True)


def quiet_manager(client: Client, namespace: str, **options: Any) -> Manager:
    options.setdefault("health_probe_bind_address", "0")
    options.setdefault("metrics_bind_address", "0")
    return Manager(client, namespaces=[namespace], **options)


class CopyReconciler:
    """Writes ``<name>-copy`` with the source's data; optionally holds each reconcile until told."""

    def __init__(self, manager: Manager, *, before_write: Callable[[], Awaitable[None]] | None = None) -> None:
        self.client = manager.client
        self.informer = manager.cache.informer(CONFIGMAPS)
        self.before_write = before_write
        self.started = asyncio.Event()

    async def reconcile(self, request: Request) -> None:
        if request.name.endswith("-copy"):
            return
        source = self.informer.get(request.namespace, request.name)
        if source is None:
            return
        self.started.set()
        if self.before_write is not None:
            await self.before_write()
        copy = configmap(f"{request.name}-copy", request.namespace, source.get("data") or {})
        await self.client.patch(
            CONFIGMAPS, copy["metadata"]["name"], copy, request.namespace, patch_type="apply", force=True
        )


async def test_a_controller_reconciles_configmaps(kube: Client, namespace: str) -> None:
    manager = quiet_manager(kube, namespace)
    Builder(manager, unique("copy")).for_(CONFIGMAPS).complete(CopyReconciler(manager))
    async with running(manager):
        await kube.create(CONFIGMAPS, configmap("settings", namespace, {"a": "1"}), namespace)

        async def copied(data: dict[str, str]) -> bool:
            copy = await get_or_none(kube, "settings-copy", namespace)
            return copy is not None and copy.get("data") == data

        await eventually(lambda: copied({"a": "1"}))
        await kube.patch(CONFIGMAPS, "settings", {"data": {"a": "2"}}, namespace)
        await eventually(lambda: copied({"a": "2"}))


async def test_stopping_drains_the_in_flight_reconcile(kube: Client, namespace: str) -> None:
    stopping_seen = asyncio.Event()
    manager = quiet_manager(kube, namespace)

    async def hold_until_shutdown() -> None:
        await stopping_seen.wait()
        await asyncio.sleep(0.2)  # still busy after the manager was told to stop

    reconciler = CopyReconciler(manager, before_write=hold_until_shutdown)
    Builder(manager, unique("drain")).for_(CONFIGMAPS).complete(reconciler)
    async with running(manager) as (stopping, task):
        await kube.create(CONFIGMAPS, configmap("inflight", namespace, {"k": "v"}), namespace)
        await eventually(reconciler.started.is_set)
        stopping.set()
        stopping_seen.set()
        async with asyncio.timeout(60):
            await task  # returns cleanly, after the reconcile finished
    copy = await get_or_none(kube, "inflight-copy", namespace)
    assert copy is not None and copy["data"] == {"k": "v"}


async def probe(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


async def test_readyz_fails_until_the_cache_has_synced(control_plane: Any, kube: Client, namespace: str) -> None:
    # A service account that may not list ConfigMaps yet: its informer cannot sync until it is allowed to.
    account = "late-rbac"
    await kube.create(
        SERVICEACCOUNTS, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account}}, namespace
    )
    restricted = await control_plane.service_account_client(namespace, account)
    try:
        manager = Manager(
            restricted,
            namespaces=[namespace],
            health_probe_bind_address="127.0.0.1:0",
            metrics_bind_address="127.0.0.1:0",
        )
        manager.cache.informer(CONFIGMAPS)
        async with running(manager):
            await eventually(lambda: manager.health_probe_port is not None)
            port = manager.health_probe_port
            assert port is not None
            status, body = await probe(port, "/readyz")
            assert status == 500
            assert "[-]cache-sync failed: reason withheld" in body
            assert await probe(port, "/healthz") == (200, "ok")

            await grant_configmap_reads(kube, namespace, account)

            async def ready() -> bool:
                return (await probe(port, "/readyz"))[0] == 200

            await eventually(ready, timeout=90)
            assert manager.metrics_port is not None
            status, metrics_body = await probe(manager.metrics_port, "/metrics")
            assert status == 200 and "rest_client_requests_total" in metrics_body
    finally:
        await restricted.close()


async def grant_configmap_reads(kube: Client, namespace: str, account: str) -> None:
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "read-configmaps"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "read-configmaps"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-configmaps"},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }
    await kube.create(ROLES, role, namespace)
    await kube.create(ROLEBINDINGS, binding, namespace)


async def test_a_failing_runnable_stops_the_manager_with_its_error(kube: Client, namespace: str) -> None:
    class Broken:
        name = "broken"

        async def run(self, stopping: asyncio.Event) -> None:
            raise RuntimeError("cannot start")

    manager = quiet_manager(kube, namespace)
    manager.add(Broken())
    with pytest.raises(RuntimeError, match="cannot start"):
        async with asyncio.timeout(60):
            await manager.run(asyncio.Event())


# --- leader election ---------------------------------------------------------------------------------------


class LeaderWork:
    """A leader-only runnable that records how many replicas run it at once."""

    def __init__(self, ledger: dict[str, int]) -> None:
        self.name = "leader-work"
        self.ledger = ledger

    async def run(self, stopping: asyncio.Event) -> None:
        self.ledger["active"] += 1
        self.ledger["most"] = max(self.ledger["most"], self.ledger["active"])
        try:
            await stopping.wait()
        finally:
            self.ledger["active"] -= 1


def elected_manager(kube: Client, namespace: str, identity: str, ledger: dict[str, int], **timing: Any) -> Manager:
    config = LeaderElectionConfig(name="test-lease", namespace=namespace, identity=identity, **timing)
    manager = quiet_manager(kube, namespace, leader_election=config)
    manager.add(LeaderWork(ledger))
    return manager


FAST: dict[str, Any] = {"lease_duration": 2.0, "renew_deadline": 1.5, "retry_period": 0.3}


async def holder(kube: Client, namespace: str) -> str | None:
    lease = await kube.get(LEASES, "test-lease", namespace)
    identity: str | None = lease["spec"].get("holderIdentity")
    return identity


async def test_only_the_leader_runs_leader_work_and_a_standby_takes_over_a_dead_leader(
    kube: Client, namespace: str
) -> None:
    ledger = {"active": 0, "most": 0}
    first = elected_manager(kube, namespace, "first", ledger, **FAST)
    second = elected_manager(kube, namespace, "second", ledger, **FAST)
    async with running(first) as (_, first_task):
        await eventually(lambda: first.is_leader)
        async with running(second):
            await eventually(lambda: ledger["active"] == 1)
            assert not second.is_leader
            assert await holder(kube, namespace) == "first"

            first_task.cancel()  # a crash: the Lease is not released
            await eventually(lambda: second.is_leader)
            assert await holder(kube, namespace) == "second"
            await eventually(lambda: ledger["active"] == 1)
            lease = await kube.get(LEASES, "test-lease", namespace)
            assert lease["spec"]["leaseTransitions"] == 1
    assert ledger["most"] == 1  # never two leaders at once


async def test_a_clean_shutdown_releases_the_lease(kube: Client, namespace: str) -> None:
    ledger = {"active": 0, "most": 0}
    # Without the release the standby would wait out a 120 s lease; the test allows 30 s.
    slow: dict[str, Any] = {"lease_duration": 120.0, "renew_deadline": 60.0, "retry_period": 0.3}
    first = elected_manager(kube, namespace, "first", ledger, **slow)
    second = elected_manager(kube, namespace, "second", ledger, **slow)
    async with running(first) as (first_stopping, first_task):
        await eventually(lambda: first.is_leader)
        async with running(second):
            await eventually(lambda: ledger["active"] == 1)
            first_stopping.set()
            await first_task
            await eventually(lambda: second.is_leader, timeout=30)
            assert await holder(kube, namespace) == "second"
    assert ledger["most"] == 1


async def test_losing_the_lease_stops_everything_and_fails_run(kube: Client, namespace: str) -> None:
    ledger = {"active": 0, "most": 0}
    manager = elected_manager(kube, namespace, "victim", ledger, **FAST)
    async with running(manager) as (_, task):
        await eventually(lambda: ledger["active"] == 1)

        # Someone else takes the Lease over; the victim's renewals now fail until its renew deadline.
        def usurp(lease: KubeObject) -> bool:
            lease["spec"].update(holderIdentity="usurper", leaseDurationSeconds=3600)
            return True

        await kube.mutate(LEASES, "test-lease", namespace, usurp)
        with pytest.raises(LeaderElectionLost):
            async with asyncio.timeout(60):
                await task
        assert ledger["active"] == 0
        assert not manager.is_leader
    assert await holder(kube, namespace) == "usurper"
