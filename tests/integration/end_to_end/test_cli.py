"""``opsync check`` and ``opsync render`` against the control plane and the Connect emulator."""

from __future__ import annotations

import argparse
import asyncio
import base64
from pathlib import Path

import pytest

from controllers import check, render
from controllers.config import Settings
from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client
from opsync.envtest import ControlPlane
from opsync.resources import NAMESPACES
from tests.support.harness import TOKEN, Vaults
from tests.support.objects import opi, wait_for_data
from tests.support.processes import OpsyncProcess

pytestmark = pytest.mark.integration

VAULT = "k8s"


@pytest.fixture
def vaults() -> Vaults:
    items = [
        {
            "title": "My DB",
            "fields": [{"label": "user name", "value": "admin"}, {"label": "###", "value": "x"}],
            "files": [{"name": "ca.crt", "content": "CERT"}],
        }
    ]
    return {VAULT: items}


def settings(emulator: Emulator, kubeconfig: str, namespace: str, **extra: object) -> Settings:
    return Settings.model_validate(
        {
            "connect_host": emulator.url,
            "connect_token": TOKEN,
            "kubeconfig": kubeconfig,
            "watch_namespaces": namespace,
            **extra,
        }
    )


def statuses(rows: list[check.Row]) -> dict[str, str]:
    return {row.check: row.status for row in rows}


async def test_check_passes_with_enough_permissions(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator
) -> None:
    await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{VAULT}/items/x"), namespace)
    await kube.create(ONEPASSWORDITEMS, opi("elsewhere", "vaults/nosuch/items/x"), namespace)
    rows = await check.run_checks(settings(emulator, control_plane.kubeconfig_path, namespace))
    found = statuses(rows)
    assert found["connect: reachable"] == "ok"
    assert found["connect: token"] == "ok"
    assert found[f"connect: vault {VAULT}"] == "ok"
    assert found["connect: vault nosuch"] == "FAIL"
    assert found["kubernetes: secrets"] == "ok"
    assert found["kubernetes: onepassworditems.onepassword.com/status"] == "ok"
    assert all(status == "ok" for name, status in found.items() if name.startswith("kubernetes"))


async def test_check_lists_the_namespaces_the_selector_selects_and_their_vaults(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator
) -> None:
    selector = f"opsync-check={namespace}"
    config = settings(emulator, control_plane.kubeconfig_path, "", watch_namespace_selector=selector)
    rows = {row.check: row for row in await check.run_checks(config)}
    none = rows[f"kubernetes: namespaces selected by {selector}"]
    assert (none.status, none.detail.split(":")[0]) == ("warn", "none yet")
    assert f"connect: vault {VAULT}" not in rows  # no namespace selected: no item is looked at

    await kube.patch(NAMESPACES, namespace, {"metadata": {"labels": {"opsync-check": namespace}}})
    await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{VAULT}/items/x"), namespace)
    rows = {row.check: row for row in await check.run_checks(config)}
    assert (
        rows[f"kubernetes: namespaces selected by {selector}"].status,
        rows[f"kubernetes: namespaces selected by {selector}"].detail,
    ) == ("ok", namespace)
    assert rows[f"connect: vault {VAULT}"].status == "ok"


async def test_check_reports_missing_permissions_and_a_bad_token(
    control_plane: ControlPlane, namespace: str, emulator: Emulator
) -> None:
    kubeconfig = await asyncio.to_thread(control_plane.service_account_kubeconfig, namespace, "nobody")
    config = settings(
        emulator, kubeconfig, namespace, connect_token="wrong", leader_elect="true", leader_election_namespace=namespace
    )
    rows = await check.run_checks(config)
    found = statuses(rows)
    assert found["connect: token"] == "FAIL"
    assert found["kubernetes: list OnePasswordItems"] == "FAIL"
    assert found["kubernetes: secrets"] == "FAIL"
    assert found["kubernetes: leases.coordination.k8s.io"] == "FAIL"
    detail = next(row.detail for row in rows if row.check == "kubernetes: secrets")
    assert f"create in {namespace}" in detail
    assert "wrong" not in " ".join(row.detail for row in rows)


async def test_render_hides_values_unless_asked(emulator: Emulator) -> None:
    config = Settings.model_validate({"connect_host": emulator.url, "connect_token": TOKEN})
    args = argparse.Namespace(
        item_path=f"vaults/{VAULT}/items/My DB",
        filename=None,
        name=None,
        namespace="apps",
        type="",
        show_values=False,
        allow_empty_values=False,
    )
    [(secret, warnings)] = await render.render_all(args, config)
    assert secret["metadata"]["name"] == "my-db"
    assert secret["data"] == {"user-name": "<hidden: 5 bytes>", "ca.crt": "<hidden: 4 bytes>"}
    assert any("###" in warning for warning in warnings)
    args.show_values = True
    [(secret, _)] = await render.render_all(args, config)
    assert base64.b64decode(secret["data"]["user-name"]) == b"admin"


async def test_opsync_run_syncs_and_stops_on_sigterm(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, tmp_path: Path
) -> None:
    """The ``opsync run`` process: configuration from flags and environment, leader election, a clean exit."""
    args = (
        "--leader-elect",
        f"--leader-election-namespace={namespace}",
        "--metrics-bind-address=0",
        "--health-probe-bind-address=127.0.0.1:0",
    )
    opsync = OpsyncProcess.run(control_plane.kubeconfig_path, emulator, namespace, tmp_path / "opsync.log", *args)
    await opsync.start()
    try:
        await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{VAULT}/items/My DB"), namespace)
        await wait_for_data(kube, namespace, "db", {"user-name": "admin", "ca.crt": "CERT"}, timeout=60)
        code = await opsync.stop()
    finally:
        await opsync.kill()
    assert code == 0, opsync.output()[-2000:]
    assert any(line["msg"] == "starting opsync" for line in opsync.lines())
    assert emulator.token not in opsync.output()
