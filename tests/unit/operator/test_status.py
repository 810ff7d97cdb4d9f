"""The Ready condition: its transition time moves only with its status."""

from __future__ import annotations

from controllers.status import ready_condition

VAULT, ITEM = "hfnjvi6aymbsnfc2xeeoheizda", "wepiqdxdzncjtnvmv5fegud4qy"


def test_transition_time_moves_only_with_the_status() -> None:
    first = ready_condition(None, "False", "ItemNotFound", "m", 1)
    first["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    same = ready_condition(first, "False", "VaultNotFound", "other", 2)
    flipped = ready_condition(same, "True", "Synced", "ok", 2)
    assert same["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    assert (same["reason"], same["observedGeneration"]) == ("VaultNotFound", 2)
    assert flipped["lastTransitionTime"] != "2020-01-01T00:00:00Z"
