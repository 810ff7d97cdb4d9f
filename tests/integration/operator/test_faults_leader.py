"""Two replicas with leader election, the leader killed during a sync (docs/reliability.md): the other takes over after
the Lease expires and finishes the sync, and the two never write at the same time. Ends with the shared
invariant (``invariants.SecretGuard``).

``test_manager.py`` covers the election itself in-process; here the replicas are ``opsync run`` processes
and the leader dies with SIGKILL (no Lease release), so the standby must wait out the lease duration.

"Never both write" is checked with what can be observed from outside:
- the standby makes no write while the other leads: none of its POST/PUT/PATCH/DELETE requests
  (``rest_client_requests_total``) is accepted up to the kill (a losing create of the Lease gets 409);
- the Lease changes holder exactly once, and the new holder acquired it no earlier than one lease duration
  after the dead leader's last renewal (the dead leader cannot write after its death, which precedes that);
- the new leader logs its acquisition after the kill, and its writes begin only then.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controllers.constants import DEFAULT_LEADER_ELECTION_ID
from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client
from opsync.envtest import ControlPlane
from opsync.resources import LEASES, SECRETS, KubeObject
from tests.support.harness import Vaults, eventually
from tests.support.invariants import SecretGuard
from tests.support.objects import opi
from tests.support.processes import OpsyncProcess

pytestmark = pytest.mark.integration

VAULT = "k8s"
ITEMS = 40
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def path(name: str) -> str:
    return f"vaults/{VAULT}/items/{name}"


@pytest.fixture
def vaults() -> Vaults:
    items = [{"title": f"item-{i}", "fields": [{"label": "password", "value": "v1"}]} for i in range(ITEMS)]
    return {VAULT: items}


def parse_time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


async def writes(replica: OpsyncProcess) -> dict[str, float]:
    """Write requests the replica sent to the API server (rest_client_requests_total), by method and code."""
    samples = await replica.metrics()
    return {
        f"{labels['method']} {labels['code']}": value
        for (name, pairs), value in samples.items()
        if name == "rest_client_requests_total" and (labels := dict(pairs))["method"] in WRITE_METHODS and value
    }


def accepted(found: dict[str, float]) -> float:
    """How many of ``found`` the API server accepted (2xx): a candidate's losing create of the Lease (409)
    changed nothing."""
    return sum(value for key, value in found.items() if key.split()[1].startswith("2"))


async def leader(replicas: list[OpsyncProcess]) -> OpsyncProcess | None:
    for replica in replicas:
        if await replica.sample("leader_election_master_status", name=DEFAULT_LEADER_ELECTION_ID) == 1:
            return replica
    return None


@asynccontextmanager
async def replicas_in_sync(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, logs: Path
) -> AsyncIterator[tuple[OpsyncProcess, OpsyncProcess]]:
    """Two ``opsync run --leader-elect`` replicas with every item synced: (the leader, the standby). Both are
    stopped when the block ends."""
    args = ("--leader-elect", f"--leader-election-namespace={namespace}")
    replicas = [
        await OpsyncProcess.run(control_plane.kubeconfig_path, emulator, namespace, logs / f"{n}.log", *args).start()
        for n in ("one", "two")
    ]
    try:
        for i in range(ITEMS):
            await kube.create(ONEPASSWORDITEMS, opi(f"item-{i}", path(f"item-{i}")), namespace)
        await SecretGuard(kube, namespace, emulator).converged(timeout=90)
        first = await leader(replicas)
        assert first is not None
        yield first, next(r for r in replicas if r is not first)
    finally:
        await asyncio.gather(*(replica.stop() for replica in replicas))


async def change_every_item_and_wait_until_midway(
    kube: Client, namespace: str, emulator: Emulator, guard: SecretGuard
) -> None:
    """Change every item to ``v2`` with Connect slowed down, so the sync takes seconds; return once a few
    Secrets have the new data."""
    await emulator.set_faults(latency=0.3, match="/items/[a-z0-9]+$")
    for i in range(ITEMS):
        emulator.update_item(VAULT, f"item-{i}", fields={"password": "v2"})
    guard.item_changed()

    async def midway() -> bool:
        found = (await kube.list(SECRETS, namespace))["items"]
        return sum(1 for s in found if (s.get("data") or {}).get("password") == "djI=") >= 5

    await eventually(midway, timeout=60, interval=0.2, message="the sync never got going")


async def test_killing_the_leader_mid_sync_hands_over_without_overlap(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, tmp_path: Path
) -> None:
    async with replicas_in_sync(control_plane, kube, namespace, emulator, tmp_path) as (first, standby):
        lease: KubeObject = await kube.get(LEASES, DEFAULT_LEADER_ELECTION_ID, namespace)
        first_holder = lease["spec"]["holderIdentity"]

        async with SecretGuard(kube, namespace, emulator) as guard:
            await change_every_item_and_wait_until_midway(kube, namespace, emulator, guard)
            standby_writes = await writes(standby)
            assert accepted(standby_writes) == 0, f"the standby wrote while the other replica led: {standby_writes}"
            await first.kill()
            killed_at = datetime.now(UTC)
            last_renewal = parse_time(
                (await kube.get(LEASES, DEFAULT_LEADER_ELECTION_ID, namespace))["spec"]["renewTime"]
            )
            await emulator.clear_faults()

            await guard.converged(timeout=90)  # the standby took over and finished the sync

        lease = await kube.get(LEASES, DEFAULT_LEADER_ELECTION_ID, namespace)
        spec = lease["spec"]
        assert spec["holderIdentity"] != first_holder
        assert spec["leaseTransitions"] == 1  # one hand-over: the first leader's acquisition, then this one
        assert (parse_time(spec["acquireTime"]) - last_renewal).total_seconds() >= spec["leaseDurationSeconds"]
        acquired = [line for line in standby.lines() if line["msg"] == "successfully acquired lease"]
        assert len(acquired) == 1
        assert datetime.fromisoformat(acquired[0]["ts"].replace("Z", "+00:00")) > killed_at
        assert await leader([standby]) is standby
        assert accepted(await writes(standby)) > 0


async def test_a_frozen_leader_that_resumes_after_a_takeover_exits_without_rolling_anything_back(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, tmp_path: Path
) -> None:
    """The leader is frozen (SIGSTOP: a paused VM, a stalled node) mid-sync for longer than the lease; the
    standby takes over and syncs newer data; then the old leader resumes with its stale caches and requests
    in flight. Its first renewal (within 2 s) reads the Lease with the successor as holder and it stops at once
    (stricter than client-go, which waits out the renew deadline); until then it may still reconcile, so what
    must hold is that it never writes older data over newer (writes carry resourceVersion preconditions) and
    that it exits (status 1) to campaign again."""
    async with (
        replicas_in_sync(control_plane, kube, namespace, emulator, tmp_path) as (frozen, successor),
        SecretGuard(kube, namespace, emulator) as guard,
    ):
        await change_every_item_and_wait_until_midway(kube, namespace, emulator, guard)
        frozen.signal(signal.SIGSTOP)
        await emulator.clear_faults()
        await guard.converged(timeout=90)  # the successor took over and finished
        for i in range(ITEMS):
            emulator.update_item(VAULT, f"item-{i}", fields={"password": "v3"})
        guard.item_changed()
        await guard.converged(timeout=60)
        assert await leader([successor]) is successor

        frozen.signal(signal.SIGCONT)
        assert await frozen.wait(60) == 1
        assert any("the lease is held by" in line["msg"] for line in frozen.lines()), (
            "it must stop on seeing the successor"
        )
        await guard.converged(timeout=30)  # nothing rolled back: the guard saw every version only rise
