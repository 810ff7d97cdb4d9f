"""The operator's metrics that are not plain counters: the per-item condition series and the poll timestamp
that stays absent until set (so a standby replica has none), and Connect endpoints as labels without ids."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from controllers import metrics
from controllers.metrics import endpoint_template
from opsync.metrics import REGISTRY


def item_series(namespace: str, name: str) -> dict[str, float]:
    found = {}
    for status in ("True", "False"):
        labels = {"namespace": namespace, "name": name, "condition": "Ready", "status": status}
        value = REGISTRY.get_sample_value("opsync_item_condition", labels)
        if value is not None:
            found[status] = value
    return found


def test_an_item_has_one_series_per_status_set_to_the_status_it_has_until_it_is_gone() -> None:
    metrics.record_item_ready("unit-ns", "db", True)
    assert item_series("unit-ns", "db") == {"True": 1.0, "False": 0.0}
    metrics.record_item_ready("unit-ns", "db", False)
    assert item_series("unit-ns", "db") == {"True": 0.0, "False": 1.0}
    metrics.record_item_ready("unit-ns", "db", None)
    assert item_series("unit-ns", "db") == {}
    metrics.record_item_ready("unit-ns", "never-seen", None)  # forgetting an unknown item is fine
    assert item_series("unit-ns", "never-seen") == {}


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
