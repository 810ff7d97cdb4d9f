"""What goes into a Secret, as seen through the API: the Go operator's builder tests (9.2 #16-27,
#60) replayed end to end, and no value ever leaking into logs, Events or conditions."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from controllers.constants import AUTO_RESTART_ANNOTATION, ITEM_NAME_ANNOTATION
from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client
from opsync.envtest import ControlPlane
from opsync.resources import DEPLOYMENTS, SECRETS
from tests.support.harness import CONNECT, BackendKind, Vaults, run_operator
from tests.support.objects import events_for, opi, wait_for_data, wait_for_ready, workload

pytestmark = pytest.mark.integration

VAULT = "k8s"
SECRET_VALUES = ("u-6f1c", "p-93ab", "F-77de", "tls-c3rt", "tls-k3y", "w%-1d0e")
ITEMS: list[dict[str, Any]] = [
    {
        "title": "rules",
        "urls": [
            {"href": "https://a.example", "label": "website", "primary": True},
            {"href": "https://b.example", "label": "website"},
            {"href": "https://support.example", "label": "support"},
            {"href": "https://nolabel.example"},
        ],
        "fields": [
            {"label": "username", "value": "u-6f1c"},
            {"label": "password", "value": "p-93ab"},
            {"label": "empty", "value": ""},
            {"label": "###", "value": "hidden"},
            {"label": "   ", "value": "blank"},
            {"label": "label w%th invalid ch!rs-", "value": "w%-1d0e"},
        ],
    },
    {
        "title": "field-wins",
        "urls": [{"href": "https://url.example", "label": "website", "primary": True}],
        "fields": [{"label": "website", "value": "F-77de"}, {"label": "k", "value": "v"}],
    },
    {"title": "tls", "fields": [{"label": "tls.crt", "value": "tls-c3rt"}, {"label": "tls.key", "value": "tls-k3y"}]},
    {"title": "incomplete-tls", "fields": [{"label": "tls.crt", "value": "tls-c3rt"}]},
]
RULES = {
    "website": "https://a.example",
    "support": "https://support.example",
    "username": "u-6f1c",
    "password": "p-93ab",
    "label-w-th-invalid-ch-rs-": "w%-1d0e",
}


@pytest.fixture
def vaults() -> Vaults:
    return {VAULT: ITEMS}


async def test_go_builder_rules(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    """#16 auto-restart annotation copied; #19/#21 fields become keys, empty ones dropped; #22-#24 URL and
    field precedence; #25 unusable labels skipped; #26 names and keys sanitised; #27 the tls type."""
    item_name = "inV@l1d k8s secret%name"
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]):
        await kube.create(
            ONEPASSWORDITEMS,
            opi("rules", f"vaults/{VAULT}/items/rules", metadata={"annotations": {AUTO_RESTART_ANNOTATION: "false"}}),
            namespace,
        )
        await kube.create(ONEPASSWORDITEMS, opi("field-wins", f"vaults/{VAULT}/items/field-wins"), namespace)
        await kube.create(
            ONEPASSWORDITEMS, opi("tls", f"vaults/{VAULT}/items/tls", type="kubernetes.io/tls"), namespace
        )
        await kube.create(
            ONEPASSWORDITEMS,
            opi("broken-tls", f"vaults/{VAULT}/items/incomplete-tls", type="kubernetes.io/tls"),
            namespace,
        )
        manifest = workload("Deployment", "web", item_path=f"vaults/{VAULT}/items/rules", item_name=item_name)
        await kube.create(DEPLOYMENTS, manifest, namespace)

        rules = await wait_for_data(kube, namespace, "rules", RULES)
        await wait_for_data(kube, namespace, "field-wins", {"website": "F-77de", "k": "v"})
        tls = await wait_for_data(kube, namespace, "tls", {"tls.crt": "tls-c3rt", "tls.key": "tls-k3y"})
        named = await wait_for_data(kube, namespace, "inv-l1d-k8s-secret-name", RULES)
        broken = await wait_for_ready(kube, namespace, "broken-tls", "False", "InvalidSecret")
    assert rules["metadata"]["annotations"][AUTO_RESTART_ANNOTATION] == "false"
    assert tls["type"] == "kubernetes.io/tls"
    assert named["metadata"]["annotations"][ITEM_NAME_ANNOTATION] == item_name
    assert "tls.key" in broken["message"]


async def test_empty_values_with_allow_empty_values(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    """#20 and #60: with --allow-empty-values empty fields are kept as empty keys, also after a change.

    The SDK leaves fields without a value out of its items, so there the flag keeps nothing (as with the Go
    operator's SDK mode; docs/compatibility.md)."""
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace], allow_empty_values=True):
        await kube.create(ONEPASSWORDITEMS, opi("rules", f"vaults/{VAULT}/items/rules"), namespace)
        kept = {"empty": ""} if backend is CONNECT else {}
        await wait_for_data(kube, namespace, "rules", {**RULES, **kept})
        emulator.update_item(VAULT, "rules", fields={"username": "", "empty": "now-set"})
        after = {**RULES, "username": "", "empty": "now-set"}
        if backend is not CONNECT:
            del after["username"]
        await wait_for_data(kube, namespace, "rules", after)


async def test_no_value_reaches_logs_events_or_conditions(
    control_plane: ControlPlane,
    kube: Client,
    namespace: str,
    emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
    backend: BackendKind,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]) as op:
        for name in ("rules", "field-wins", "tls"):
            await kube.create(ONEPASSWORDITEMS, opi(name, f"vaults/{VAULT}/items/{name}"), namespace)
        await kube.create(
            ONEPASSWORDITEMS,
            opi("broken-tls", f"vaults/{VAULT}/items/incomplete-tls", type="kubernetes.io/tls"),
            namespace,
        )
        # a foreign Secret in the way, and a change
        await kube.create(SECRETS, {"metadata": {"name": "in-the-way"}, "stringData": {"x": "y"}}, namespace)
        await kube.create(ONEPASSWORDITEMS, opi("in-the-way", f"vaults/{VAULT}/items/rules"), namespace)
        await wait_for_ready(kube, namespace, "in-the-way", "False", "SecretConflict")
        await wait_for_ready(kube, namespace, "broken-tls", "False", "InvalidSecret")
        emulator.update_item(VAULT, "rules", fields={"password": "p-93ab-2"})
        await wait_for_data(kube, namespace, "rules", {**RULES, "password": "p-93ab-2"})
        await op.settled()
        items = (await kube.list(ONEPASSWORDITEMS, namespace))["items"]
        events = [e for name in ("rules", "field-wins", "tls", "broken-tls", "in-the-way")
                  for e in await events_for(kube, namespace, name)]  # fmt: skip
    visible = json.dumps([item.get("status") for item in items]) + json.dumps(events) + caplog.text
    assert events
    for value in (*SECRET_VALUES, "p-93ab-2"):
        assert value not in visible
