"""The Ready condition (its transition time moves only with its status) and ``lastSyncTime``."""

from __future__ import annotations

from controllers.crdschema import ServedStatus
from controllers.status import ready_condition, status_patch

VAULT, ITEM = "hfnjvi6aymbsnfc2xeeoheizda", "wepiqdxdzncjtnvmv5fegud4qy"


def test_transition_time_moves_only_with_the_status() -> None:
    first = ready_condition(None, "False", "ItemNotFound", "m", 1)
    first["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    same = ready_condition(first, "False", "VaultNotFound", "other", 2)
    flipped = ready_condition(same, "True", "Synced", "ok", 2)
    assert same["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    assert (same["reason"], same["observedGeneration"]) == ("VaultNotFound", 2)
    assert flipped["lastTransitionTime"] != "2020-01-01T00:00:00Z"


def _synced_item(last_sync: str | None) -> dict[str, object]:
    condition = ready_condition(None, "True", "Synced", "in sync", 1)
    status: dict[str, object] = {"conditions": [condition]}
    if last_sync is not None:
        status["lastSyncTime"] = last_sync
    return {"metadata": {"name": "db", "generation": 1}, "status": status}


def test_first_success_sets_last_sync_time() -> None:
    new = {"metadata": {"name": "db", "generation": 1}}
    patch = status_patch(new, "True", "Synced", "in sync", synced_at=None, served=ServedStatus())
    assert patch is not None
    assert patch.keys() == {"conditions", "lastSyncTime"}


def test_a_data_write_moves_only_last_sync_time() -> None:
    """What ``ItemReconciler`` defers behind the other Secrets: a patch of ``lastSyncTime`` alone."""
    item = _synced_item("2026-01-01T00:00:00Z")
    patch = status_patch(item, "True", "Synced", "in sync", synced_at="2026-02-02T00:00:00Z", served=ServedStatus())
    assert patch == {"lastSyncTime": "2026-02-02T00:00:00Z"}


def test_a_recorded_sync_time_is_not_written_again() -> None:
    item = _synced_item("2026-02-02T00:00:00Z")
    served = ServedStatus()
    assert status_patch(item, "True", "Synced", "in sync", synced_at="2026-02-02T00:00:00Z", served=served) is None
    assert status_patch(item, "True", "Synced", "in sync", synced_at=None, served=served) is None


def test_an_old_crd_gets_no_last_sync_time() -> None:
    """1Password's own CRD drops ``lastSyncTime``: sending it on every data write would be a write for nothing."""
    served = ServedStatus(dropped=["lastSyncTime"])
    item = _synced_item(None)
    assert status_patch(item, "True", "Synced", "in sync", synced_at="2026-02-02T00:00:00Z", served=served) is None
