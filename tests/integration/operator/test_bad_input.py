"""Bad input (docs/reliability.md), table-driven: one operator run over one namespace, every case applied at once.

Each row of ``CASES`` says what is applied, what the user then sees (the ``Ready`` condition's status, reason
and message, an Event) and what becomes of the Secret. Throughout, a ``good`` item in the same namespace
must stay Ready with the same Secret (not even rewritten), the operator must not crash or hit an unexpected
exception, and no value from 1Password may show in a condition or an Event.

Cases with Connect faults (bodies that are not JSON or miss properties) run one at a time, since the
emulator's faults are global; the others are applied together before the first case is checked.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from controllers.constants import AUTO_RESTART_ANNOTATION
from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client, InvalidError
from opsync.envtest import ControlPlane
from opsync.resources import DEPLOYMENTS, NAMESPACES, SECRETS, KubeObject
from tests.support.harness import RunningOperator, emulator_data, eventually, run_operator
from tests.support.objects import (
    events_for,
    get_or_none,
    opi,
    ready_condition,
    wait_for_event,
    wait_for_ready,
    workload,
)

pytestmark = pytest.mark.integration

VAULT = "k8s"
UNICODE_VAULT = "Trésor 🔐"
BROKEN_VAULT = "broken"
BROKEN_LIST_VAULT = "broken-list"  # a vault nothing lists before its case: titles resolve from a held listing
BROKEN_ITEM_ID = "thing" * 5 + "1"
TWIN_OLDER_ID, TWIN_CHOSEN_ID = "z" * 26, "a" * 26  # same createdAt: the smaller id wins, whatever the order
CREATED = "2024-01-01T00:00:00Z"
BINARY = bytes(range(256)) * 4
MIB = 1024 * 1024
LARGE = "x" * (MIB + 1)
GOOD = {"username": b"good-user", "password": b"good-pw-7c1e"}
NOT_JSON_DOCKERCONFIG = "not-json-v4lue"
SECRET_VALUES = (
    "good-pw-7c1e",
    "v-first-91",
    "v-second-42",
    "v-hash-3",
    "v-dot-55",
    "tw1n-z",
    "tw1n-a",
    "välüe-✓-🔑",
    "c3rt-only",
    NOT_JSON_DOCKERCONFIG,
    "thing-v4l",
)


def field_(label: str, value: str) -> dict[str, str]:
    return {"label": label, "value": value}


ITEMS: dict[str, list[dict[str, Any]]] = {
    VAULT: [
        {"title": "good", "fields": [field_("username", "good-user"), field_("password", "good-pw-7c1e")]},
        {"title": "twin", "id": TWIN_OLDER_ID, "createdAt": CREATED, "fields": [field_("which", "tw1n-z")]},
        {"title": "twin", "id": TWIN_CHOSEN_ID, "createdAt": CREATED, "fields": [field_("which", "tw1n-a")]},
        {
            "title": "unusable-labels",
            "fields": [
                field_("###", "v-hash-3"),
                field_(".", "v-dot-55"),
                field_("..x", "v-dot-55"),
                field_("пароль", "v-dot-55"),
                field_("ok", "1"),
            ],
        },
        {
            "title": "colliding-labels",
            "urls": [
                {"href": "https://one.example", "label": "web site"},
                {"href": "https://two.example", "label": "web-site", "primary": True},
                {"href": "https://three.example", "label": "web_site!"},
            ],
            "fields": [field_("api key", "v-first-91"), field_("api-key", "v-second-42")],
        },
        {"title": "large", "files": [{"name": "big.txt", "content": LARGE}]},
        {"title": "exactly-1-MiB", "files": [{"name": "big.txt", "content": "y" * MIB}]},
        {"title": "growing", "fields": [field_("small", "1")]},
        {"title": "to-delete", "fields": [field_("k", "v")]},
        {"title": "binary", "files": [{"name": "blob.bin", "contentBase64": base64.b64encode(BINARY).decode()}]},
        {"title": 'say "hi" \\ back\\slash', "fields": [field_("k", "q")]},
        {"title": "surrogates", "fields": [field_("lone", "a\ud800b")], "urls": [{"href": "x\udfff", "label": "u"}]},
        {"title": "half-tls", "fields": [field_("tls.crt", "c3rt-only")]},
        {"title": "bad-docker", "fields": [field_(".dockerconfigjson", NOT_JSON_DOCKERCONFIG)]},
    ],
    UNICODE_VAULT: [
        {
            "title": "Ünïcødé 🔑",
            "fields": [field_("naïve key", "välüe-✓-🔑"), field_("café", "crème")],
            "files": [{"name": "résumé.txt", "content": "日本語テキスト"}],
        }
    ],
    BROKEN_VAULT: [{"title": "thing", "id": BROKEN_ITEM_ID, "fields": [field_("k", "thing-v4l")]}],
    BROKEN_LIST_VAULT: [{"title": "thing", "fields": [field_("k", "thing-v4l")]}],
}

Absent = None
UNCHANGED = "unchanged"
SecretState = dict[str, bytes] | Literal["unchanged"] | None


@dataclass(frozen=True)
class Case:
    """One kind of bad input and what a user sees for it."""

    id: str
    objects: tuple[KubeObject, ...]
    """Applied in order: items, workloads, Secrets (``metadata.namespace`` "unwatched" goes to that one)."""
    subject: str
    """The object the condition and the Event are about (the first item, else the workload)."""
    ready: str | None
    """``Ready`` status; None: no status at all (workloads have none; unwatched items get none)."""
    reason: str | None = None
    message: str = ""
    """A substring of the condition's message."""
    event: str | None = None
    """The reason of an Event about ``subject`` (Warning, unless it is ``Synced``)."""
    event_message: str = ""
    secret: str = ""
    """The Secret to check (default: ``subject``)."""
    data: SecretState = None
    """Absent (None), ``UNCHANGED`` from when it was applied, or exactly these keys and bytes."""
    change: KubeObject | None = None
    """A merge patch applied to ``subject`` once it is Ready, before checking."""
    in_1password: Callable[[Emulator], object] | None = None
    """A change in 1Password once ``subject`` is Ready, before checking."""
    faults: dict[str, Any] | None = None
    """Emulator faults in force while the case is applied (the case then runs alone, and recovers after)."""
    refused: str = ""
    """The API server refuses ``objects``; the error names this."""

    @property
    def secret_name(self) -> str:
        return self.secret or self.subject


def path(vault: str, item: str) -> str:
    return f"vaults/{vault}/items/{item}"


def unmanaged_secret(name: str, data: dict[str, str]) -> KubeObject:
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": encoded}


NOT_ACCEPTABLE = "is not an acceptable path for One Password item"
CASES = [
    # item paths
    Case(
        "blank-vault-segment",
        (opi("blank-vault", "vaults/ /items/good"),),
        "blank-vault",
        "False",
        "InvalidItemPath",
        f'"vaults/ /items/good" {NOT_ACCEPTABLE}',
        "ReconcileError",
    ),
    Case(
        "blank-item-segment",
        (opi("blank-item", "vaults/k8s/items/\t"),),
        "blank-item",
        "False",
        "InvalidItemPath",
        f'"vaults/k8s/items/\\t" {NOT_ACCEPTABLE}',
        "ReconcileError",
    ),
    Case(
        "no-item-path",
        ({**opi("no-path", ""), "spec": {}},),
        "no-path",
        "False",
        "InvalidItemPath",
        f'"" {NOT_ACCEPTABLE}',
        "ReconcileError",
    ),
    Case(
        "extra-segment-refused-by-schema",
        (opi("extra-segment", "vaults/k8s/items/good/more"),),
        "extra-segment",
        None,
        refused="spec.itemPath",
    ),
    Case(
        "empty-segment-refused-by-schema",
        (opi("empty-segment", "vaults//items/good"),),
        "empty-segment",
        None,
        refused="spec.itemPath",
    ),
    Case(
        "workload-malformed-path",
        (workload("Deployment", "bad-path-app", item_path="k8s/good", item_name="bad-path-secret"),),
        "bad-path-app",
        None,
        event="ReconcileError",
        event_message=f'"k8s/good" {NOT_ACCEPTABLE}',
        secret="bad-path-secret",
    ),
    Case(
        "workload-item-name-unusable",
        (workload("Deployment", "bad-name-app", item_path=path(VAULT, "good"), item_name="###"),),
        "bad-name-app",
        None,
        event="ReconcileError",
        event_message="'###' cannot be made a valid Secret name",
        secret="bad-name-secret",
    ),
    # lookups
    Case(
        "unknown-vault",
        (opi("no-vault", path("nowhere", "good")),),
        "no-vault",
        "False",
        "VaultNotFound",
        'no vaults found with identifier "nowhere"',
        "ReconcileError",
    ),
    Case(
        "unknown-item",
        (opi("no-item", path(VAULT, "nothing")),),
        "no-item",
        "False",
        "ItemNotFound",
        'no items found with identifier "nothing"',
        "ReconcileError",
    ),
    Case(
        "duplicate-titles",
        (opi("twin", path(VAULT, "twin")),),
        "twin",
        "True",
        "Synced",
        event="Synced",
        data={"which": b"tw1n-a"},
    ),
    # keys
    Case(
        "labels-sanitise-to-nothing",
        (opi("unusable", path(VAULT, "unusable-labels")),),
        "unusable",
        "True",
        "Synced",
        event="DataWarning",
        event_message="field label '..x' cannot be made a Secret key; skipped",
        data={"ok": b"1"},
    ),
    Case(
        "labels-collide",
        (opi("colliding", path(VAULT, "colliding-labels")),),
        "colliding",
        "True",
        "Synced",
        event="DataWarning",
        event_message="field 'api-key' replaces an earlier URL or field with key 'api-key'",
        data={"api-key": b"v-second-42", "web-site": b"https://two.example", "web_site": b"https://three.example"},
    ),
    # data
    Case(
        "secret-over-1-MiB",
        (opi("large", path(VAULT, "large")),),
        "large",
        "False",
        "SecretTooLarge",
        "a Secret holds at most 1048576 bytes",
        "ReconcileError",
    ),
    Case(
        "secret-of-exactly-1-MiB",
        (opi("exact", path(VAULT, "exactly-1-MiB")),),
        "exact",
        "True",
        "Synced",
        event="Synced",
        data={"big.txt": b"y" * MIB},
    ),
    Case(
        "item-grows-past-1-MiB",
        (opi("growing", path(VAULT, "growing")),),
        "growing",
        "False",
        "SecretTooLarge",
        "a Secret holds at most 1048576 bytes",
        "ReconcileError",
        data=UNCHANGED,
        in_1password=lambda emulator: emulator.update_item(VAULT, "growing", files={"big.txt": LARGE}),
    ),
    Case(
        "item-deleted-in-1password",
        (opi("deleted", path(VAULT, "to-delete")),),
        "deleted",
        "False",
        "ItemNotFound",
        'no items found with identifier "to-delete"',
        "ReconcileError",
        data=UNCHANGED,
        in_1password=lambda emulator: emulator.delete_item(VAULT, "to-delete"),
    ),
    Case(
        "item-path-broken-after-sync",
        (opi("broken-later", path(VAULT, "good")),),
        "broken-later",
        "False",
        "InvalidItemPath",
        f'"vaults/k8s/items/ " {NOT_ACCEPTABLE}',
        "ReconcileError",
        data=UNCHANGED,
        change={"spec": {"itemPath": "vaults/k8s/items/ "}},
    ),
    Case(
        "binary-file",
        (opi("binary", path(VAULT, "binary")),),
        "binary",
        "True",
        "Synced",
        event="Synced",
        data={"blob.bin": BINARY},
    ),
    Case(
        "unicode-everywhere",
        (opi("unicode", path(UNICODE_VAULT, "Ünïcødé 🔑")),),
        "unicode",
        "True",
        "Synced",
        event="Synced",
        data={"na-ve-key": "välüe-✓-🔑".encode(), "caf": "crème".encode(), "r-sum-.txt": "日本語テキスト".encode()},
    ),
    Case(
        "title-with-quotes-and-backslashes",
        (opi("quoted", path(VAULT, 'say "hi" \\ back\\slash')),),
        "quoted",
        "True",
        "Synced",
        event="Synced",
        data={"k": b"q"},
    ),
    # JSON may escape lone UTF-16 surrogates, which are no characters: Go's decoder makes them U+FFFD
    Case(
        "lone-surrogates-in-values",
        (opi("surrogates", path(VAULT, "surrogates")),),
        "surrogates",
        "True",
        "Synced",
        event="Synced",
        data={"lone": "a\ufffdb".encode(), "u": "x\ufffd".encode()},
    ),
    # Secret types and ownership
    Case(
        "tls-without-tls.key",
        (opi("half-tls", path(VAULT, "half-tls"), type="kubernetes.io/tls"),),
        "half-tls",
        "False",
        "InvalidSecret",
        "missing: tls.key",
        "ReconcileError",
    ),
    Case(
        "dockerconfigjson-without-its-key",
        (opi("no-docker", path(VAULT, "good"), type="kubernetes.io/dockerconfigjson"),),
        "no-docker",
        "False",
        "InvalidSecret",
        "needs .dockerconfigjson",
        "ReconcileError",
    ),
    Case(
        "dockerconfigjson-not-json",
        (opi("bad-docker", path(VAULT, "bad-docker"), type="kubernetes.io/dockerconfigjson"),),
        "bad-docker",
        "False",
        "InvalidSecret",
        ".dockerconfigjson key of a kubernetes.io/dockerconfigjson Secret must hold a JSON",
        "ReconcileError",
    ),
    Case(
        "secret-type-unknown-to-kubernetes-refused-by-schema",
        (opi("odd-type", path(VAULT, "good"), type="not a type/" + "x" * 300),),
        "odd-type",
        None,
        refused="type",
    ),
    Case(  # issue 16: the token controller would fill it with a token of any ServiceAccount in the namespace
        "service-account-token-refused-by-schema",
        (opi("sa-token", path(VAULT, "good"), type="kubernetes.io/service-account-token"),),
        "sa-token",
        None,
        refused='supported values: "", "Opaque", "kubernetes.io/tls"',
    ),
    Case(
        "secret-type-change",
        (opi("retype", path(VAULT, "good"), type="Opaque"),),
        "retype",
        "False",
        "SecretTypeImmutable",
        "secret type is immutable",
        "ReconcileError",
        data=UNCHANGED,
        change={"type": "kubernetes.io/basic-auth"},
    ),
    Case(
        "unmanaged-secret-of-that-name",
        (unmanaged_secret("taken", {"mine": "keep me"}), opi("taken", path(VAULT, "good"))),
        "taken",
        "False",
        "SecretConflict",
        'Secret "taken" already exists',
        "SecretConflict",
        data=UNCHANGED,
    ),
    Case(
        "workload-names-an-unmanaged-secret",
        (
            unmanaged_secret("users-secret", {"mine": "keep me"}),
            workload("Deployment", "clash-app", item_path=path(VAULT, "good"), item_name="users-secret"),
        ),
        "clash-app",
        None,
        event="SecretConflict",
        event_message='Secret "users-secret" already exists',
        secret="users-secret",
        data=UNCHANGED,
    ),
    # auto-restart
    Case(
        "invalid-auto-restart-on-item",
        (opi("maybe-item", path(VAULT, "good"), metadata={"annotations": {AUTO_RESTART_ANNOTATION: "maybe"}}),),
        "maybe-item",
        "True",
        "Synced",
        event="DataWarning",
        event_message="'maybe' is not true or false",
        data=GOOD,
    ),
    Case(
        "invalid-auto-restart-on-workload",
        (workload("Deployment", "restless-app", env_secret="good", annotations={AUTO_RESTART_ANNOTATION: "maybe"}),),
        "restless-app",
        None,
        event="InvalidAutoRestart",
        event_message="'maybe' on the workload is not true or false",
        secret="good",
        data=GOOD,
    ),
    # scope
    Case(
        "namespace-not-watched",
        ({**opi("elsewhere", path(VAULT, "good")), "metadata": {"name": "elsewhere", "namespace": "unwatched"}},),
        "elsewhere",
        None,
    ),
    # Connect answers that are not what the API promises
    Case(
        "connect-list-not-json",
        (opi("not-json", path(BROKEN_VAULT, "thing")),),
        "not-json",
        "False",
        "ConnectUnavailable",
        "the answer is not JSON",
        "ReconcileError",
        faults={"body": "<html>oops</html>", "content_type": "text/html", "match": "BROKEN_VAULT_ID/items$"},
    ),
    # (another vault: the broken one's listing is held once the case before recovered, and titles resolve
    # from it without asking; the vault's name in another spelling)
    Case(
        "connect-list-misses-fields",
        (opi("no-fields", path(BROKEN_LIST_VAULT.upper(), "thing")),),
        "no-fields",
        "False",
        "ConnectUnavailable",
        "unexpected answer: 0.id: Field required",
        "ReconcileError",
        faults={"body": '[{"title": "thing"}]', "match": "BROKEN_LIST_VAULT_ID/items$"},
    ),
    Case(
        "connect-item-misses-fields",
        (opi("by-id", f"vaults/BROKEN_VAULT_ID/items/{BROKEN_ITEM_ID}"),),
        "by-id",
        "False",
        "ConnectUnavailable",
        "unexpected answer: id: Field required",
        "ReconcileError",
        faults={
            "body": '{"title": "thing", "fields": [{"label": "k", "value": "thing-v4l"}]}',
            "match": f"/items/{BROKEN_ITEM_ID}$",
        },
    ),
]


@dataclass
class Scene:
    """The running operator and what was applied."""

    op: RunningOperator
    kube: Client
    emulator: Emulator
    namespace: str
    unwatched: str
    applied: dict[str, list[KubeObject]] = field(default_factory=dict)
    refused: dict[str, InvalidError] = field(default_factory=dict)
    good_problems: list[str] = field(default_factory=list)
    good_versions: set[str] = field(default_factory=set)
    unexpected: list[logging.LogRecord] = field(default_factory=list)

    def fill_in(self, value: Any) -> Any:
        """``value`` with the broken vaults' ids in place of ``BROKEN_VAULT_ID`` and ``BROKEN_LIST_VAULT_ID``."""
        text = json.dumps(value).replace("BROKEN_VAULT_ID", self.emulator.vault_id(BROKEN_VAULT))
        return json.loads(text.replace("BROKEN_LIST_VAULT_ID", self.emulator.vault_id(BROKEN_LIST_VAULT)))

    async def apply(self, case: Case) -> None:
        self.applied[case.id] = []
        for manifest in map(self.fill_in, case.objects):
            target = self.unwatched if manifest["metadata"].get("namespace") == "unwatched" else self.namespace
            manifest["metadata"]["namespace"] = target
            kind = {"Secret": SECRETS, "Deployment": DEPLOYMENTS}.get(manifest["kind"], ONEPASSWORDITEMS)
            try:
                self.applied[case.id].append(await self.kube.create(kind, manifest, target))
            except InvalidError as err:
                self.refused[case.id] = err


class UnexpectedErrors(logging.Handler):
    """Collects ``reconciler error`` lines: a reconcile that raised something ``classify`` did not expect."""

    def __init__(self, found: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.found = found

    def emit(self, record: logging.LogRecord) -> None:
        self.found.append(record)


def raw(secret: KubeObject | None) -> dict[str, bytes] | None:
    if secret is None:
        return None
    return {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}


async def watch_good(scene: Scene, stop: asyncio.Event) -> None:
    """Until ``stop``: the good item's Secret and condition, checked every 0.1 s once first in sync."""
    in_sync = False
    while not stop.is_set():
        secret = await get_or_none(scene.kube, SECRETS, "good", scene.namespace)
        condition = await ready_condition(scene.kube, scene.namespace, "good")
        ok = raw(secret) == GOOD and condition is not None and condition.get("reason") == "Synced"
        if ok and secret is not None:
            in_sync = True
            scene.good_versions.add(secret["metadata"]["resourceVersion"])
        elif in_sync:
            scene.good_problems.append(f"secret={raw(secret)} condition={condition}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)  # a monitor's pace, not synchronisation


@pytest.fixture(scope="module")
async def scene(control_plane: ControlPlane, kube: Client) -> AsyncIterator[Scene]:
    suffix = secrets.token_hex(3)
    namespace, unwatched = f"bad-input-{suffix}", f"bad-input-unwatched-{suffix}"
    for name in (namespace, unwatched):
        await kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    found: list[logging.LogRecord] = []
    handler = UnexpectedErrors(found)
    logging.getLogger("opsync.controller").addHandler(handler)
    stop = asyncio.Event()
    try:
        async with (
            Emulator(emulator_data(ITEMS)) as emulator,
            run_operator(control_plane, emulator, namespaces=[namespace]) as op,
        ):
            scene = Scene(op, kube, emulator, namespace, unwatched, unexpected=found)
            await kube.create(ONEPASSWORDITEMS, opi("good", path(VAULT, "good")), namespace)
            monitor = asyncio.create_task(watch_good(scene, stop))
            try:
                await eventually(lambda: bool(scene.good_versions), message="the good item never synced")
                for case in CASES:
                    if case.faults is None:
                        await scene.apply(case)
                yield scene
            finally:
                stop.set()
                await monitor
    finally:
        logging.getLogger("opsync.controller").removeHandler(handler)
        for name in (namespace, unwatched):
            await kube.delete(NAMESPACES, name)


async def check_secret(scene: Scene, case: Case) -> None:
    secret = await get_or_none(scene.kube, SECRETS, case.secret_name, scene.namespace)
    if case.data == UNCHANGED:
        before = next(o for o in scene.applied[case.id] if o["kind"] == "Secret")
        assert secret is not None and raw(secret) == raw(before)
        assert secret["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
        return
    if case.data is None:
        assert secret is None, f"Secret {case.secret_name} exists"
        return

    async def holds() -> bool:
        return raw(await get_or_none(scene.kube, SECRETS, case.secret_name, scene.namespace)) == case.data

    await eventually(holds, message=f"Secret {case.secret_name} never held the expected data")


async def run_faulted(scene: Scene, case: Case) -> None:
    """Apply ``case`` under its faults, check what it shows, then clear them: the item recovers."""
    assert case.faults is not None
    await scene.emulator.set_faults(**scene.fill_in(case.faults))
    try:
        await scene.apply(case)
        await check_case(scene, case)
    finally:
        await scene.emulator.clear_faults()
    await eventually(
        lambda: _has_secret(scene, case.secret_name), message=f"{case.id}: no recovery once Connect answers well"
    )
    await wait_for_ready(scene.kube, scene.namespace, case.subject, "True", "Synced")


async def _has_secret(scene: Scene, name: str) -> bool:
    return raw(await get_or_none(scene.kube, SECRETS, name, scene.namespace)) == {"k": b"thing-v4l"}


async def check_case(scene: Scene, case: Case) -> None:
    kube, namespace = scene.kube, scene.namespace
    if case.refused:
        error = scene.refused.get(case.id)
        assert error is not None, "the API server accepted it"
        assert case.refused in str(error)
        return
    if case.change is not None or case.in_1password is not None:
        await wait_for_ready(kube, namespace, case.subject, "True", "Synced")
        scene.applied[case.id].append(await kube.get(SECRETS, case.secret_name, namespace))
        if case.change is not None:
            await kube.patch(ONEPASSWORDITEMS, case.subject, case.change, namespace)
        if case.in_1password is not None:
            case.in_1password(scene.emulator)
    if case.ready is not None:
        condition = await wait_for_ready(kube, namespace, case.subject, case.ready, case.reason or "")
        assert case.message in condition["message"]
    if case.event is not None:
        type_ = "Normal" if case.event == "Synced" else "Warning"
        event = await wait_for_event(kube, namespace, case.subject, case.event, type_)
        assert case.event_message in event["message"]
    await check_secret(scene, case)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_bad_input(scene: Scene, case: Case) -> None:
    if case.faults is not None:
        await run_faulted(scene, case)
    elif case.objects[0]["metadata"].get("namespace") == "unwatched":
        await scene.op.settled()
        await scene.op.wait_for_polls(2)
        item = await scene.kube.get(ONEPASSWORDITEMS, case.subject, scene.unwatched)
        assert "status" not in item
        assert await get_or_none(scene.kube, SECRETS, case.subject, scene.unwatched) is None
        assert await events_for(scene.kube, scene.unwatched, case.subject) == []
    else:
        await check_case(scene, case)


async def test_duplicate_titles_do_not_flap(scene: Scene) -> None:
    """Polls, a forced reconcile and a change to the other twin leave the chosen twin's Secret alone."""
    kube, namespace = scene.kube, scene.namespace
    await wait_for_ready(kube, namespace, "twin", "True", "Synced")
    before = await kube.get(SECRETS, "twin", namespace)
    await scene.op.wait_for_polls(3)
    touched = await kube.patch(ONEPASSWORDITEMS, "twin", {"metadata": {"annotations": {"touch": "1"}}}, namespace)
    scene.emulator.update_item(VAULT, TWIN_OLDER_ID, fields={"which": "tw1n-z"})
    await scene.op.wait_for_polls(3)
    await scene.op.caught_up([touched])
    after = await kube.get(SECRETS, "twin", namespace)
    assert raw(after) == {"which": b"tw1n-a"}
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


async def test_the_good_item_was_never_disturbed_and_nothing_crashed(scene: Scene) -> None:
    await scene.op.settled()
    assert scene.op.task is not None and not scene.op.task.done()
    assert scene.good_problems == []
    assert len(scene.good_versions) == 1, "the good Secret was rewritten"
    assert [record.getMessage() for record in scene.unexpected] == []


async def test_no_value_in_conditions_or_events(scene: Scene) -> None:
    items = (await scene.kube.list(ONEPASSWORDITEMS, scene.namespace))["items"]
    events = [e for case in CASES for e in await events_for(scene.kube, scene.namespace, case.subject)]
    visible = json.dumps([item.get("status") for item in items]) + json.dumps([e["message"] for e in events])
    assert events
    for value in SECRET_VALUES:
        assert value not in visible
