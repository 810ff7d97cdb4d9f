"""``WATCH_NAMESPACE_SELECTOR``: opsync syncs in the namespaces whose labels match, following label changes.

opsync runs as the chart's ServiceAccount (the chart rendered with ``watchNamespaceSelector`` and applied), so
the RBAC the chart renders for a selector is what these tests exercise.
"""

from __future__ import annotations

import secrets

import pytest

from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client
from opsync.envtest import ControlPlane
from opsync.metrics import REGISTRY
from opsync.resources import NAMESPACES, SECRETS
from tests.integration.chart.test_chart import extra_namespaces, installed_chart
from tests.support.harness import Vaults, run_operator
from tests.support.objects import decoded, get_or_none, opi, wait_for_data
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

VAULT = "k8s"
DB_PATH = f"vaults/{VAULT}/items/db"
OLD, NEW = {"password": "old"}, {"password": "new"}
LABEL = "opsync-test/sync"


@pytest.fixture
def vaults() -> Vaults:
    return {VAULT: [{"title": "db", "fields": [{"label": "password", "value": "old"}]}]}


async def label(kube: Client, namespace: str, value: str | None) -> None:
    await kube.patch(NAMESPACES, namespace, {"metadata": {"labels": {LABEL: value}}})


async def test_namespaces_are_followed_as_their_labels_change(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator
) -> None:
    # A value of its own, so that namespaces other tests label are never selected here.
    value = secrets.token_hex(4)
    selector = f"{LABEL}={value}"
    async with (
        extra_namespaces(kube, 3) as (joining, always, never),
        installed_chart(control_plane, namespace, {"watchNamespaceSelector": selector}) as chart,
    ):
        for where in (joining, always, never):
            await kube.create(ONEPASSWORDITEMS, opi("db", DB_PATH), where)
        await label(kube, always, value)
        await label(kube, never, "another-value")

        async with run_operator(
            control_plane, emulator, kubeconfig=chart.kubeconfig, watch_namespace_selector=selector
        ) as op:
            cache = op.operator.manager.cache
            await wait_for_data(kube, always, "db", OLD)

            # Gaining the label: picked up without a restart.
            await label(kube, joining, value)
            await wait_for_data(kube, joining, "db", OLD)

            series = {"namespace": joining, "name": "db", "condition": "Ready", "status": "True"}

            async def recorded() -> bool:  # Ready is recorded after the Secret is written
                return REGISTRY.get_sample_value("opsync_item_condition", series) == 1.0

            await eventually(recorded, message="the joining namespace's item never showed Ready=True")

            # Losing it: dropped. The Secret stays as it was, and a change in 1Password no longer reaches it.
            await label(kube, joining, None)

            async def dropped() -> bool:
                return joining not in (cache.namespaces or ())

            await eventually(dropped, message=f"opsync kept watching {joining} after its label was removed")
            # ... and so do its items' series (they leave the cache without delete events)
            assert REGISTRY.get_sample_value("opsync_item_condition", series) is None
            emulator.update_item(VAULT, "db", fields={"password": "new"})
            await wait_for_data(kube, always, "db", NEW)  # the change was polled and synced where selected
            await op.settled()

            assert decoded(await get_or_none(kube, SECRETS, "db", joining)) == OLD, "kept, not deleted, not synced"
            assert await get_or_none(kube, SECRETS, "db", never) is None, "an unselected namespace was synced"
