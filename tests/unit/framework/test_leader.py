"""Leader election settings are checked the way client-go checks them (the election itself is tested
against a real control plane in tests/integration/framework/test_manager.py)."""

from __future__ import annotations

from typing import Any

import pytest

from opsync.leader import LeaderElectionConfig, default_identity


def test_defaults_are_client_gos() -> None:
    config = LeaderElectionConfig(name="opsync", namespace="ops")
    assert (config.lease_duration, config.renew_deadline, config.retry_period) == (15.0, 10.0, 2.0)
    assert config.release_on_cancel


def test_identity_is_unique_per_process() -> None:
    first, second = default_identity(), default_identity()
    assert first != second
    assert first.rpartition("_")[0] == second.rpartition("_")[0]  # same host part


@pytest.mark.parametrize(
    "timing",
    [
        {"lease_duration": 10.0, "renew_deadline": 10.0},  # must outlive the renew deadline
        {"renew_deadline": 2.4, "retry_period": 2.0},  # renew deadline must exceed 1.2 x retry period
        {"retry_period": 0.0},
        {"lease_duration": 0.5, "renew_deadline": 0.4, "retry_period": 0.1},  # leases are whole seconds
    ],
)
def test_inconsistent_timing_is_refused(timing: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        LeaderElectionConfig(name="opsync", namespace="ops", **timing)


def test_short_timing_for_tests_is_allowed() -> None:
    LeaderElectionConfig(name="opsync", namespace="ops", lease_duration=2, renew_deadline=1.5, retry_period=0.3)
