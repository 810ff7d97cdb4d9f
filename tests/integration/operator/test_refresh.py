"""Refresh: a spec edit, the ``opsync.dev/refresh`` annotation and ``opsync refresh`` fetch items now.

The poll interval is 600 s, so after the first poll nothing but a refresh can bring a change made in
1Password into the cluster within these tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator

import pytest

from controllers.constants import ITEM_NAME_ANNOTATION, ITEM_PATH_ANNOTATION, REFRESH_ANNOTATION, REFRESHED_ANNOTATION
from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync import metrics
from opsync.client import Client, InvalidError
from opsync.envtest import ControlPlane
from opsync.resources import CRONJOBS, DEPLOYMENTS, Resource
from tests.support.harness import CONNECT, BackendKind, RunningOperator, Vaults, run_operator
from tests.support.objects import events_for, opi, wait_for_data, wait_for_event, workload
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

VAULT = "k8s"
OTHER_VAULT = "elsewhere"
DB_PATH = f"vaults/{VAULT}/items/db"
OLD = {"password": "old"}
NEW = {"password": "new"}


@pytest.fixture
def vaults() -> Vaults:
    return {
        VAULT: [{"title": "db", "fields": [{"label": "password", "value": "old"}]}],
        OTHER_VAULT: [{"title": "db", "fields": [{"label": "password", "value": "old"}]}],
    }


async def annotate(kube: Client, namespace: str, name: str, value: str, resource: Resource = ONEPASSWORDITEMS) -> None:
    patch = {"metadata": {"annotations": {REFRESH_ANNOTATION: value}}}
    await kube.patch(resource, name, patch, namespace)


@contextlib.asynccontextmanager
async def slow_polling_operator(
    control_plane: ControlPlane, emulator: Emulator, namespace: str, backend: BackendKind = CONNECT
) -> AsyncIterator[RunningOperator]:
    """opsync polling every 600 s, once its poll at start-up and what it caused are done."""
    before = polls_so_far()
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace], polling_interval=600) as op:

        async def polled() -> bool:
            return polls_so_far() > before

        await eventually(polled, message="the first poll did not happen")
        await op.settled()
        yield op


def polls_so_far() -> float:
    get = metrics.REGISTRY.get_sample_value
    return sum(get("opsync_polls_total", {"result": r}) or 0.0 for r in ("ok", "failed", "skipped"))


async def test_spec_edit_fetches_the_item_again(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator
) -> None:
    await kube.create(ONEPASSWORDITEMS, opi("db", DB_PATH), namespace)
    async with slow_polling_operator(control_plane, emulator, namespace) as op:
        await wait_for_data(kube, namespace, "db", OLD)
        emulator.update_item(VAULT, "db", fields={"password": "new"})
        # A label edit is no spec edit: the held item is reused.
        labelled = await kube.patch(ONEPASSWORDITEMS, "db", {"metadata": {"labels": {"a": "b"}}}, namespace)
        await op.caught_up([labelled])
        await wait_for_data(kube, namespace, "db", OLD, timeout=1)
        await kube.patch(ONEPASSWORDITEMS, "db", {"spec": {"pollingInterval": 3600}}, namespace)
        await wait_for_data(kube, namespace, "db", NEW)


async def test_refresh_annotation_on_an_item_fetches_once_and_is_recorded(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator
) -> None:
    await kube.create(ONEPASSWORDITEMS, opi("db", DB_PATH), namespace)
    async with slow_polling_operator(control_plane, emulator, namespace) as op:
        await wait_for_data(kube, namespace, "db", OLD)
        emulator.update_item(VAULT, "db", fields={"password": "new"})
        await annotate(kube, namespace, "db", "one")
        await wait_for_data(kube, namespace, "db", NEW)

        async def recorded() -> bool:
            item = await kube.get(ONEPASSWORDITEMS, "db", namespace)
            return (item.get("status") or {}).get("observedRefresh") == "one"

        await eventually(recorded, message="status.observedRefresh never became 'one'")
        event = await wait_for_event(kube, namespace, "db", "Refreshed", "Normal")
        assert "one" in event["message"]
    # A restarted opsync finds the value acted on in the status: no second refresh for it.
    async with slow_polling_operator(control_plane, emulator, namespace) as op:
        await op.caught_up([await kube.get(ONEPASSWORDITEMS, "db", namespace)])
        refreshed = [e for e in await events_for(kube, namespace, "db") if e["reason"] == "Refreshed"]
        assert [e.get("count", 1) for e in refreshed] == [1]


async def test_refresh_annotation_on_a_workload(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator
) -> None:
    await kube.create(DEPLOYMENTS, workload("Deployment", "app", item_path=DB_PATH, item_name="app-db"), namespace)
    async with slow_polling_operator(control_plane, emulator, namespace):
        await wait_for_data(kube, namespace, "app-db", OLD)
        emulator.update_item(VAULT, "db", fields={"password": "new"})
        await annotate(kube, namespace, "app", "now", DEPLOYMENTS)
        await wait_for_data(kube, namespace, "app-db", NEW)

        async def recorded() -> bool:
            app = await kube.get(DEPLOYMENTS, "app", namespace)
            return (app["metadata"].get("annotations") or {}).get(REFRESHED_ANNOTATION) == "now"

        await eventually(recorded, message=f"{REFRESHED_ANNOTATION} was never recorded on the Deployment")


async def test_opsync_refresh_of_an_annotated_cronjob(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator
) -> None:
    pod = workload("Deployment", "nightly", env_secret="nightly-db")["spec"]["template"]
    pod["spec"]["restartPolicy"] = "Never"
    annotations = {ITEM_PATH_ANNOTATION: DB_PATH, ITEM_NAME_ANNOTATION: "nightly-db"}
    nightly = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly", "annotations": annotations},
        "spec": {"schedule": "0 0 1 1 *", "suspend": True, "jobTemplate": {"spec": {"template": pod}}},
    }
    await kube.create(CRONJOBS, nightly, namespace)
    async with slow_polling_operator(control_plane, emulator, namespace):
        await wait_for_data(kube, namespace, "nightly-db", OLD)
        emulator.update_item(VAULT, "db", fields={"password": "new"})
        code, out, err = await opsync_refresh(control_plane, "--kind", "cronjob", f"{namespace}/nightly")
        assert code == 0, err
        assert f"cronjob {namespace}/nightly: {REFRESH_ANNOTATION}=" in out
        await wait_for_data(kube, namespace, "nightly-db", NEW)


async def opsync_refresh(control_plane: ControlPlane, *args: str, disable_http2: str = "") -> tuple[int, str, str]:
    env = {**os.environ, "KUBECONFIG": control_plane.kubeconfig_path, "DISABLE_HTTP2": disable_http2}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "opsync", "refresh", *args, env=env, stdout=-1, stderr=-1
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_opsync_refresh_command(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator
) -> None:
    await kube.create(ONEPASSWORDITEMS, opi("db", DB_PATH, metadata={"labels": {"tier": "db"}}), namespace)
    await kube.create(ONEPASSWORDITEMS, opi("other", DB_PATH), namespace)
    async with slow_polling_operator(control_plane, emulator, namespace) as op:
        await wait_for_data(kube, namespace, "db", OLD)
        await wait_for_data(kube, namespace, "other", OLD)
        emulator.update_item(VAULT, "db", fields={"password": "new"})
        code, out, err = await opsync_refresh(control_plane, "--all-namespaces", "--selector", "tier=db")
        assert code == 0, err
        assert f"onepassworditem {namespace}/db: {REFRESH_ANNOTATION}=" in out
        await wait_for_data(kube, namespace, "db", NEW)
        await op.settled()
        await wait_for_data(kube, namespace, "other", OLD, timeout=1)  # not selected: not refreshed
        code, out, err = await opsync_refresh(control_plane, f"{namespace}/other", disable_http2="true")
        assert code == 0, err  # over HTTP/1.1, as opsync run with DISABLE_HTTP2=true
        await wait_for_data(kube, namespace, "other", NEW)
    code, _, err = await opsync_refresh(control_plane, "--selector", "tier=db")
    assert code == 2
    assert "--namespace" in err
    code, _, err = await opsync_refresh(control_plane, f"{namespace}/db", disable_http2="maybe")
    assert (code, err) == (2, "opsync refresh: DISABLE_HTTP2: must be true or false, got 'maybe'\n")
    code, _, err = await opsync_refresh(control_plane, f"{namespace}/missing")
    assert code == 1
    assert "not found" in err


async def test_item_polling_interval(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    """An item with ``pollingInterval: 10`` follows its item within about 10 s while POLLING_INTERVAL is 600;
    the CRD refuses intervals under 10 s. Through Connect and the SDK: the vault not due is kept
    (``Backend.poll(keep=...)``), not forgotten."""
    with pytest.raises(InvalidError) as refused:
        await kube.create(
            ONEPASSWORDITEMS, {**opi("fast", DB_PATH), "spec": {"itemPath": DB_PATH, "pollingInterval": 5}}, namespace
        )
    assert "pollingInterval" in str(refused.value)
    await kube.create(
        ONEPASSWORDITEMS, {**opi("fast", DB_PATH), "spec": {"itemPath": DB_PATH, "pollingInterval": 10}}, namespace
    )
    await kube.create(ONEPASSWORDITEMS, opi("slow", f"vaults/{OTHER_VAULT}/items/db"), namespace)
    async with slow_polling_operator(control_plane, emulator, namespace, backend) as op:
        await wait_for_data(kube, namespace, "fast", OLD)
        await wait_for_data(kube, namespace, "slow", OLD)
        await op.wait_for_polls(1)  # the vaults of both, known now, have been read once
        emulator.update_item(VAULT, "db", fields={"password": "new"})
        emulator.update_item(OTHER_VAULT, "db", fields={"password": "new"})
        await wait_for_data(kube, namespace, "fast", NEW, timeout=30)
        await wait_for_data(kube, namespace, "slow", OLD, timeout=1)  # its vault waits for POLLING_INTERVAL
