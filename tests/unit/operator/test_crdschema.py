"""Judging the served OnePasswordItem CRD, and learning what the API server drops from an item's status."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from controllers.crdschema import (
    OPSYNC_FIELDS,
    OPSYNC_SPEC_FIELDS,
    ServedCrd,
    ServedStatus,
    dropped_spec_fields,
    dropped_status_fields,
)
from tests.support.upstream import CONNECT_CHART, GO_OPERATOR_CRD, upstream

REPO = Path(__file__).resolve().parents[3]


def load(path: Path) -> dict[str, object]:
    (crd,) = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return dict(crd)


def test_opsyncs_crd_keeps_every_status_and_shaping_field() -> None:
    crd = load(REPO / "crds/onepassword.com_onepassworditems.yaml")
    assert (dropped_status_fields(crd), dropped_spec_fields(crd)) == ((), ())
    assert not ServedCrd((), dropped_spec=()).outdated


@pytest.mark.parametrize("path", [GO_OPERATOR_CRD, f"{CONNECT_CHART}/crds/onepassworditem-crd.yaml"])
def test_1passwords_crds_drop_reason_observed_generation_and_last_sync_time(path: str) -> None:
    crd = load(upstream() / path)

    assert dropped_status_fields(crd) == OPSYNC_FIELDS
    message = ServedCrd(dropped_status_fields(crd)).describe()
    assert "status.conditions[].reason, status.conditions[].observedGeneration, status.lastSyncTime" in message
    assert "kubectl apply --server-side --force-conflicts -f crds/onepassword.com_onepassworditems.yaml" in message


@pytest.mark.parametrize("path", [GO_OPERATOR_CRD, f"{CONNECT_CHART}/crds/onepassworditem-crd.yaml"])
def test_1passwords_crds_prune_the_shaping_fields_and_opsync_says_so(path: str) -> None:
    crd = load(upstream() / path)

    assert dropped_spec_fields(crd) == OPSYNC_SPEC_FIELDS
    found = ServedCrd(dropped_status_fields(crd), dropped_spec=dropped_spec_fields(crd))
    assert found.outdated
    assert "spec.fieldMapping, spec.onlyMapped" in found.describe()
    assert "items cannot shape their Secrets" in found.describe()


def test_preserved_unknown_fields_and_unserved_versions() -> None:
    open_status = {"properties": {"status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}
    version = {"name": "v1", "served": True, "schema": {"openAPIV3Schema": open_status}}
    assert dropped_status_fields({"spec": {"versions": [version]}}) == ()
    assert dropped_status_fields({"spec": {"versions": [{**version, "served": False}]}}) == OPSYNC_FIELDS


def test_served_status_compares_what_survives_and_learns_from_the_stored_status() -> None:
    served = ServedStatus()
    condition = {"type": "Ready", "status": "False", "reason": "ConnectUnavailable", "message": "m"}
    assert served.condition(condition) == condition

    stored = {"conditions": [{"type": "Ready", "status": "False", "message": "m"}]}
    learnt = served.learn({"conditions": [condition], "lastSyncTime": "2026-01-01T00:00:00Z"}, stored)

    assert learnt == {"conditions[].reason", "lastSyncTime"}
    assert served.condition(condition) == stored["conditions"][0]
    assert not served.keeps("lastSyncTime")
    assert served.learn({"conditions": [condition]}, stored) == frozenset()  # known already: nothing new
    # The CRD was upgraded meanwhile: a stored reason is kept again.
    assert served.learn({"conditions": [condition]}, {"conditions": [condition]}) == frozenset()
    assert served.condition(condition) == condition
