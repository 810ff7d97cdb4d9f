"""OnePasswordAccessPolicy: which namespaces may sync which vaults and items, on the real control plane.

Policies are cluster-scoped and the control plane is shared by the whole session, so every policy a test
creates is deleted when it ends (a leftover policy would deny every other test's items).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from controllers.access import DENIED_BEFORE_MESSAGE, KEPT_SUFFIX, LOST_MESSAGE, REQUIRED_MESSAGE
from controllers.resources import ONEPASSWORDACCESSPOLICIES, ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client, NotFoundError, TooManyRequestsError
from opsync.envtest import ControlPlane
from opsync.resources import CRDS, DEPLOYMENTS, NAMESPACES, SECRETS, KubeObject
from tests.support.harness import BackendKind, Vaults, eventually, run_operator
from tests.support.objects import (
    decoded,
    events_for,
    get_or_none,
    opi,
    ready_condition,
    wait_for_data,
    wait_for_event,
    wait_for_ready,
    workload,
)

pytestmark = pytest.mark.integration

APPS, OTHER = "apps", "other"
DB = {"password": "db-pw"}
VAULTS: dict[str, list[dict[str, Any]]] = {
    APPS: [
        {"title": "db", "tags": ["team-a"], "fields": [{"label": "password", "value": "db-pw"}]},
        {"title": "cache", "fields": [{"label": "password", "value": "cache-pw"}]},
        {"title": "public-config", "fields": [{"label": "url", "value": "https://example.test"}]},
    ],
    OTHER: [{"title": "db", "fields": [{"label": "password", "value": "other-pw"}]}],
}

Grant = Callable[..., Awaitable[KubeObject]]


@pytest.fixture
def vaults() -> Vaults:
    return VAULTS


@pytest.fixture
async def grant(kube: Client, namespace: str) -> AsyncIterator[Grant]:
    """``await grant(suffix, namespaces={...}, vaults=[...])`` creates a policy, deleted after the test."""
    created: list[str] = []

    async def create(suffix: str, *, namespaces: dict[str, Any], vaults: list[dict[str, Any]]) -> KubeObject:
        body = {
            "apiVersion": "onepassword.com/v1alpha1",
            "kind": "OnePasswordAccessPolicy",
            "metadata": {"name": f"{namespace}-{suffix}"},
            "spec": {"namespaces": namespaces, "vaults": vaults},
        }
        policy = await kube.create(ONEPASSWORDACCESSPOLICIES, body)
        created.append(policy["metadata"]["name"])
        return policy

    yield create
    for name in created:
        with contextlib.suppress(NotFoundError):
            await kube.delete(ONEPASSWORDACCESSPOLICIES, name)


async def set_policy_namespaces(kube: Client, policy: KubeObject, names: list[str]) -> None:
    patch = {"spec": {"namespaces": {"names": names}}}
    await kube.patch(ONEPASSWORDACCESSPOLICIES, policy["metadata"]["name"], patch)


async def denied(kube: Client, namespace: str, name: str) -> str:
    """Wait until the item is denied, with a Warning Event and no Secret; return the condition message."""
    condition = await wait_for_ready(kube, namespace, name, "False", "AccessDenied")
    event = await wait_for_event(kube, namespace, name, "AccessDenied")
    assert event["message"] == condition["message"]
    return str(condition["message"])


async def test_without_any_policy_every_namespace_syncs_everything(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    """Compatibility: no policy in the cluster changes nothing."""

    async def no_policy() -> bool:
        try:
            return (await kube.list(ONEPASSWORDACCESSPOLICIES))["items"] == []
        except TooManyRequestsError:  # the API server is still setting up the CRD's storage
            return False

    await eventually(no_policy, message="a OnePasswordAccessPolicy exists")
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]):
        await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{OTHER}/items/db"), namespace)
        await wait_for_data(kube, namespace, "db", {"password": "other-pw"})
        await wait_for_ready(kube, namespace, "db", "True", "Synced")


async def test_a_policy_allows_its_namespace_and_vault_and_denies_the_rest(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, grant: Grant, backend: BackendKind
) -> None:
    await grant("apps", namespaces={"names": [namespace]}, vaults=[{"vault": "APPS"}])  # names: any case
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]) as op:
        await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{APPS}/items/db"), namespace)
        await kube.create(ONEPASSWORDITEMS, opi("other", f"vaults/{OTHER}/items/db"), namespace)
        deployment = workload("Deployment", "web", item_path=f"vaults/{OTHER}/items/db", item_name="web-db")
        await kube.create(DEPLOYMENTS, deployment, namespace)

        await wait_for_data(kube, namespace, "db", DB)
        await wait_for_ready(kube, namespace, "db", "True", "Synced")
        message = await denied(kube, namespace, "other")
        assert message == f'no OnePasswordAccessPolicy grants namespace "{namespace}" access to vault "{OTHER}"'
        event = await wait_for_event(kube, namespace, "web", "AccessDenied")
        assert f'vault "{OTHER}"' in event["message"]
        await op.settled()
        assert await get_or_none(kube, SECRETS, "other", namespace) is None
        assert await get_or_none(kube, SECRETS, "web-db", namespace) is None


async def test_a_namespace_no_policy_selects_is_denied_without_asking_connect(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, grant: Grant, backend: BackendKind
) -> None:
    await grant("elsewhere", namespaces={"names": [f"{namespace}-elsewhere"]}, vaults=[{"vault": APPS}])
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]) as op:
        before = dict(emulator.request_counts)
        await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{APPS}/items/db"), namespace)
        message = await denied(kube, namespace, "db")
        assert message == f'no OnePasswordAccessPolicy grants namespace "{namespace}" access to any vault'
        await op.settled()
        assert dict(emulator.request_counts) == before


async def test_label_selected_namespaces_gain_and_lose_access_without_a_restart(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, grant: Grant, backend: BackendKind
) -> None:
    team = {"opsync.test/team": namespace}
    await grant("team", namespaces={"selector": {"matchLabels": team}}, vaults=[{"vault": APPS}])
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]):
        await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{APPS}/items/db"), namespace)
        await denied(kube, namespace, "db")
        assert await get_or_none(kube, SECRETS, "db", namespace) is None

        await kube.patch(NAMESPACES, namespace, {"metadata": {"labels": team}})
        await wait_for_data(kube, namespace, "db", DB)
        await wait_for_ready(kube, namespace, "db", "True", "Synced")

        await kube.patch(NAMESPACES, namespace, {"metadata": {"labels": {"opsync.test/team": None}}})
        condition = await wait_for_ready(kube, namespace, "db", "False", "AccessDenied")
        assert condition["message"].startswith("access revoked: ")
        assert condition["message"].endswith(KEPT_SUFFIX)
        assert decoded(await kube.get(SECRETS, "db", namespace)) == DB


async def test_tag_and_title_prefix_limits(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, grant: Grant, backend: BackendKind
) -> None:
    await grant(
        "limits",
        namespaces={"names": [namespace]},
        vaults=[{"vault": APPS, "tags": ["team-a"]}, {"vault": APPS, "titlePrefix": "public-"}],
    )
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]):
        for name, title in (("db", "db"), ("config", "public-config"), ("cache", "cache")):
            await kube.create(ONEPASSWORDITEMS, opi(name, f"vaults/{APPS}/items/{title}"), namespace)
        await wait_for_data(kube, namespace, "db", DB)  # tagged team-a
        await wait_for_data(kube, namespace, "config", {"url": "https://example.test"})  # titled public-...
        message = await denied(kube, namespace, "cache")
        assert "only items tagged team-a" in message
        assert "only items whose title starts with 'public-'" in message
        assert await get_or_none(kube, SECRETS, "cache", namespace) is None

        # tagging the item in 1Password grants it (retried with backoff, as an item not found yet)
        emulator.update_item(APPS, "cache", tags=["team-a"])
        await wait_for_data(kube, namespace, "cache", {"password": "cache-pw"}, timeout=60)
        await wait_for_ready(kube, namespace, "cache", "True", "Synced")


async def test_a_vault_granted_by_id(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, grant: Grant, backend: BackendKind
) -> None:
    apps_id = emulator.vault_id(APPS)
    await grant("by-id", namespaces={"names": [namespace]}, vaults=[{"vault": apps_id}])
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]):
        await kube.create(ONEPASSWORDITEMS, opi("by-name", f"vaults/{APPS}/items/db"), namespace)
        await kube.create(ONEPASSWORDITEMS, opi("by-id", f"vaults/{apps_id}/items/db"), namespace)
        await kube.create(ONEPASSWORDITEMS, opi("other", f"vaults/{emulator.vault_id(OTHER)}/items/db"), namespace)
        await wait_for_data(kube, namespace, "by-name", DB)
        await wait_for_data(kube, namespace, "by-id", DB)
        # a path by id names the vault by id: the message cannot give a name opsync never looked up
        assert f'vault "{emulator.vault_id(OTHER)}"' in await denied(kube, namespace, "other")


async def test_revoked_access_keeps_the_secret_unchanged_until_granted_again(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, grant: Grant, backend: BackendKind
) -> None:
    policy = await grant("apps", namespaces={"names": [namespace]}, vaults=[{"vault": APPS}])
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]) as op:
        await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{APPS}/items/db"), namespace)
        await kube.create(
            DEPLOYMENTS,
            workload("Deployment", "web", item_path=f"vaults/{APPS}/items/db", item_name="web-db"),
            namespace,
        )
        await wait_for_data(kube, namespace, "db", DB)
        await wait_for_data(kube, namespace, "web-db", DB)

        await set_policy_namespaces(kube, policy, [f"{namespace}-elsewhere"])
        message = await denied(kube, namespace, "db")
        assert message == (
            f'access revoked: no OnePasswordAccessPolicy grants namespace "{namespace}" access to any vault; '
            f"{KEPT_SUFFIX}"
        )

        async def workload_told() -> bool:
            events = await events_for(kube, namespace, "web")
            return any(e["reason"] == "AccessDenied" and KEPT_SUFFIX in e["message"] for e in events)

        await eventually(workload_told, message="no AccessDenied Event about the revoked workload Secret")

        # 1Password changes: the kept Secrets do not follow, and the item is not fetched (nor by the poller)
        fetched = emulator.request_counts.get(backend.get_item, 0)
        emulator.update_item(APPS, "db", fields={"password": "rotated"})
        await op.wait_for_polls(2)
        await op.settled()
        assert decoded(await kube.get(SECRETS, "db", namespace)) == DB
        assert decoded(await kube.get(SECRETS, "web-db", namespace)) == DB
        assert emulator.request_counts.get(backend.get_item, 0) == fetched

        # granted again: updates resume at once
        await set_policy_namespaces(kube, policy, [namespace])
        await wait_for_data(kube, namespace, "db", {"password": "rotated"})
        await wait_for_data(kube, namespace, "web-db", {"password": "rotated"})
        await wait_for_ready(kube, namespace, "db", "True", "Synced")


async def test_every_extra_item_of_a_shaped_secret_is_authorized(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, grant: Grant
) -> None:
    """``spec.extraItems`` (docs/shaping.md): an extra item from a vault the namespace may not sync denies
    the whole Secret, naming that vault."""
    await grant("apps", namespaces={"names": [namespace]}, vaults=[{"vault": APPS}])
    shaped = opi("mixed", f"vaults/{APPS}/items/db")
    shaped["spec"]["extraItems"] = [{"itemPath": f"vaults/{OTHER}/items/db", "prefix": "other-"}]
    async with run_operator(control_plane, emulator, namespaces=[namespace]):
        await kube.create(ONEPASSWORDITEMS, shaped, namespace)
        message = await denied(kube, namespace, "mixed")
        assert await get_or_none(kube, SECRETS, "mixed", namespace) is None
    assert f'vault "{OTHER}"' in message


async def test_an_item_connect_returns_from_another_vault_than_asked_for_is_denied(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, grant: Grant
) -> None:
    """Connect answers ``GET /v1/vaults/<apps>/items/<db>`` with the ``db`` item of another vault (both vaults
    granted): the item is refused, since the policy decision was made for the vault asked for."""
    await grant("both", namespaces={"names": [namespace]}, vaults=[{"vault": APPS}, {"vault": OTHER}])
    apps, other = emulator.vault_id(APPS), emulator.vault_id(OTHER)
    asked, answered = emulator.get_item(APPS, "db"), emulator.get_item(OTHER, "db")
    headers = {"Authorization": f"Bearer {emulator.token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.get(f"{emulator.url}/v1/vaults/{other}/items/{answered.id}") as answer,
    ):
        body = await answer.text()
    await emulator.set_faults(body=body, match=f"^/v1/vaults/{apps}/items/{asked.id}$")
    async with run_operator(control_plane, emulator, namespaces=[namespace]) as op:
        await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{APPS}/items/db"), namespace)
        message = await denied(kube, namespace, "db")
        assert message == (
            f'Connect returned item "db" from vault "{other}", not from vault "{apps}" that the path resolved to'
        )
        await op.settled()
        assert await get_or_none(kube, SECRETS, "db", namespace) is None


POLICY_CRD = Path(__file__).parents[3] / "crds" / "onepassword.com_onepasswordaccesspolicies.yaml"


async def _crd_gone(kube: Client) -> bool:
    return await get_or_none(kube, CRDS, POLICY_CRD_NAME, "") is None


async def _policies_served(kube: Client) -> bool:
    try:
        await kube.list(ONEPASSWORDACCESSPOLICIES)
    except (NotFoundError, TooManyRequestsError):  # the API server is still setting up the CRD's storage
        return False
    return True


@contextlib.asynccontextmanager
async def policy_crd_restored(kube: Client) -> AsyncIterator[None]:
    """Whatever the test does to the policy CRD, it is installed and served again afterwards (shared plane)."""
    try:
        yield
    finally:
        if await _crd_gone(kube):
            await kube.create(CRDS, yaml.safe_load(POLICY_CRD.read_text()))
        await eventually(lambda: _policies_served(kube), timeout=60, message="the policy CRD is not served again")


POLICY_CRD_NAME = "onepasswordaccesspolicies.onepassword.com"


async def test_losing_the_policy_crd_never_syncs_a_denied_item_even_across_a_restart(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, grant: Grant
) -> None:
    """Issue 16: deleting the policy CRD (which deletes every policy with it) used to read as "no policy:
    allow everything", and the denied item got its Secret. Now: deny all once policies were seen, and after a
    restart without the CRD, the item already denied stays denied, until policies are back."""
    await grant("apps", namespaces={"names": [namespace]}, vaults=[{"vault": APPS}])
    async with policy_crd_restored(kube):
        async with run_operator(control_plane, emulator, namespaces=[namespace]) as op:
            await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{APPS}/items/db"), namespace)
            await kube.create(ONEPASSWORDITEMS, opi("other", f"vaults/{OTHER}/items/db"), namespace)
            await wait_for_data(kube, namespace, "db", DB)
            await denied(kube, namespace, "other")

            await kube.delete(CRDS, POLICY_CRD_NAME)
            await eventually(lambda: _crd_gone(kube), timeout=60, message="the policy CRD was not deleted")
            await wait_for_message(kube, namespace, "other", LOST_MESSAGE)
            # the allowed item keeps its Secret (a denial never deletes) but is not updated meanwhile
            await wait_for_message(kube, namespace, "db", f"access revoked: {LOST_MESSAGE}; {KEPT_SUFFIX}")
            await op.settled()
            assert await get_or_none(kube, SECRETS, "other", namespace) is None

        # restarted while the CRD is missing: this process never saw a policy
        async with run_operator(control_plane, emulator, namespaces=[namespace]) as op:
            await wait_for_message(kube, namespace, "other", DENIED_BEFORE_MESSAGE)
            await op.settled()
            assert await get_or_none(kube, SECRETS, "other", namespace) is None

            await kube.create(CRDS, yaml.safe_load(POLICY_CRD.read_text()))
            await eventually(lambda: _policies_served(kube), timeout=60, message="the policy CRD is not served")
            await grant("apps-again", namespaces={"names": [namespace]}, vaults=[{"vault": APPS}])
            await wait_for_message(
                kube,
                namespace,
                "other",
                f'no OnePasswordAccessPolicy grants namespace "{namespace}" access to vault "{OTHER}"',
            )
            await wait_for_ready(kube, namespace, "db", "True", "Synced")
            await op.settled()
            assert await get_or_none(kube, SECRETS, "other", namespace) is None


async def wait_for_message(kube: Client, namespace: str, name: str, message: str) -> None:
    """Wait until the item is denied with exactly ``message``."""
    last: list[str] = []

    async def says() -> bool:
        condition = await ready_condition(kube, namespace, name)
        last[:] = [str((condition or {}).get("message"))]
        return condition is not None and condition["reason"] == "AccessDenied" and condition["message"] == message

    await eventually(says, timeout=60, message=lambda: f"{name}: {last} is not {message!r}")


async def test_access_policy_required_denies_everything_without_a_policy(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator
) -> None:
    async with run_operator(control_plane, emulator, namespaces=[namespace], access_policy="required") as op:
        before = dict(emulator.request_counts)
        await kube.create(ONEPASSWORDITEMS, opi("db", f"vaults/{APPS}/items/db"), namespace)
        assert await denied(kube, namespace, "db") == REQUIRED_MESSAGE
        await op.settled()
        assert dict(emulator.request_counts) == before  # refused before asking Connect
        assert await get_or_none(kube, SECRETS, "db", namespace) is None


async def test_a_vault_no_policy_lists_is_refused_before_fetching_and_files_after_authorizing(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, grant: Grant
) -> None:
    """The vault as written is checked before Connect is asked anything about the item; a resolved item that
    is denied (by its tags) never has its files downloaded."""
    emulator.add_item(OTHER, {"title": "cert", "files": [{"name": "key.pem", "content": "other-file"}]})
    await grant("other", namespaces={"names": [namespace]}, vaults=[{"vault": OTHER, "tags": ["never"]}])
    async with run_operator(control_plane, emulator, namespaces=[namespace]) as op:
        before = dict(emulator.request_counts)
        await kube.create(ONEPASSWORDITEMS, opi("apps", f"vaults/{APPS}/items/db"), namespace)
        assert f'vault "{APPS}"' in await denied(kube, namespace, "apps")
        await op.settled()
        assert dict(emulator.request_counts) == before

        await kube.create(ONEPASSWORDITEMS, opi("cert", f"vaults/{OTHER}/items/cert"), namespace)
        assert "only items tagged never" in await denied(kube, namespace, "cert")
        await op.settled()
        asked = {route for route, count in emulator.request_counts.items() if count != before.get(route, 0)}
        assert asked and not any(route.endswith("/content") for route in asked), asked
