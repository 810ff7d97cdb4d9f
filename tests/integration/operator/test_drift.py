"""Drift repair: managed Secrets deleted or edited by hand are put back at once, without asking Connect."""

from __future__ import annotations

import pytest

from controllers.constants import ITEM_VERSION_ANNOTATION, MANAGED_LABEL
from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client
from opsync.envtest import ControlPlane
from opsync.resources import DEPLOYMENTS, SECRETS
from tests.support.harness import BackendKind, Vaults, eventually, run_operator
from tests.support.objects import opi, wait_for_data, workload

pytestmark = pytest.mark.integration

VAULT = "k8s"
DB_PATH = f"vaults/{VAULT}/items/db"
DATA = {"username": "admin", "password": "s3cret"}


@pytest.fixture
def vaults() -> Vaults:
    fields = [{"label": "username", "value": "admin"}, {"label": "password", "value": "s3cret"}]
    return {VAULT: [{"title": "db", "fields": fields}]}


@pytest.mark.parametrize("producer", ["item", "workload"])
async def test_deleted_and_edited_secrets_are_put_back(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, producer: str, backend: BackendKind
) -> None:
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace], polling_interval=3600) as op:
        if producer == "item":
            await kube.create(ONEPASSWORDITEMS, opi("db", DB_PATH), namespace)
        else:
            await kube.create(DEPLOYMENTS, workload("Deployment", "web", item_path=DB_PATH, item_name="db"), namespace)
        await op.caught_up([await wait_for_data(kube, namespace, "db", DATA)])
        fetches = emulator.request_counts[backend.get_item]

        await kube.delete(SECRETS, "db", namespace)
        await wait_for_data(kube, namespace, "db", DATA)

        await kube.patch(SECRETS, "db", {"data": {"password": "aGFja2Vk", "extra": "eA=="}}, namespace)
        await wait_for_data(kube, namespace, "db", DATA)

        edit = {"metadata": {"labels": {MANAGED_LABEL: None}, "annotations": {ITEM_VERSION_ANNOTATION: "0"}}}
        await kube.patch(SECRETS, "db", edit, namespace)
        # without the label the Secret leaves opsync's cache; its producer finds it again by name

        async def restored() -> bool:
            meta = (await kube.get(SECRETS, "db", namespace))["metadata"]
            labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
            return labels.get(MANAGED_LABEL) == "true" and annotations.get(ITEM_VERSION_ANNOTATION) != "0"

        await eventually(restored, message="opsync's label and annotations were not put back")
        await op.settled()
    assert emulator.request_counts[backend.get_item] == fetches  # the item had not changed: 1Password was not asked


async def test_foreign_metadata_is_kept(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, backend: BackendKind
) -> None:
    """Unlike the Go operator, labels and annotations other tools add to a managed Secret survive."""
    async with run_operator(control_plane, emulator, backend, namespaces=[namespace]) as op:
        await kube.create(ONEPASSWORDITEMS, opi("db", DB_PATH), namespace)
        await wait_for_data(kube, namespace, "db", DATA)
        added = {"metadata": {"labels": {"team": "a"}, "annotations": {"reloader.stakater.com/match": "true"}}}
        await kube.patch(SECRETS, "db", added, namespace)
        emulator.update_item(VAULT, "db", fields={"password": "n3w"})
        secret = await wait_for_data(kube, namespace, "db", {**DATA, "password": "n3w"})
        await op.settled()
    assert secret["metadata"]["labels"]["team"] == "a"
    assert secret["metadata"]["annotations"]["reloader.stakater.com/match"] == "true"
