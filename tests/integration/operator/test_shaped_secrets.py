"""Shaped Secrets against the real control plane and the Connect emulator: a rotation of any source item
reaches the Secret within one poll and rolls its workloads exactly once, and bad shaping specs give a
condition and an Event, leave the Secret as it was, and never show a value."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from controllers.constants import AUTO_RESTART_ANNOTATION, EXTRA_ITEMS_ANNOTATION, ITEM_VERSION_ANNOTATION
from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client, InvalidError
from opsync.envtest import ControlPlane
from opsync.resources import DEPLOYMENTS, SECRETS
from tests.integration.operator.test_auto_restart import assert_rolled, first_rollouts
from tests.support.harness import BackendKind, Vaults, eventually, run_operator
from tests.support.objects import decoded, events_for, opi, wait_for_data, wait_for_event, wait_for_ready, workload

pytestmark = pytest.mark.integration

VAULT = "apps"
ITEMS: list[dict[str, Any]] = [
    {"title": "db", "fields": [{"label": "username", "value": "u-41"}, {"label": "password", "value": "pw-one"}]},
    {"title": "cache", "fields": [{"label": "token", "value": "tok-one"}]},
    {"title": "mail", "fields": [{"label": "password", "value": "mail-pw"}]},
]
SHAPED_SPEC: dict[str, Any] = {
    "itemPath": f"vaults/{VAULT}/items/db",
    "extraItems": [{"itemPath": f"vaults/{VAULT}/items/cache", "prefix": "cache-"}],
    "template": {"data": {"DSN": "{{ fields.username }}:{{ fields.password }}@{{ items[1].fields.token }}"}},
}
SHAPED = {"username": "u-41", "password": "pw-one", "cache-token": "tok-one", "DSN": "u-41:pw-one@tok-one"}


@pytest.fixture
def vaults() -> Vaults:
    return {VAULT: ITEMS}


def shaped_item(name: str, **spec: Any) -> dict[str, Any]:
    item = opi(name, SHAPED_SPEC["itemPath"], metadata={"annotations": {AUTO_RESTART_ANNOTATION: "true"}})
    item["spec"] = {**SHAPED_SPEC, **spec}
    return item


@pytest.mark.parametrize("rotated", ["db", "cache"])
async def test_rotation_of_any_source_updates_within_one_poll_and_rolls_once(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind, rotated: str
) -> None:
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]) as op:
        await kube.create(ONEPASSWORDITEMS, shaped_item("app"), namespace)
        await kube.create(DEPLOYMENTS, workload("Deployment", "web", env_from_secret="app"), namespace)
        before = await wait_for_data(kube, namespace, "app", SHAPED)
        await op.caught_up([before, await kube.get(DEPLOYMENTS, "web", namespace)])

        field, value = ("password", "pw-two") if rotated == "db" else ("token", "tok-two")
        await first_rollouts(kube, namespace)
        emulator.update_item(VAULT, rotated, fields={field: value})
        changed_at = await op.polls()
        new = {**SHAPED, ("cache-token" if rotated == "cache" else field): value}
        new["DSN"] = f"u-41:{new['password']}@{new['cache-token']}"
        after = await wait_for_data(kube, namespace, "app", new)
        assert await op.polls() <= changed_at + 2, "the change took more than one poll to reach the Secret"
        await op.caught_up([after])
        await op.wait_for_polls(2)  # more polls change nothing: still one rollout
        await op.settled()
        await assert_rolled(kube, namespace, {"Deployment/web": True})

        async def update_event() -> bool:  # an update from 1Password, not a repair of a hand edit
            events = await events_for(kube, namespace, "app")
            return any(e["reason"] == "Synced" and '"app" updated' in e["message"] for e in events)

        await eventually(update_event, message="no Synced Event saying the Secret was updated")

    annotations = after["metadata"]["annotations"]
    db_version, cache_version = (2, 1) if rotated == "db" else (1, 2)
    assert annotations[ITEM_VERSION_ANNOTATION] == str(db_version)  # still the main item's
    [(cache_path, recorded)] = json.loads(annotations[EXTRA_ITEMS_ANNOTATION]).items()
    assert cache_path.startswith("vaults/") and recorded == cache_version


BAD_SPECS: dict[str, tuple[dict[str, Any], str, list[str]]] = {
    "unknown field label": ({"fieldMapping": {"no such field": "X"}}, "FieldNotFound", ["'no such field'"]),
    "template syntax error": (
        {"template": {"data": {"DSN": "ok\n{{ fields.username }"}}},
        "TemplateError",
        ["'DSN'", "line 2"],
    ),
    "template output over 1 MiB": (
        {"template": {"data": {"BIG": "{% for i in range(2000) %}{{ fields.password * 100 }}{% endfor %}"}}},
        "TemplateError",
        ["'BIG'", "1048576"],
    ),
    "two items give the same key": (
        {"extraItems": [{"itemPath": f"vaults/{VAULT}/items/mail"}]},
        "KeyConflict",
        ["'password'", "spec.extraItems[0]"],
    ),
    "template and fieldMapping give the same key": (
        {"fieldMapping": {"password": "DSN"}},
        "KeyConflict",
        ["'DSN'"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
async def test_bad_spec_reports_and_loses_nothing(
    control_plane: ControlPlane,
    kube: Client,
    namespace: str,
    emulator: Emulator,
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    change, reason, named = BAD_SPECS[case]
    async with run_operator(control_plane, emulator, namespaces=[namespace]) as op:
        await kube.create(ONEPASSWORDITEMS, shaped_item("app"), namespace)
        await kube.create(ONEPASSWORDITEMS, opi("other", f"vaults/{VAULT}/items/mail"), namespace)
        good = await wait_for_data(kube, namespace, "app", SHAPED)

        await kube.patch(ONEPASSWORDITEMS, "app", {"spec": change}, namespace)
        condition = await wait_for_ready(kube, namespace, "app", "False", reason)
        event = await wait_for_event(kube, namespace, "app", "ReconcileError")
        # the rest keeps working: a rotation still reaches the other item's Secret
        emulator.update_item(VAULT, "mail", fields={"password": "mail-pw-2"})
        await wait_for_data(kube, namespace, "other", {"password": "mail-pw-2"})
        await op.settled()
        kept = await kube.get(SECRETS, "app", namespace)
        events = await events_for(kube, namespace, "app")

    for text in named:
        assert text in condition["message"]
        assert text in event["message"]
    assert decoded(kept) == SHAPED
    assert kept["metadata"]["resourceVersion"] == good["metadata"]["resourceVersion"]
    visible = condition["message"] + json.dumps(events) + caplog.text
    for value in ("u-41", "pw-one", "tok-one", "mail-pw"):
        assert value not in visible


@pytest.mark.parametrize(
    "spec",
    [
        {"fieldMapping": {"password": "not a key!"}},
        {"sections": "suffix"},
        {"extraItems": [{"prefix": "x-"}]},
        {"extraItems": [{"itemPath": "not-a-path"}]},
        {"template": {"data": {"bad key!": "x"}}},
        {"onlyMapped": "yes"},
    ],
    ids=["mapped key", "sections", "extra without path", "extra path", "template key", "onlyMapped"],
)
async def test_crd_schema_refuses_bad_shaping(kube: Client, namespace: str, spec: dict[str, Any]) -> None:
    item = opi("bad", SHAPED_SPEC["itemPath"])
    item["spec"].update(spec)
    with pytest.raises(InvalidError):
        await kube.create(ONEPASSWORDITEMS, item, namespace)
