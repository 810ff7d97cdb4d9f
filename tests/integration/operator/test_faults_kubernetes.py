"""Kubernetes faults (docs/reliability.md): the API server restarted under a running opsync, and etcd compaction forcing
410 Gone. Each test ends with the shared invariant (``invariants.SecretGuard``).

The informer's own 410 ladder is tested in ``test_informer.py``; these tests check what the operator does
with it: nothing lost, and a Secret deleted while opsync could not watch is recreated.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client
from opsync.envtest import ControlPlane
from opsync.resources import SECRETS
from tests.support.harness import Vaults, eventually, run_operator
from tests.support.invariants import SecretGuard
from tests.support.objects import opi, wait_for_data
from tests.support.processes import OpsyncProcess

pytestmark = pytest.mark.integration

VAULT = "k8s"
NAMES = ("db", "api", "cache")


def path(name: str) -> str:
    return f"vaults/{VAULT}/items/{name}"


def data(name: str, password: str = "v1") -> dict[str, str]:
    return {"user": name, "password": password}


@pytest.fixture
def vaults() -> Vaults:
    items = [
        {"title": name, "fields": [{"label": "user", "value": name}, {"label": "password", "value": "v1"}]}
        for name in (*NAMES, "late", "after")
    ]
    return {VAULT: items}


@pytest.fixture
async def client(control_plane: ControlPlane) -> AsyncIterator[Client]:
    """An admin client of this test's own: the session's pooled connections break when the apiserver restarts."""
    async with await control_plane.client() as own:
        yield own


async def populate(kube: Client, namespace: str) -> None:
    unmanaged = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hands-off"}, "data": {"k": "dg=="}}
    await kube.create(SECRETS, unmanaged, namespace)
    for name in NAMES:
        await kube.create(ONEPASSWORDITEMS, opi(name, path(name)), namespace)
    for name in NAMES:
        await wait_for_data(kube, namespace, name, data(name))


async def test_apiserver_restart_loses_no_update(
    control_plane: ControlPlane, client: Client, namespace: str, emulator: Emulator
) -> None:
    async with run_operator(control_plane, emulator, namespaces=[namespace]) as op:
        await populate(client, namespace)
        await op.settled()
        secrets = next(i for i in op.operator.manager.cache.informers if i.resource == SECRETS)
        relists = secrets.relist_count
        async with SecretGuard(client, namespace, emulator) as guard:
            # changes on both sides just before the apiserver goes away: watches may not have delivered them
            await client.create(ONEPASSWORDITEMS, opi("late", path("late")), namespace)
            emulator.update_item(VAULT, "db", fields={"password": "v2"})
            guard.item_changed()
            # Compacted first, so that no resourceVersion seen before the restart can be served again from etcd
            # (which keeps 5 min of history) should the new apiserver pass an old-resourceVersion watch through.
            await control_plane.compact_etcd()
            await control_plane.restart_apiserver()

            # the watches resume (from a relist: every old resourceVersion is gone), so changes made now arrive
            # Room for a slow apiserver start plus the informer's backoff after the failures meanwhile (up to 30 s,
            # opsync.informer.Backoff).
            await eventually(lambda: secrets.relist_count > relists, timeout=120, message="no relist after 410")
            await client.create(ONEPASSWORDITEMS, opi("after", path("after")), namespace)
            guard.tampered("api")
            await client.patch(SECRETS, "api", {"data": {"password": "aGFuZC1lZGl0"}}, namespace)  # drift repair
            await guard.converged()


async def test_compaction_410_relists_and_recreates_a_secret_deleted_in_the_gap(
    control_plane: ControlPlane, client: Client, namespace: str, emulator: Emulator, tmp_path: Path
) -> None:
    """opsync is frozen (SIGSTOP) while the apiserver restarts, a managed Secret is deleted and etcd is
    compacted: no watch event of that deletion exists any more, so only the relist after 410 can find it."""
    opsync = await OpsyncProcess.run(
        control_plane.kubeconfig_path, emulator, namespace, tmp_path / "opsync.log"
    ).start()
    try:
        await populate(client, namespace)
        async with SecretGuard(client, namespace, emulator) as guard:
            await eventually(lambda: _watching(opsync), timeout=30, message="opsync never started watching")
            opsync.signal(signal.SIGSTOP)
            await control_plane.restart_apiserver()
            guard.tampered("db")
            await client.delete(SECRETS, "db", namespace)
            await client.create(ONEPASSWORDITEMS, opi("late", path("late")), namespace)
            await control_plane.compact_etcd()
            opsync.signal(signal.SIGCONT)

            await guard.converged()
            relisted = [line["msg"] for line in opsync.lines() if "relisting" in line["msg"]]
            assert any(msg.startswith("Informer(secrets") for msg in relisted), relisted
    finally:
        code = await opsync.stop()
    assert code == 0, opsync.log.read_text()[-3000:]  # a clean SIGTERM shutdown after all that


def _watching(opsync: OpsyncProcess) -> bool:
    return any(line["msg"] == "starting workers" for line in opsync.lines())
