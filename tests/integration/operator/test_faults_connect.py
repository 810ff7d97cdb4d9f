"""Connect faults (docs/reliability.md): down, slow, 5xx and 429 storms. Each test ends with the shared invariant
(``invariants.SecretGuard``): no managed Secret deleted, emptied or given wrong data, no other Secret touched,
and everything converged once the fault ends.

What a Connect outage already costs is covered by ``test_poller.py`` (a 503 outage, a long Retry-After);
these add the refused port, 5xx/429 storms with backoff, a slow Connect and recovery within one poll.
"""

from __future__ import annotations

import asyncio
import math
import re

import pytest

from controllers.items import UNCHECKED_MESSAGE
from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client
from opsync.envtest import ControlPlane
from opsync.metrics import REGISTRY
from opsync.reconcile import Request
from opsync.resources import DEPLOYMENTS, SECRETS
from tests.support.harness import CONNECT, BackendKind, RunningOperator, Vaults, eventually, run_operator
from tests.support.invariants import SecretGuard
from tests.support.objects import decoded, opi, wait_for_data, wait_for_event, wait_for_ready, workload

pytestmark = pytest.mark.integration

VAULT = "k8s"
NAMES = ("db", "api", "cache", "mail")
GET_ITEM = "GET /v1/vaults/{vault}/items/{item}"
ITEM_CONTROLLER = "onepassworditem"


def path(name: str) -> str:
    return f"vaults/{VAULT}/items/{name}"


@pytest.fixture
def vaults() -> Vaults:
    items = [
        {"title": name, "fields": [{"label": "user", "value": name}, {"label": "password", "value": "v1"}]}
        for name in (*NAMES, "late")
    ]
    return {VAULT: items}


def sample(metric: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


async def populate(kube: Client, namespace: str, op: RunningOperator) -> None:
    """Four items, a Deployment-made Secret and a Secret opsync must never touch, all settled."""
    unmanaged = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hands-off"}, "data": {"k": "dg=="}}
    await kube.create(SECRETS, unmanaged, namespace)
    for name in NAMES:
        await kube.create(ONEPASSWORDITEMS, opi(name, path(name)), namespace)
    await kube.create(DEPLOYMENTS, workload("Deployment", "web", item_path=path("db"), item_name="web-db"), namespace)
    expected = {name: {"user": name, "password": "v1"} for name in NAMES} | {"web-db": {"user": "db", "password": "v1"}}
    await op.caught_up([await wait_for_data(kube, namespace, name, data) for name, data in expected.items()])


def backoff_allows(failures: int, elapsed: float) -> bool:
    """Whether ``failures`` of one key within ``elapsed`` seconds fit opsync's per-key backoff (1 s, doubling):
    the n-th failure comes at least 2**(n-1) - 1 seconds after the first. A spinning queue breaks this."""
    return failures <= 1 + math.log2(1 + elapsed)


async def recovered_within_a_poll(op: RunningOperator, guard: SecretGuard, emulator: Emulator) -> None:
    """End the fault and check that everything is back by the end of the first poll that started after it
    (the poll in flight at that moment may still have failed, hence two)."""
    await emulator.clear_faults()
    cleared_at = await op.polls()
    await guard.converged()
    assert await op.polls() <= cleared_at + 2, "recovery took more than one poll after the fault ended"


@pytest.mark.parametrize(
    ("fault", "reason"),
    [({"outage": "refuse"}, "ConnectUnavailable"), ({"status": 500}, "ConnectUnavailable")],
    ids=["refused", "5xx-storm"],
)
async def test_connect_down_keeps_the_last_good_data_and_backs_off(
    control_plane: ControlPlane,
    kube: Client,
    namespace: str,
    emulator: Emulator,
    fault: dict[str, object],
    reason: str,
    backend: BackendKind,
) -> None:
    loop = asyncio.get_running_loop()
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]) as op:
        await populate(kube, namespace, op)
        async with SecretGuard(kube, namespace, emulator) as guard:
            failed_polls = sample("opsync_polls_total", result="failed")
            retries = sample("workqueue_retries_total", name=ITEM_CONTROLLER, controller=ITEM_CONTROLLER)
            await emulator.set_faults(**fault)
            emulator.update_item(VAULT, "db", fields={"password": "v2"})
            guard.item_changed()
            started = loop.time()
            await kube.create(ONEPASSWORDITEMS, opi("late", path("late")), namespace)

            # conditions and Events say why; items already in sync stay Ready, and say since when they could
            # not be checked (issue 16: they used to say "in sync" throughout)
            condition = await wait_for_ready(kube, namespace, "late", "False", reason)
            assert condition["message"].startswith("failed to retrieve item: ")
            await wait_for_event(kube, namespace, "late", "ReconcileError")
            for name in NAMES:
                unchecked = await wait_for_ready(kube, namespace, name, "True", "ConnectUnavailable")
                assert re.match(rf"{UNCHECKED_MESSAGE} since \d{{4}}-\d\d-\d\dT", unchecked["message"])

            # the failing key backs off: visible in workqueue_retries_total, and never faster than the backoff
            queue = op.operator.item_controller.queue
            late = Request(namespace, "late")
            await eventually(lambda: queue.num_requeues(late) >= 3, timeout=60, message="no retries with backoff")
            assert backoff_allows(queue.num_requeues(late), loop.time() - started), queue.num_requeues(late)
            assert sample("workqueue_retries_total", name=ITEM_CONTROLLER, controller=ITEM_CONTROLLER) - retries >= 3
            assert sample("opsync_polls_total", result="failed") > failed_polls

            # a Secret deleted by hand meanwhile comes back from the last good item, without Connect
            guard.tampered("api")
            await kube.delete(SECRETS, "api", namespace)
            await wait_for_data(kube, namespace, "api", {"user": "api", "password": "v1"})
            assert decoded(await kube.get(SECRETS, "db", namespace)) == {"user": "db", "password": "v1"}
            guard.assert_safe()

            await recovered_within_a_poll(op, guard, emulator)
            for name in NAMES:
                await wait_for_ready(kube, namespace, name, "True", "Synced")


# The SDK's rate limit says no Retry-After: opsync then waits the Go operator's 15 minutes, so no recovery
# within a poll is due (test_poller.py covers the SDK's rate limits). A per-item slow path is Connect's only.
@pytest.mark.parametrize("backend", [CONNECT], ids=str)
async def test_a_429_storm_pauses_connect_and_recovers(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    loop = asyncio.get_running_loop()
    retry_after = 2.0
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]) as op:
        await populate(kube, namespace, op)
        async with SecretGuard(kube, namespace, emulator) as guard:
            skipped = sample("opsync_polls_total", result="skipped")
            await emulator.set_faults(status=429, retry_after=retry_after)
            emulator.request_counts.clear()
            started = loop.time()
            emulator.update_item(VAULT, "db", fields={"password": "v2"})
            guard.item_changed()
            await kube.create(ONEPASSWORDITEMS, opi("late", path("late")), namespace)
            condition = await wait_for_ready(kube, namespace, "late", "False", "RateLimited")
            assert condition["message"].startswith("1Password rate limit hit. Requeuing after ")
            await wait_for_event(kube, namespace, "late", "RateLimited")
            await eventually(
                lambda: sample("opsync_polls_total", result="skipped") >= skipped + 2,
                timeout=30,
                message="polls were not skipped while rate limited",
            )
            # Nobody calls Connect while its Retry-After lasts: each window lets through at most the few
            # requests already on their way (a poll, and one fetch per worker of the two item producers).
            windows = 1 + (loop.time() - started) / retry_after
            assert sum(emulator.request_counts.values()) <= 6 * windows, emulator.request_counts
            assert decoded(await kube.get(SECRETS, "db", namespace)) == {"user": "db", "password": "v1"}
            guard.assert_safe()

            await recovered_within_a_poll(op, guard, emulator)


@pytest.mark.parametrize("backend", [CONNECT], ids=str)
async def test_slow_connect_delays_but_never_stalls_other_items(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]) as op:
        await populate(kube, namespace, op)
        async with SecretGuard(kube, namespace, emulator) as guard:
            # every call takes seconds: polls and fetches are slow, nothing times out or breaks
            await emulator.set_faults(latency=2)
            emulator.update_item(VAULT, "api", fields={"password": "v2"})
            guard.item_changed()
            await guard.converged()

            # one item is very slow (6 s per call): the others change meanwhile and are not held up behind it
            db_id = emulator.get_item(VAULT, "db").id
            await emulator.set_faults(latency=6, match=f"/items/{db_id}$")
            fetches = emulator.request_counts[GET_ITEM]
            emulator.update_item(VAULT, "db", fields={"password": "v2"})
            guard.item_changed()
            await eventually(lambda: emulator.request_counts[GET_ITEM] > fetches, message="db was not fetched")
            for name in ("api", "cache", "mail"):
                emulator.update_item(VAULT, name, fields={"password": "v3"})
            guard.item_changed()
            for name in ("api", "cache", "mail"):
                await wait_for_data(kube, namespace, name, {"user": name, "password": "v3"})
            assert decoded(await kube.get(SECRETS, "db", namespace)) == {"user": "db", "password": "v1"}, (
                "db's slow fetch had already finished: the test proves nothing"
            )
            await guard.converged()
            await emulator.clear_faults()
