"""OnePasswordItem → Secret, against the real control plane and the Connect emulator.

Replays the Go operator's OnePasswordItem controller tests (9.1 #1-10) and its e2e scenarios
(9.3 #62-70), plus opsync's status, events, ownership and failure handling.
"""

from __future__ import annotations

from typing import Any

import pytest

from controllers.constants import (
    DATA_VERSION_ANNOTATION,
    ITEM_PATH_ANNOTATION,
    ITEM_VERSION_ANNOTATION,
    MANAGED_LABEL,
)
from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client, InvalidError
from opsync.envtest import ControlPlane
from opsync.resources import SECRETS
from opsync.timestamps import rfc3339
from tests.support.harness import CONNECT, TOKEN, BackendKind, Vaults, eventually, run_operator
from tests.support.objects import (
    decoded,
    events_for,
    get_or_none,
    opi,
    ready_condition,
    wait_for_data,
    wait_for_event,
    wait_for_ready,
)

pytestmark = pytest.mark.integration

VAULT = "k8s"
ID_LIKE_TITLE = "test26charlongitemtitle123"  # 26 characters of [a-z0-9]: looks like an id (9.3 #67)
ITEMS: list[dict[str, Any]] = [
    {"title": "db", "fields": [{"label": "username", "value": "admin"}, {"label": "password", "value": "s3cret"}]},
    {
        "title": "login",
        "urls": [
            {"href": "https://primary.example", "label": "website", "primary": True},
            {"href": "https://other.example", "label": "website"},
            {"href": "https://test.example", "label": "test-website"},
        ],
        "fields": [{"label": "password", "value": "pw"}],
    },
    {
        "title": "labels",
        "fields": [
            {"label": "first host", "value": "a"},
            {"label": "AWS Access Key", "value": "b"},
            {"label": "😄 ice-cream type", "value": "c"},
        ],
    },
    {
        "title": "cert",
        "fields": [{"label": "note", "value": "x"}],
        "files": [{"name": "server.crt", "content": "dummy-cert-content"}],
    },
    {"title": ID_LIKE_TITLE, "fields": [{"label": "password", "value": "by-title"}]},
    {
        "title": "frozen",
        "tags": ["operator.1password.io:ignore-secret"],
        "fields": [{"label": "password", "value": "v1"}],
    },
]


@pytest.fixture
def vaults() -> Vaults:
    return {VAULT: ITEMS}


async def test_item_becomes_a_secret_owned_by_it(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    """9.1 #1 and 9.3 #62: an item gets a Secret of its name with the item's fields, owned by it."""
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]):
        created = await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{VAULT}/items/db"), namespace)
        secret = await wait_for_data(kube, namespace, "db", {"username": "admin", "password": "s3cret"})
        condition = await wait_for_ready(kube, namespace, "db", "True", "Synced")

    item = emulator.get_item(VAULT, "db")
    meta = secret["metadata"]
    assert meta["annotations"][ITEM_PATH_ANNOTATION] == f"vaults/{item.vault.id}/items/{item.id}"
    assert meta["annotations"][ITEM_VERSION_ANNOTATION] == str(item.version)
    assert meta["labels"][MANAGED_LABEL] == "true"
    assert secret["type"] == "Opaque"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "onepassword.com/v1",
            "kind": "OnePasswordItem",
            "name": "db",
            "uid": created["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert condition["observedGeneration"] == created["metadata"]["generation"]
    assert condition["lastTransitionTime"]
    status = (await kube.get(ONEPASSWORDITEMS, "db", namespace))["status"]
    assert status["lastSyncTime"]
    assert any(e["reason"] == "Synced" for e in await events_for(kube, namespace, "db"))


async def test_item_change_reaches_the_secret_within_a_poll(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    """9.1 #2 and 9.3 #64: a new version with an extra field replaces the data, and ``lastSyncTime`` says when
    (written after the Secret, by the reconcile the Secret's own change queues)."""
    old = "2000-01-01T00:00:00Z"
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]):
        await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{VAULT}/items/db"), namespace)
        await wait_for_data(kube, namespace, "db", {"username": "admin", "password": "s3cret"})
        await wait_for_ready(kube, namespace, "db", "True", "Synced")
        # A status-only change queues no reconcile: only the data write below can move it.
        await kube.patch(ONEPASSWORDITEMS, "db", {"status": {"lastSyncTime": old}}, namespace, subresource="status")
        changed_at = rfc3339()
        emulator.update_item(VAULT, "db", fields={"password": "n3w", "extraField": "extra"})
        secret = await wait_for_data(
            kube, namespace, "db", {"username": "admin", "password": "n3w", "extraField": "extra"}
        )

        async def sync_recorded() -> bool:
            status = (await kube.get(ONEPASSWORDITEMS, "db", namespace)).get("status") or {}
            return str(status.get("lastSyncTime") or old) >= changed_at

        await eventually(sync_recorded, message="status.lastSyncTime did not move to the data write")
    assert secret["metadata"]["annotations"][ITEM_VERSION_ANNOTATION] == str(emulator.get_item(VAULT, "db").version)


async def test_deleting_the_item_deletes_its_secret(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    """9.1 #3: the garbage collector removes the Secret with its item (no finalizer involved)."""
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]):
        created = await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{VAULT}/items/db"), namespace)
        assert not created["metadata"].get("finalizers")
        await wait_for_data(kube, namespace, "db", {"username": "admin", "password": "s3cret"})
        await kube.delete(ONEPASSWORDITEMS, "db", namespace)
        await wait_for_data(kube, namespace, "db", None)
        assert await get_or_none(kube, ONEPASSWORDITEMS, "db", namespace) is None


async def test_labels_become_valid_keys_with_case_kept(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    """9.1 #4."""
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]):
        await kube.create(ONEPASSWORDITEMS, opi("labels", f"vaults/{VAULT}/items/labels"), namespace)
        await wait_for_data(
            kube, namespace, "labels", {"first-host": "a", "AWS-Access-Key": "b", "ice-cream-type": "c"}
        )


async def test_secret_type(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    """9.1 #5, #6 and #8: another type is applied (one of the allowed ones: the CRD and opsync refuse types
    that mint credentials, issue 16); "" and Opaque are the same type; the API server refuses to change a
    Secret's type."""
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]):
        await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{VAULT}/items/db"), namespace)
        await kube.create(
            ONEPASSWORDITEMS, opi("custom", f"vaults/{VAULT}/items/db", type="kubernetes.io/basic-auth"), namespace
        )
        before = await wait_for_data(kube, namespace, "db", {"username": "admin", "password": "s3cret"})
        custom = await wait_for_data(kube, namespace, "custom", {"username": "admin", "password": "s3cret"})
        assert custom["type"] == "kubernetes.io/basic-auth"

        await kube.patch(ONEPASSWORDITEMS, "db", {"type": "Opaque"}, namespace)
        await eventually(
            lambda: _observed_generation_is(kube, namespace, "db", 2), message="the type change was not reconciled"
        )
        assert (await wait_for_ready(kube, namespace, "db", "True", "Synced"))["observedGeneration"] == 2
        after = await kube.get(SECRETS, "db", namespace)
        assert after["data"] == before["data"]
        assert after["metadata"]["annotations"] == before["metadata"]["annotations"]

        with pytest.raises(InvalidError):
            await kube.patch(SECRETS, "custom", {"type": "Opaque"}, namespace)


async def _observed_generation_is(kube: Client, namespace: str, name: str, generation: int) -> bool:
    condition = await ready_condition(kube, namespace, name)
    return condition is not None and condition.get("observedGeneration") == generation


async def test_item_file_becomes_a_key(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    """9.1 #7 and 9.3 #69."""
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]):
        await kube.create(ONEPASSWORDITEMS, opi("cert", f"vaults/{VAULT}/items/cert"), namespace)
        await wait_for_data(kube, namespace, "cert", {"note": "x", "server.crt": "dummy-cert-content"})


@pytest.mark.parametrize("name", ["invalid_name", "invalidName"])
async def test_invalid_item_names_are_refused(kube: Client, namespace: str, name: str) -> None:
    """9.1 #9 and #10: the API server refuses names that are not DNS subdomains."""
    with pytest.raises(InvalidError):
        await kube.create(ONEPASSWORDITEMS, opi(name, f"vaults/{VAULT}/items/db"), namespace)


async def test_urls_and_lookups_by_title_and_id(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    """9.3 #63 (primary URL, once), #67 (a 26-character title), #68 (by ids), #70 (vault name in another case)."""
    db = emulator.get_item(VAULT, "db")
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]):
        await kube.create(ONEPASSWORDITEMS, opi("login", f"vaults/{VAULT.upper()}/items/login"), namespace)
        await kube.create(ONEPASSWORDITEMS, opi("id-like", f"vaults/{VAULT}/items/{ID_LIKE_TITLE}"), namespace)
        await kube.create(ONEPASSWORDITEMS, opi("by-ids", f"vaults/{db.vault.id}/items/{db.id}"), namespace)
        await wait_for_data(
            kube,
            namespace,
            "login",
            {"website": "https://primary.example", "test-website": "https://test.example", "password": "pw"},
        )
        await wait_for_data(kube, namespace, "id-like", {"password": "by-title"})
        await wait_for_data(kube, namespace, "by-ids", {"username": "admin", "password": "s3cret"})


async def test_ignore_secret_tag_keeps_the_data(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    """9.3 #65: an item tagged ignore-secret: after a change only the version annotation advances."""
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]):
        await kube.create(ONEPASSWORDITEMS, opi("frozen", f"vaults/{VAULT}/items/frozen"), namespace)
        before = await wait_for_data(kube, namespace, "frozen", {"password": "v1"})
        changed = emulator.update_item(VAULT, "frozen", fields={"password": "v2"})

        async def version_advanced() -> bool:
            secret = await kube.get(SECRETS, "frozen", namespace)
            return secret["metadata"]["annotations"][ITEM_VERSION_ANNOTATION] == str(changed.version)

        await eventually(version_advanced, message="the item-version annotation did not advance")
        after = await kube.get(SECRETS, "frozen", namespace)
    assert decoded(after) == {"password": "v1"}
    # the data did not change, so workloads using it will not restart
    assert (
        after["metadata"]["annotations"][DATA_VERSION_ANNOTATION]
        == (before["metadata"]["annotations"][DATA_VERSION_ANNOTATION])
    )


async def test_missing_item_and_vault_are_reported(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]):
        await kube.create(ONEPASSWORDITEMS, opi("nothing", f"vaults/{VAULT}/items/nothing"), namespace)
        await kube.create(ONEPASSWORDITEMS, opi("novault", "vaults/elsewhere/items/db"), namespace)
        item = await wait_for_ready(kube, namespace, "nothing", "False", "ItemNotFound")
        vault = await wait_for_ready(kube, namespace, "novault", "False", "VaultNotFound")
        assert 'no items found with identifier "nothing"' in item["message"]
        assert 'no vaults found with identifier "elsewhere"' in vault["message"]

        await wait_for_event(kube, namespace, "nothing", "ReconcileError")
        assert await get_or_none(kube, SECRETS, "nothing", namespace) is None

        # the item appears in 1Password: the item recovers on its own (backoff retries)
        emulator.add_item(VAULT, {"title": "nothing", "fields": [{"label": "k", "value": "v"}]})
        await wait_for_data(kube, namespace, "nothing", {"k": "v"})
        await wait_for_ready(kube, namespace, "nothing", "True", "Synced")


async def test_unauthorized_token_is_reported(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    wrong = "not-" + TOKEN
    bad_token = (
        {"connect_token": wrong}
        if backend is CONNECT
        else {"service_account_token": emulator.service_account_token(wrong)}
    )
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace], **bad_token):
        await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{VAULT}/items/db"), namespace)
        condition = await wait_for_ready(kube, namespace, "db", "False", "Unauthorized")
    assert ("401" if backend is CONNECT else "you are not authenticated") in condition["message"]
    assert TOKEN not in condition["message"]
    assert emulator.service_account_token(wrong) not in condition["message"]


async def test_a_missing_watched_namespace_is_ignored(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    """9.2 #58-59: only the listed namespaces are watched, and one that does not exist is no error."""
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace, f"{namespace}-absent"]):
        await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{VAULT}/items/db"), namespace)
        await wait_for_data(kube, namespace, "db", {"username": "admin", "password": "s3cret"})
