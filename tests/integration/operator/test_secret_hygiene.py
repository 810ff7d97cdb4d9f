"""No secret value and no Connect token ever leaves opsync except in the Secrets it writes.

Known, distinctive values are seeded into 1Password (the emulator) and used as the Connect token; opsync then
runs a broad set of scenarios with every logger at DEBUG: items and annotated workloads synced, changed and
deleted, an item denied by an access policy and every item denied once the policies are gone, malformed
items, an item whose file is too large to download, a Connect outage (items saying since when they could not
be checked) and a 429, a Secret it refuses to take over (holding a seeded value itself) and a workload's
Secret an item may not take. Afterwards every captured log record (formatted as opsync writes it, tracebacks
and ``extra`` fields included), every Event, every OnePasswordItem status, the metrics exposition and the
reprs of the secret-bearing objects opsync holds are searched for the values, plain and base64-encoded; so
are the output of ``opsync render`` and ``opsync check``, run as commands with the token in a file.

The in-process emulator plays 1Password, which holds the values by design: its own log records are left
out of the search.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from controllers.access import LOST_MESSAGE
from controllers.desired import desired_secret
from controllers.items import UNCHECKED_MESSAGE
from controllers.resources import ONEPASSWORDACCESSPOLICIES, ONEPASSWORDITEMS
from controllers.secrets import WriteResult
from onepassword_access.emulator import Emulator
from onepassword_access.limits import MAX_FILE_BYTES
from opsync import metrics
from opsync.client import Client
from opsync.envtest import ControlPlane
from opsync.logging import JsonFormatter
from opsync.resources import DEPLOYMENTS, EVENTS, SECRETS, KubeObject
from tests.support.harness import SDK, BackendKind, eventually, run_operator
from tests.support.objects import decoded, get_or_none, opi, wait_for_data, wait_for_ready, workload
from tests.support.processes import SDK_CORE_PROXY, OpsyncProcess

pytestmark = pytest.mark.integration

RUN = secrets.token_hex(6)
PASSWORD = f"pw-{RUN}-hygiene"
ROTATED = f"rotated-{RUN}-hygiene"
API_KEY = f"apikey-{RUN}-hygiene"
FILE_TEXT = f"file-{RUN}-hygiene"
CONNECT_TOKEN = f"token-{RUN}-hygiene"
SEEDED = (PASSWORD, ROTATED, API_KEY, FILE_TEXT, CONNECT_TOKEN)
VAULT, CLOSED = "hygiene", "closed"
EMULATOR_LOGGER = "onepassword_access.emulator"


def _item(title: str, **extra: Any) -> dict[str, Any]:
    fields = [
        {"label": "username", "value": "app"},
        {"label": "password", "value": PASSWORD, "type": "CONCEALED"},
        {"label": "api key", "value": API_KEY},
    ]
    return {"title": title, "fields": fields, **extra}


DATA = {
    "tokens": [{"token": CONNECT_TOKEN, "name": "opsync"}],
    "vaults": [
        {
            "name": VAULT,
            "items": [
                _item("db", files=[{"name": "cert.pem", "content": FILE_TEXT}]),
                _item("outage"),
                _item("limited"),
                _item("tls"),
                _item(
                    "huge", files=[{"name": "disk.img", "content": FILE_TEXT * (MAX_FILE_BYTES // len(FILE_TEXT) + 1)}]
                ),
            ],
        },
        {"name": CLOSED, "items": [_item("db")]},
    ],
}


def needles() -> dict[str, str]:
    """What must never be found: each seeded value, plain and base64-encoded (as in a Secret's data)."""
    found = {value: value for value in SEEDED}
    found.update({base64.b64encode(value.encode()).decode(): f"base64 of {value}" for value in SEEDED})
    return found


def leaks(text: str, emulator: Emulator | None = None) -> list[str]:
    """The seeded values (described) that ``text`` contains; with ``emulator``, also the service-account token
    made from the seeded token (what opsync holds with the SDK backend)."""
    found = [described for needle, described in needles().items() if needle in text]
    if emulator is not None and emulator.service_account_token(CONNECT_TOKEN) in text:
        found.append("the service-account token")
    return found


class Capture(logging.Handler):
    """Every record, formatted as opsync's JSON log lines (message, context, extra fields, traceback)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(EMULATOR_LOGGER):
            self.lines.append(self.format(record))


@pytest.fixture
def debug_logs() -> Iterator[Capture]:
    capture = Capture()
    root = logging.getLogger()
    level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(level)


@pytest.fixture
def connect_data() -> dict[str, Any]:
    return DATA


@pytest.fixture
async def emulator(connect_data: dict[str, Any]) -> AsyncIterator[Emulator]:
    # admin: the SDK of an ``opsync`` subprocess reaches the emulator's core through /__admin/sdk-core
    async with Emulator(connect_data, admin=True) as emu:
        yield emu


def access_env(emulator: Emulator, backend: BackendKind, tmp_path: Path) -> dict[str, str]:
    """How an ``opsync`` process reaches 1Password: the seeded token in a file (Connect), or the service-account
    token made from it, with the process's SDK answered by the emulator's core."""
    if backend is SDK:
        return {
            "OP_SERVICE_ACCOUNT_TOKEN": emulator.service_account_token(CONNECT_TOKEN),
            "OPSYNC_TEST_SDK_CORE": emulator.url,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(SDK_CORE_PROXY), os.environ.get("PYTHONPATH")])),
        }
    token_file = tmp_path / "token"
    token_file.write_text(CONNECT_TOKEN + "\n")
    return {"OP_CONNECT_HOST": emulator.url, "OP_CONNECT_TOKEN_FILE": str(token_file)}


def test_the_search_finds_what_it_looks_for() -> None:
    """The search itself can fail: a value, or its base64 form, inside any text is found."""
    assert leaks(f"error: {PASSWORD}!") == [PASSWORD]
    assert leaks(json.dumps({"data": base64.b64encode(CONNECT_TOKEN.encode()).decode()})) == [
        f"base64 of {CONNECT_TOKEN}"
    ]
    assert leaks("nothing here") == []


async def _scenarios(kube: Client, namespace: str, emulator: Emulator, backend: BackendKind) -> None:
    db = f"vaults/{VAULT}/items/db"
    everything = {"username": "app", "password": PASSWORD, "api-key": API_KEY, "cert.pem": FILE_TEXT}
    # synced: an item and an annotated workload (the seeded values do reach the Secrets)
    await kube.create(ONEPASSWORDITEMS, opi("db", db), namespace)
    await kube.create(DEPLOYMENTS, workload("Deployment", "web", item_path=db, item_name="web-db"), namespace)
    await wait_for_data(kube, namespace, "db", everything)
    await wait_for_data(kube, namespace, "web-db", everything)

    # changed in 1Password
    emulator.update_item(VAULT, "db", fields={"password": ROTATED})
    await wait_for_data(kube, namespace, "db", {**everything, "password": ROTATED})
    await wait_for_data(kube, namespace, "web-db", {**everything, "password": ROTATED})

    # broken items: one that does not exist, one that cannot make a Secret of the asked type
    await kube.create(ONEPASSWORDITEMS, opi("missing", f"vaults/{VAULT}/items/missing"), namespace)
    await kube.create(ONEPASSWORDITEMS, opi("tls", f"vaults/{VAULT}/items/tls", type="kubernetes.io/tls"), namespace)
    await wait_for_ready(kube, namespace, "missing", "False", "ItemNotFound")
    await wait_for_ready(kube, namespace, "tls", "False", "InvalidSecret")

    # a Secret someone else made, holding a seeded value itself, is not taken over
    foreign = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "taken"}, "stringData": {"x": PASSWORD}}
    await kube.create(SECRETS, foreign, namespace)
    await kube.create(ONEPASSWORDITEMS, opi("taken", db), namespace)
    await wait_for_ready(kube, namespace, "taken", "False", "SecretConflict")

    # an item may not take a workload's Secret; a file larger than a Secret holds is refused before download
    await kube.create(ONEPASSWORDITEMS, opi("web-db", db), namespace)
    await wait_for_ready(kube, namespace, "web-db", "False", "SecretConflict")
    await kube.delete(ONEPASSWORDITEMS, "web-db", namespace)
    await kube.create(ONEPASSWORDITEMS, opi("huge", f"vaults/{VAULT}/items/huge"), namespace)
    await wait_for_ready(kube, namespace, "huge", "False", "SecretTooLarge")

    # Connect down (503): items in sync say since when they could not be checked; then rate limiting (429)
    await emulator.set_faults(outage="503")
    await kube.create(ONEPASSWORDITEMS, opi("outage", f"vaults/{VAULT}/items/outage"), namespace)
    await wait_for_ready(kube, namespace, "outage", "False", "ConnectUnavailable")
    unchecked = await wait_for_ready(kube, namespace, "db", "True", "ConnectUnavailable")
    assert unchecked["message"].startswith(UNCHECKED_MESSAGE)
    if backend is not SDK:  # the SDK's rate limit carries no Retry-After: opsync would pause for 15 minutes
        await emulator.set_faults(status=429, retry_after=1)
        await kube.create(ONEPASSWORDITEMS, opi("limited", f"vaults/{VAULT}/items/limited"), namespace)
        await wait_for_ready(kube, namespace, "limited", "False", "RateLimited")
    await emulator.clear_faults()
    await wait_for_ready(kube, namespace, "outage", "True", "Synced")
    if backend is not SDK:
        await wait_for_ready(kube, namespace, "limited", "True", "Synced")

    # denied by an access policy (deleted again: policies are cluster-wide)
    policy = {
        "apiVersion": "onepassword.com/v1alpha1",
        "kind": "OnePasswordAccessPolicy",
        "metadata": {"name": f"{namespace}-hygiene"},
        "spec": {"namespaces": {"names": [namespace]}, "vaults": [{"vault": VAULT}]},
    }
    await kube.create(ONEPASSWORDACCESSPOLICIES, policy)
    try:
        await kube.create(ONEPASSWORDITEMS, opi("closed", f"vaults/{CLOSED}/items/db"), namespace)
        await wait_for_ready(kube, namespace, "closed", "False", "AccessDenied")
    finally:
        await kube.delete(ONEPASSWORDACCESSPOLICIES, policy["metadata"]["name"])
    # policies gone after being in use: every item is denied (fail closed), the Secrets kept
    lost = await wait_for_ready(kube, namespace, "closed", "False", "AccessDenied")
    await eventually(
        lambda: _message_is(kube, namespace, "closed", LOST_MESSAGE), message="no fail-closed denial after the policy"
    )
    assert lost["reason"] == "AccessDenied"

    # deletions
    await kube.delete(ONEPASSWORDITEMS, "db", namespace)
    await kube.delete(DEPLOYMENTS, "web", namespace)
    await wait_for_data(kube, namespace, "db", None)
    await wait_for_data(kube, namespace, "web-db", None)


async def _message_is(kube: Client, namespace: str, name: str, message: str) -> bool:
    item = await kube.get(ONEPASSWORDITEMS, name, namespace)
    return any(c.get("message") == message for c in (item.get("status") or {}).get("conditions") or [])


async def _reprs(op: Any) -> str:
    """The reprs (and str) of the secret-bearing objects opsync holds while it runs."""
    resolved, item = await op.operator.fetcher.get(f"vaults/{VAULT}/items/outage")
    desired = desired_secret(name="outage", namespace="ns", item=item)
    objects = [resolved, resolved.item, *resolved.item.fields, item, *item.fields, desired, op.settings, op.backend]
    objects.append(WriteResult(desired.secret, "create", data_changed=True))
    return "\n".join(f"{obj!r} {obj!s}" for obj in objects)


async def test_no_value_or_token_in_logs_events_statuses_or_metrics(
    control_plane: ControlPlane,
    kube: Client,
    namespace: str,
    emulator: Emulator,
    backend: BackendKind,
    debug_logs: Capture,
) -> None:
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace], log_level="debug") as op:
        await _scenarios(kube, namespace, emulator, backend)
        await op.settled()
        reprs = await _reprs(op)

    assert any("sync failed" in line for line in debug_logs.lines)  # failures were logged, with detail
    assert any('"level": "debug"' in line for line in debug_logs.lines)
    places: dict[str, str] = {f"log line {n}": line for n, line in enumerate(debug_logs.lines)}
    events: list[KubeObject] = (await kube.list(EVENTS, namespace))["items"]
    assert {"AccessDenied", "SecretConflict", "Synced"} <= {e["reason"] for e in events}
    places.update({f"Event {e['metadata']['name']}": json.dumps(e) for e in events})
    for item in (await kube.list(ONEPASSWORDITEMS, namespace))["items"]:
        places[f"OnePasswordItem {item['metadata']['name']} status"] = json.dumps(item.get("status"))
    places["metrics"] = metrics.render_latest()[0].decode()
    places["reprs"] = reprs

    found = {place: leaked for place, text in places.items() if (leaked := leaks(text, emulator))}
    assert found == {}


async def test_opsync_run_takes_the_token_from_a_file_never_from_its_command_line(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(CONNECT_TOKEN + "\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OP_")},
        "OP_CONNECT_HOST": emulator.url,
        "OP_CONNECT_TOKEN_FILE": str(token_file),
        "WATCH_NAMESPACE": namespace,
        "POLLING_INTERVAL": "1",
        "KUBECONFIG": control_plane.kubeconfig_path,
    }
    args = [
        "run",
        "--metrics-bind-address=0",
        "--health-probe-bind-address=0",
        "--log-format=json",
        "--log-level=debug",
    ]
    opsync = await OpsyncProcess(args, env, tmp_path / "opsync.log").start()
    try:
        await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{VAULT}/items/db"), namespace)

        async def synced() -> bool:  # the token file was read and used
            data = decoded(await get_or_none(kube, SECRETS, "db", namespace)) or {}
            return data.get("password") == PASSWORD

        await eventually(synced, timeout=60, message="opsync run never synced the item")
        proc = Path(f"/proc/{opsync.pid}")
        assert leaks((proc / "cmdline").read_bytes().decode()) == []
        assert leaks((proc / "environ").read_bytes().decode()) == []
        code = await opsync.stop()
    finally:
        await opsync.kill()
    assert code == 0, opsync.output()[-2000:]
    assert '"level": "debug"' in opsync.output()
    assert leaks(opsync.output()) == []


async def _command(env: dict[str, str], log: Path, *args: str) -> str:
    """Run ``opsync <args>`` to its end; its stdout and stderr."""
    opsync = await OpsyncProcess(args, env, log).start()
    try:
        await opsync.wait(60)
    finally:
        await opsync.kill()
    return opsync.output()


async def test_no_value_or_token_in_what_opsync_render_and_check_print(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind, tmp_path: Path
) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OP_")},
        **access_env(emulator, backend, tmp_path),
        "WATCH_NAMESPACE": namespace,
        "KUBECONFIG": control_plane.kubeconfig_path,
    }
    await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{VAULT}/items/db"), namespace)
    outputs = {
        "render": await _command(env, tmp_path / "render.log", "render", f"vaults/{VAULT}/items/db"),
        "render of a refused item": await _command(
            env, tmp_path / "refused.log", "render", f"vaults/{VAULT}/items/huge"
        ),
        "render of a missing item": await _command(
            env, tmp_path / "missing.log", "render", f"vaults/{VAULT}/items/missing"
        ),
        "check": await _command(env, tmp_path / "check.log", "check", "--log-level=debug"),
    }
    assert "<hidden:" in outputs["render"] and "too large" in outputs["render of a refused item"]
    assert f"vault {VAULT}" in outputs["check"]
    assert {name: found for name, text in outputs.items() if (found := leaks(text, emulator))} == {}
