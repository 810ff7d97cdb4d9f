"""Service accounts end to end: a token that stops working, and ``opsync check``/``render`` without Connect.

The scenario tests run with both backends already (the ``backend`` fixture); these are what only tokens can
do: expire or be revoked while opsync runs. Connect tokens can be revoked too, so both backends are tried.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controllers import check, render
from controllers.config import Settings
from controllers.constants import AUTO_RESTART_ANNOTATION, LAST_RESTARTED_ANNOTATION
from controllers.items import UNCHECKED_MESSAGE
from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from onepassword_access.emulator.store import TokenEnd
from opsync.client import Client
from opsync.envtest import ControlPlane
from opsync.resources import DEPLOYMENTS, SECRETS
from tests.support.harness import CONNECT, SDK, TOKEN, BackendKind, emulator_data, eventually, run_operator
from tests.support.objects import opi, wait_for_data, wait_for_event, wait_for_ready, workload
from tests.support.processes import OpsyncProcess

pytestmark = pytest.mark.integration

VAULT = "k8s"


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    items = [
        {"title": "db", "fields": [{"label": "password", "value": "old"}]},
        {"title": "api", "fields": [{"label": "token", "value": "t"}]},
    ]
    # admin: the SDK of an ``opsync run`` process reaches the emulator's core through /__admin/sdk-core
    async with Emulator(emulator_data({VAULT: items}), admin=True) as emu:
        yield emu


@pytest.mark.parametrize("how", ["revoked", "expired"])
async def test_a_token_that_stops_working_is_reported_and_loses_no_secret(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind, how: TokenEnd
) -> None:
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]) as op:
        await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{VAULT}/items/db"), namespace)
        before = await wait_for_data(kube, namespace, "db", {"password": "old"})
        await op.caught_up([before])

        emulator.end_token(how=how)
        emulator.update_item(VAULT, "db", fields={"password": "new"})
        await kube.create(ONEPASSWORDITEMS, opi("api", f"vaults/{VAULT}/items/api"), namespace)
        condition = await wait_for_ready(kube, namespace, "api", "False", "Unauthorized")
        expected = {
            (CONNECT.name, "revoked"): "status 401: Invalid bearer token",
            (CONNECT.name, "expired"): "status 401: Invalid bearer token",
            (SDK.name, "revoked"): "you are not authenticated",
            (SDK.name, "expired"): "bad service account token, please rotate it",
        }[(backend.name, how)]
        assert expected in condition["message"]
        event = await wait_for_event(kube, namespace, "api", "ReconcileError")
        assert expected in event["message"]
        await op.wait_for_polls(2)  # polls fail too, and change nothing

        # the Secret made before keeps its data; db stays Ready, saying since when it could not be checked
        assert (await kube.get(SECRETS, "db", namespace))["data"] == before["data"]
        unchecked = await wait_for_ready(kube, namespace, "db", "True", "ConnectUnavailable")
        assert unchecked["message"].startswith(UNCHECKED_MESSAGE)
        for text in (condition["message"], event["message"], unchecked["message"]):
            assert TOKEN not in text and emulator.service_account_token() not in text


async def test_opsync_run_with_a_service_account_token_syncs_polls_and_rolls(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, tmp_path: Path
) -> None:
    """``OP_SERVICE_ACCOUNT_TOKEN=... opsync run`` as a process (its SDK answered by the emulator's core)."""
    process = OpsyncProcess.run(
        control_plane.kubeconfig_path, emulator, namespace, tmp_path / "opsync.log", service_account=True
    )
    await process.start()
    try:
        await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{VAULT}/items/db"), namespace)
        auto = {"annotations": {AUTO_RESTART_ANNOTATION: "true"}}
        app = workload("Deployment", "app", env_secret="db")
        app["metadata"].update(auto)
        await kube.create(DEPLOYMENTS, app, namespace)
        await wait_for_data(kube, namespace, "db", {"password": "old"}, timeout=60)
        emulator.update_item(VAULT, "db", fields={"password": "new"})
        await wait_for_data(kube, namespace, "db", {"password": "new"})

        async def rolled() -> bool:
            template = (await kube.get(DEPLOYMENTS, "app", namespace))["spec"]["template"]["metadata"]
            return LAST_RESTARTED_ANNOTATION in (template.get("annotations") or {})

        await eventually(rolled, message="the Deployment was not rolled for the changed Secret")
        assert await process.sample("opsync_sdk_calls_total", operation="VaultsList", outcome="ok") >= 2
        assert await process.sample("opsync_connect_requests_total", endpoint="/v1/vaults", code="200") == 0
    finally:
        assert await process.stop() == 0
    assert not [line for line in process.lines() if line.get("level") == "error"]
    assert emulator.service_account_token() not in process.log.read_text()


def sdk_settings(emulator: Emulator, **extra: object) -> Settings:
    return Settings.model_validate({"service_account_token": emulator.service_account_token(), **extra})


async def test_check_signs_in_and_reads_the_vaults_with_a_service_account(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator
) -> None:
    await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{VAULT}/items/db"), namespace)
    await kube.create(ONEPASSWORDITEMS, opi("elsewhere", "vaults/nosuch/items/x"), namespace)
    settings = sdk_settings(emulator, kubeconfig=control_plane.kubeconfig_path, watch_namespaces=namespace)
    with emulator.sdk_core.installed():
        rows = {row.check: row for row in await check.run_checks(settings)}
        assert rows["service account: sign-in"].status == "ok"
        assert rows["service account: token"].status == "ok"
        assert rows[f"service account: vault {VAULT}"].status == "ok"
        assert rows["service account: vault nosuch"].status == "FAIL"
        assert all(not name.startswith("connect:") for name in rows)

        emulator.end_token(how="revoked")
        rows = {row.check: row for row in await check.run_checks(settings)}
    assert rows["service account: sign-in"].status == "FAIL"
    assert "you are not authenticated" in rows["service account: sign-in"].detail


async def test_render_works_with_a_service_account(emulator: Emulator) -> None:
    args = argparse.Namespace(
        item_path=f"vaults/{VAULT}/items/db",
        filename=None,
        name=None,
        namespace="apps",
        type="",
        show_values=True,
        allow_empty_values=False,
        output="yaml",
    )
    with emulator.sdk_core.installed():
        [(secret, warnings)] = await render.render_all(args, sdk_settings(emulator))
    assert secret["metadata"]["name"] == "db"
    assert secret["data"] == {"password": "b2xk"}  # "old"
    assert warnings == ()
