"""The operator's metrics that are not plain counters: the per-item condition series and the poll timestamp
that stays absent until set (so a standby replica has none), and Connect endpoints as labels without ids."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from controllers import metrics
from controllers.metrics import endpoint_template
from opsync.reconcile import Request


def item_series(registry: CollectorRegistry, namespace: str, name: str) -> dict[str, float]:
    found = {}
    for status in ("True", "False"):
        labels = {"namespace": namespace, "name": name, "condition": "Ready", "status": status}
        value = registry.get_sample_value("opsync_item_condition", labels)
        if value is not None:
            found[status] = value
    return found


def test_an_item_has_one_series_per_status_set_to_the_status_it_has_until_it_is_gone() -> None:
    registry, states = CollectorRegistry(), metrics._ItemStates()
    registry.register(states)
    held: dict[Request, metrics.ItemState] = {}
    states.track(held)
    db = Request("unit-ns", "db")
    held[db] = ("true", "Synced")
    assert item_series(registry, "unit-ns", "db") == {"True": 1.0, "False": 0.0}
    held[db] = ("false", "ItemNotFound")
    assert item_series(registry, "unit-ns", "db") == {"True": 0.0, "False": 1.0}
    del held[db]
    assert item_series(registry, "unit-ns", "db") == {}


def test_items_are_counted_by_state() -> None:
    registry, states = CollectorRegistry(), metrics._ItemStates()
    registry.register(states)
    held: dict[Request, metrics.ItemState] = {Request("unit-ns", f"ok-{n}"): ("true", "Synced") for n in range(3)}
    held[Request("unit-ns", "missing")] = ("false", "ItemNotFound")
    states.track(held)
    assert registry.get_sample_value("opsync_items", {"ready": "true", "reason": "Synced"}) == 3
    assert registry.get_sample_value("opsync_items", {"ready": "false", "reason": "ItemNotFound"}) == 1
    assert registry.get_sample_value("opsync_items", {"ready": "false", "reason": "Synced"}) is None


def test_the_poll_timestamp_is_absent_until_set() -> None:
    registry = CollectorRegistry()
    timestamp = metrics._Timestamp("unit_last_thing_timestamp_seconds", "when")
    registry.register(timestamp)
    assert b"unit_last_thing_timestamp_seconds" not in generate_latest(registry)
    timestamp.set(1234.5)
    assert registry.get_sample_value("unit_last_thing_timestamp_seconds") == 1234.5


VAULT, ITEM = "hfnjvi6aymbsnfc2xeeoheizda", "wepiqdxdzncjtnvmv5fegud4qy"


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v1/vaults", "/v1/vaults"),
        (f"/v1/vaults/{VAULT}", "/v1/vaults/{id}"),
        (f"/v1/vaults/{VAULT}/items/{ITEM}", "/v1/vaults/{id}/items/{id}"),
        (f"/v1/vaults/{VAULT}/items/{ITEM}/files/abc/content", "/v1/vaults/{id}/items/{id}/files/{id}/content"),
        ("/health", "/health"),
    ],
)
def test_connect_endpoints_are_labelled_without_ids(path: str, template: str) -> None:
    assert endpoint_template(path) == template
