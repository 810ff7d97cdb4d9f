"""Restarts: which Secrets a workload uses, the auto-restart precedence, and rolling once per change
(the Go operator's test scenarios 9.2 #32-54, #57, listed in docs/compatibility.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from controllers.constants import (
    AUTO_RESTART_ANNOTATION,
    DATA_VERSION_ANNOTATION,
    ITEM_NAME_ANNOTATION,
    ITEM_PATH_ANNOTATION,
    ITEM_VERSION_ANNOTATION,
    LAST_RESTARTED_ANNOTATION,
    RESTART_VERSIONS_ANNOTATION,
)
from controllers.restarts import (
    auto_restart_decision,
    changed_secrets,
    parse_bool,
    plan_restart,
    recorded_versions,
    restart_patch,
    secret_names_used_by,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


@pytest.mark.parametrize("value", ["1", "t", "T", "TRUE", "true", "True", "tRuE"])
def test_go_true_values_in_any_case(value: str) -> None:
    assert parse_bool(value) is True


@pytest.mark.parametrize("value", ["0", "f", "F", "FALSE", "false", "False", "fAlSe"])
def test_go_false_values_in_any_case(value: str) -> None:
    assert parse_bool(value) is False


@pytest.mark.parametrize("value", [None, "", "yes", "no", "on", " true", "2"])
def test_anything_else_is_not_a_bool(value: str | None) -> None:
    assert parse_bool(value) is None


# --- detection (scenarios 32-40) ---------------------------------------------------------------------------------


def workload(pod_spec: dict | None = None, annotations: dict | None = None, kind: str = "Deployment") -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": "web", "namespace": "ns", "resourceVersion": "42", "annotations": annotations or {}},
        "spec": {"template": {"metadata": {"annotations": {"keep": "me"}}, "spec": pod_spec or {}}},
    }


def env_ref(name: str) -> dict:
    return {"name": "X", "valueFrom": {"secretKeyRef": {"name": name, "key": "password"}}}


def test_env_secret_key_ref_and_env_from_are_detected() -> None:  # scenarios 32, 33, 37
    spec = {
        "containers": [
            {"name": "a", "env": [env_ref("from-env"), {"name": "PLAIN", "value": "x"}]},
            {"name": "b", "envFrom": [{"secretRef": {"name": "from-envfrom"}}, {"configMapRef": {"name": "cm"}}]},
        ]
    }
    assert secret_names_used_by(workload(spec)) == {"from-env", "from-envfrom"}


def test_init_and_ephemeral_containers_count() -> None:
    spec = {
        "initContainers": [{"name": "i", "env": [env_ref("init-secret")]}],
        "ephemeralContainers": [{"name": "d", "envFrom": [{"secretRef": {"name": "debug-secret"}}]}],
    }
    assert secret_names_used_by(workload(spec)) == {"init-secret", "debug-secret"}


def test_secret_and_every_projected_source_are_detected() -> None:  # scenarios 36, 39
    spec = {
        "volumes": [
            {"name": "v1", "secret": {"secretName": "volume-secret"}},
            {"name": "v2", "configMap": {"name": "cm"}},  # other volumes do not hide the Secret (Go bug)
            {
                "name": "v3",
                "projected": {
                    "sources": [
                        {"secret": {"name": "projected-1"}},
                        {"configMap": {"name": "cm"}},
                        {"secret": {"name": "projected-2"}},
                    ]
                },
            },
        ]
    }
    assert secret_names_used_by(workload(spec)) == {"volume-secret", "projected-1", "projected-2"}


def test_empty_workload_uses_nothing() -> None:  # scenario 38
    assert secret_names_used_by(workload()) == set()
    assert secret_names_used_by({"metadata": {"name": "x"}}) == set()


def test_metadata_item_name_counts_sanitised_and_template_one_does_not() -> None:  # scenario 45
    assert secret_names_used_by(workload(annotations={ITEM_NAME_ANNOTATION: "My Secret"})) == {"my-secret"}
    in_template = workload()
    in_template["spec"]["template"]["metadata"]["annotations"][ITEM_NAME_ANNOTATION] = "other"
    assert secret_names_used_by(in_template) == set()


@pytest.mark.parametrize("kind", ["StatefulSet", "DaemonSet"])
def test_other_workload_kinds(kind: str) -> None:
    assert secret_names_used_by(workload({"containers": [{"name": "a", "env": [env_ref("s")]}]}, kind=kind)) == {"s"}


# --- precedence (scenarios 48-53, 57, and the fixes) --------------------------------------------------------------


def ar(value: str) -> dict[str, str]:
    return {AUTO_RESTART_ANNOTATION: value}


@pytest.mark.parametrize(
    ("secret", "workload_", "namespace", "default", "restart", "source"),
    [
        (None, None, None, False, False, "default"),  # 48
        (ar("true"), ar("false"), None, False, True, "secret"),  # 49
        (ar("false"), ar("true"), None, True, False, "secret"),  # 50
        (None, ar("true"), None, False, True, "workload"),  # 51
        (None, ar("false"), ar("true"), True, False, "workload"),  # 52
        (None, None, ar("true"), False, True, "namespace"),  # 53, 54
        (None, None, ar("false"), True, False, "namespace"),  # 57
        ({}, {}, {}, True, True, "default"),
        (ar(""), ar(""), ar(""), True, True, "default"),  # empty values do not count
        (None, None, None, True, True, "default"),  # unknown namespace: the global default, not "no" (Go bug)
    ],
)
def test_auto_restart_precedence(secret, workload_, namespace, default, restart, source) -> None:
    decision = auto_restart_decision(secret, workload_, namespace, default)
    assert (decision.restart, decision.source, decision.invalid) == (restart, source, ())


def test_invalid_value_decides_no_and_is_reported() -> None:
    decision = auto_restart_decision(None, ar("yes"), ar("true"), True)
    assert (decision.restart, decision.source) == (False, "workload")
    assert decision.invalid == (
        f"{AUTO_RESTART_ANNOTATION}='yes' on the workload is not true or false; not restarting",
    )


# --- rolling once per change (scenarios 43-47 and the idempotency design) ----------------------------------------


def managed_secret(name: str, version: int, annotations: dict | None = None) -> dict:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "annotations": {
                ITEM_PATH_ANNOTATION: "vaults/v/items/i",
                ITEM_VERSION_ANNOTATION: str(version),
                DATA_VERSION_ANNOTATION: f"vaults/v/items/i@{version}",
                **(annotations or {}),
            },
        }
    }


def apply_merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    result = dict(target)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = apply_merge_patch(result[key], value)
        elif value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


def uses(name: str, annotations: dict | None = None) -> dict:
    return workload({"containers": [{"name": "a", "env": [env_ref(name)]}]}, annotations)


def test_first_sight_records_without_rolling() -> None:
    web = uses("db")
    plan = plan_restart(web, {"db": managed_secret("db", 1)}, None, True, NOW)
    assert not plan.restart and plan.changed == frozenset()
    assert plan.patch == {
        "metadata": {
            "resourceVersion": "42",
            "annotations": {RESTART_VERSIONS_ANNOTATION: '{"db":"vaults/v/items/i@1"}'},
        }
    }


def test_nothing_is_written_for_workloads_nothing_would_restart() -> None:  # scenario 48
    assert plan_restart(uses("db"), {"db": managed_secret("db", 1)}, None, False, NOW).patch is None


def test_a_change_rolls_exactly_once() -> None:  # scenarios 44, 47
    web = apply_merge_patch(
        uses("db"), plan_restart(uses("db"), {"db": managed_secret("db", 1)}, None, True, NOW).patch
    )
    unchanged = plan_restart(web, {"db": managed_secret("db", 1)}, None, True, NOW)
    assert unchanged.patch is None and not unchanged.restart  # 47: same version, nothing

    changed = {"db": managed_secret("db", 2)}
    assert changed_secrets(web, {"db": "vaults/v/items/i@2"}) == {"db"}
    plan = plan_restart(web, changed, None, True, NOW)
    assert plan.restart and plan.changed == {"db"}
    rolled = apply_merge_patch(web, plan.patch)
    template = rolled["spec"]["template"]["metadata"]["annotations"]
    assert template == {"keep": "me", LAST_RESTARTED_ANNOTATION: "2026-01-02T03:04:05Z"}  # 44: others kept
    assert recorded_versions(rolled) == {"db": "vaults/v/items/i@2"}
    again = plan_restart(rolled, changed, None, True, NOW)
    assert again.patch is None and not again.restart


def test_a_change_while_opsync_was_down_still_rolls() -> None:
    recorded = uses("db", {RESTART_VERSIONS_ANNOTATION: '{"db":"vaults/v/items/i@1"}'})
    assert plan_restart(recorded, {"db": managed_secret("db", 5)}, None, True, NOW).restart


def test_detected_through_item_name_and_volume() -> None:  # scenarios 45, 46
    record = {RESTART_VERSIONS_ANNOTATION: '{"db":"vaults/v/items/i@1"}'}
    by_name = workload(annotations={ITEM_NAME_ANNOTATION: "db", **record})
    by_volume = workload({"volumes": [{"name": "v", "secret": {"secretName": "db"}}]}, record)
    for web in (by_name, by_volume):
        used = secret_names_used_by(web)
        assert plan_restart(web, {n: managed_secret(n, 2) for n in used}, None, True, NOW).restart


def test_a_secret_the_workload_does_not_use_does_not_roll_it() -> None:  # scenario 43
    web = workload(
        annotations={ITEM_NAME_ANNOTATION: "other", RESTART_VERSIONS_ANNOTATION: '{"other":"vaults/v/items/i@1"}'}
    )
    used = secret_names_used_by(web)
    secrets = {"db": managed_secret("db", 2), "other": managed_secret("other", 1)}
    plan = plan_restart(web, {n: s for n, s in secrets.items() if n in used}, None, True, NOW)
    assert not plan.restart and plan.changed == frozenset()


def test_auto_restart_off_for_the_changed_secret_records_without_rolling() -> None:  # scenario 50
    web = uses("db", {RESTART_VERSIONS_ANNOTATION: '{"db":"vaults/v/items/i@1"}'})
    plan = plan_restart(web, {"db": managed_secret("db", 2, ar("false"))}, None, True, NOW)
    assert not plan.restart and plan.changed == {"db"}
    assert plan.patch is not None and "spec" not in plan.patch
    assert recorded_versions(apply_merge_patch(web, plan.patch)) == {"db": "vaults/v/items/i@2"}


def test_namespace_and_workload_settings_drive_the_plan() -> None:  # scenarios 51-54
    web = uses("db", {RESTART_VERSIONS_ANNOTATION: '{"db":"vaults/v/items/i@1"}'})
    secrets = {"db": managed_secret("db", 2)}
    assert plan_restart(web, secrets, ar("true"), False, NOW).restart
    assert not plan_restart(web, secrets, ar("false"), True, NOW).restart
    web["metadata"]["annotations"][AUTO_RESTART_ANNOTATION] = "false"
    assert not plan_restart(web, secrets, ar("true"), True, NOW).restart


def test_invalid_values_are_reported_by_the_plan() -> None:
    web = uses("db", {AUTO_RESTART_ANNOTATION: "maybe"})
    plan = plan_restart(web, {"db": managed_secret("db", 1)}, None, True, NOW)
    assert plan.invalid and "'maybe'" in plan.invalid[0]


def test_newly_referenced_secret_does_not_roll_again() -> None:
    web = uses("db", {RESTART_VERSIONS_ANNOTATION: '{"db":"vaults/v/items/i@1"}'})
    web["spec"]["template"]["spec"]["containers"][0]["env"].append(env_ref("new"))
    secrets = {"db": managed_secret("db", 1), "new": managed_secret("new", 9)}
    assert changed_secrets(web, {"db": "vaults/v/items/i@1", "new": "vaults/v/items/i@9"}) == set()
    plan = plan_restart(web, secrets, None, True, NOW)
    assert not plan.restart
    assert recorded_versions(apply_merge_patch(web, plan.patch)) == {
        "db": "vaults/v/items/i@1",
        "new": "vaults/v/items/i@9",
    }


def test_unmanaged_secrets_are_ignored() -> None:
    plain = {"metadata": {"name": "plain", "namespace": "ns"}}
    assert plan_restart(uses("plain"), {"plain": plain}, None, True, NOW).patch is None


def test_go_operator_secrets_without_data_version_are_tracked_by_path_and_version() -> None:
    legacy = {"metadata": {"annotations": {ITEM_PATH_ANNOTATION: "vaults/v/items/i", ITEM_VERSION_ANNOTATION: "3"}}}
    plan = plan_restart(uses("db"), {"db": legacy}, None, True, NOW)
    assert plan.patch is not None
    assert recorded_versions(apply_merge_patch(uses("db"), plan.patch)) == {"db": "vaults/v/items/i@3"}


def test_unreadable_record_counts_as_none() -> None:
    assert recorded_versions(uses("db", {RESTART_VERSIONS_ANNOTATION: "not json"})) is None
    assert recorded_versions(uses("db", {RESTART_VERSIONS_ANNOTATION: "[1]"})) is None


def test_restart_within_the_same_second_still_changes_the_template() -> None:
    web = uses("db")
    web["spec"]["template"]["metadata"]["annotations"][LAST_RESTARTED_ANNOTATION] = "2026-01-02T03:04:05Z"
    patch = restart_patch(web, {"db": "v@2"}, NOW)
    assert patch["spec"]["template"]["metadata"]["annotations"][LAST_RESTARTED_ANNOTATION] == "2026-01-02T03:04:06Z"
    assert patch["metadata"]["resourceVersion"] == "42"
