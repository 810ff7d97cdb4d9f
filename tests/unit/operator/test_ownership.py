"""Owner references of a Secret and which Secrets were made for workloads."""

from __future__ import annotations

from typing import Any

from controllers.merge import made_for_workloads, owner_references
from controllers.workloads import annotated_secret

VAULT, ITEM = "hfnjvi6aymbsnfc2xeeoheizda", "wepiqdxdzncjtnvmv5fegud4qy"


def ref(kind: str, name: str, uid: str, api_version: str = "apps/v1", **flags: bool) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, **flags}


def test_owner_references_replace_producers_and_keep_others() -> None:
    existing = [
        ref("Deployment", "gone", "1"),
        ref("OnePasswordItem", "db", "2", "onepassword.com/v1"),  # the Go operator's, without controller
        ref("Application", "argo", "3", "argoproj.io/v1alpha1"),
    ]
    desired = [ref("OnePasswordItem", "db", "2", "onepassword.com/v1", controller=True, blockOwnerDeletion=True)]
    assert owner_references(existing, desired) == [existing[2], desired[0]]


def test_another_controller_keeps_its_place() -> None:
    existing = [ref("SealedSecret", "db", "9", "bitnami.com/v1alpha1", controller=True)]
    desired = [ref("OnePasswordItem", "db", "2", "onepassword.com/v1", controller=True, blockOwnerDeletion=True)]
    merged = owner_references(existing, desired)
    assert [r.get("controller") for r in merged] == [True, None]


def test_which_secrets_were_made_for_workloads() -> None:
    assert made_for_workloads({"metadata": {"ownerReferences": [ref("StatefulSet", "a", "1")]}})
    assert made_for_workloads({"metadata": {"annotations": {"operator.1password.io/item-name": "x"}}})
    opi_owned = {"metadata": {"ownerReferences": [ref("OnePasswordItem", "db", "2", "onepassword.com/v1")]}}
    assert not made_for_workloads(opi_owned)
    assert not made_for_workloads({"metadata": {}})


def test_item_name_is_sanitised_and_read_from_metadata_before_the_template() -> None:
    workload = {
        "metadata": {"annotations": {"operator.1password.io/item-name": "My Secret"}},
        "spec": {"template": {"metadata": {"annotations": {"operator.1password.io/item-name": "other"}}}},
    }
    assert annotated_secret(workload) == "my-secret"
    assert annotated_secret({"metadata": {}}) is None
