"""opsync killed with SIGKILL in the middle of a large sync, then started again (docs/reliability.md): it
converges, rolls each workload exactly once for its changed Secret, and leaves no orphaned Secret. Ends with
the shared invariant (``invariants.SecretGuard``).

``test_auto_restart.py`` covers a change made while opsync is cleanly stopped; here the process dies with
writes half done: some Secrets updated, some workloads not yet rolled for them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from controllers.constants import (
    AUTO_RESTART_ANNOTATION,
    ITEM_NAME_ANNOTATION,
    ITEM_PATH_ANNOTATION,
    RESTART_VERSIONS_ANNOTATION,
)
from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client
from opsync.envtest import ControlPlane
from opsync.resources import DEPLOYMENTS, SECRETS
from tests.support.harness import Vaults, eventually
from tests.support.invariants import SecretGuard
from tests.support.objects import opi, workload
from tests.support.processes import OpsyncProcess

pytestmark = pytest.mark.integration

VAULT = "k8s"
ITEMS = 200
USED = [f"item-{i * 9}" for i in range(20)]  # each used by one Deployment, spread over the sync order
DELETED = [f"item-{i}" for i in range(195, ITEMS)]  # items deleted while opsync is dead


def path(name: str) -> str:
    return f"vaults/{VAULT}/items/{name}"


@pytest.fixture
def vaults() -> Vaults:
    items = [{"title": f"item-{i}", "fields": [{"label": "password", "value": "v1"}]} for i in range(ITEMS)]
    return {VAULT: items}


async def create_all(kube: Client, namespace: str) -> None:
    limit = asyncio.Semaphore(16)

    async def create(resource: object, manifest: dict[str, object]) -> None:
        async with limit:
            await kube.create(resource, manifest, namespace)  # type: ignore[arg-type]

    manifests = [(ONEPASSWORDITEMS, opi(f"item-{i}", path(f"item-{i}"))) for i in range(ITEMS)]
    auto = {AUTO_RESTART_ANNOTATION: "true"}
    manifests += [
        (DEPLOYMENTS, workload("Deployment", f"d-{n}", env_secret=s, annotations=auto)) for n, s in enumerate(USED)
    ]
    manifests.append((DEPLOYMENTS, workload("Deployment", "named", item_path=path("item-1"), item_name="named")))
    await asyncio.gather(*(create(resource, manifest) for resource, manifest in manifests))


async def generations(kube: Client, namespace: str) -> dict[str, int]:
    found = (await kube.list(DEPLOYMENTS, namespace))["items"]
    return {d["metadata"]["name"]: d["metadata"]["generation"] for d in found if d["metadata"]["name"] != "named"}


async def updated(kube: Client, namespace: str) -> int:
    """How many item Secrets hold the new data (base64 of "v2")."""
    found = (await kube.list(SECRETS, namespace))["items"]
    return sum(1 for s in found if (s.get("data") or {}).get("password") == "djI=")


async def test_sigkill_mid_sync_then_restart_converges_without_duplicate_rollouts(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, tmp_path: Path
) -> None:
    kubeconfig = control_plane.kubeconfig_path
    first = await OpsyncProcess.run(kubeconfig, emulator, namespace, tmp_path / "first.log").start()
    try:
        await create_all(kube, namespace)
        await SecretGuard(kube, namespace, emulator).converged(timeout=120)

        async def recorded() -> bool:
            found = (await kube.list(DEPLOYMENTS, namespace))["items"]
            return all(
                RESTART_VERSIONS_ANNOTATION in d["metadata"].get("annotations", {})
                for d in found
                if d["metadata"]["name"] != "named"
            )

        await eventually(recorded, timeout=60, message="the restart records were not written")
        before = await generations(kube, namespace)

        async with SecretGuard(kube, namespace, emulator) as guard:
            # every item changes; a little latency per fetch spreads the sync over a few seconds
            await emulator.set_faults(latency=0.05, match="/items/[a-z0-9]+$")
            for i in range(ITEMS):
                emulator.update_item(VAULT, f"item-{i}", fields={"password": "v2"})
            guard.item_changed()

            async def midway() -> bool:
                return await updated(kube, namespace) >= 20

            await eventually(midway, timeout=60, interval=0.2, message="the sync never got going")
            await first.kill()
            done_at_kill = await updated(kube, namespace)
            assert done_at_kill < ITEMS, "the sync had finished before the kill: the test proves nothing"

            # while opsync is dead: items deleted (the garbage collector removes their Secrets) and a
            # workload's annotations removed (only opsync can delete that Secret)
            for name in DELETED:
                guard.tampered(name)
                await kube.delete(ONEPASSWORDITEMS, name, namespace)
            guard.tampered("named")
            unannotate = {"metadata": {"annotations": {ITEM_PATH_ANNOTATION: None, ITEM_NAME_ANNOTATION: None}}}
            await kube.patch(DEPLOYMENTS, "named", unannotate, namespace)
            await emulator.clear_faults()

            second = await OpsyncProcess.run(kubeconfig, emulator, namespace, tmp_path / "second.log").start()
            try:
                await guard.converged(timeout=120)  # includes: no orphaned managed Secret
                polls = await second.sample("opsync_polls_total", result="ok")
                await eventually(
                    lambda: _more(second, polls + 2), timeout=30, message="the second opsync did not keep polling"
                )
                # exactly one rollout per Deployment: its Secret's data changed once (a Deployment's
                # generation moves with its spec and its annotations: opsync's one patch rolls and records)
                after = await generations(kube, namespace)
                assert after == {name: generation + 1 for name, generation in before.items()}, (before, after)
                guard.assert_safe()
            finally:
                code = await second.stop()
            assert code == 0, second.log.read_text()[-3000:]
    finally:
        await first.kill()


async def _more(opsync: OpsyncProcess, polls: float) -> bool:
    return await opsync.sample("opsync_polls_total", result="ok") >= polls
