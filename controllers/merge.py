"""Merging the desired Secret into the one that exists: whose it is, what opsync may change, what differs.

``plan_update`` is the one decision between reading a Secret and writing it (``SecretWriter``):

- Whose it is (``secret_ownership``): opsync's (labelled ``opsync.dev/managed=true``), the Go operator's
  (taken over: labelled, given owner references), or someone else's (never touched: ``SecretConflictError``).
  A OnePasswordItem never takes over a Secret made for workloads, by opsync or the Go operator
  (``WorkloadSecretConflictError``): the workloads' owner references and data would be lost.
- What opsync may change (``merge_into``): its data, its type never (immutable), the labels and annotations
  opsync writes, and the owner references of the kinds opsync makes Secrets for (OnePasswordItem, Deployment,
  StatefulSet, DaemonSet), which become exactly the desired ones. Other tools' labels, annotations and owners
  are kept.
- Whether anything differs (``secret_differs``): a Secret already as desired is not written at all.
- Whether the desired data is older (``holds_newer_versions``): 1Password item versions only rise, so data
  read at a lower version of the same item (by ID) than the Secret holds is a stale read (a replica that was
  paused while another took over, a response that overtook a newer one) and is never written over it. The
  resourceVersion precondition alone cannot catch this: the stale data may be paired with a fresh cache.

Pure functions.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from controllers.constants import (
    DATA_VERSION_ANNOTATION,
    DEFAULT_SECRET_TYPE,
    EXTRA_ITEMS_ANNOTATION,
    ITEM_NAME_ANNOTATION,
    ITEM_PATH_ANNOTATION,
    ITEM_VERSION_ANNOTATION,
    MANAGED_LABEL,
    MANAGED_LABEL_VALUE,
    OPI_KIND,
    OWNED_METADATA_ANNOTATION,
    SECRET_TYPE_IMMUTABLE_MESSAGE,
)
from controllers.desired import WORKLOAD_KINDS, DesiredSecret, item_versions, secret_data_version
from controllers.failures import SecretConflictError, WorkloadSecretConflictError
from controllers.secretdata import SecretTypeImmutableError
from opsync.resources import KubeObject

_PRODUCER_KINDS = {("onepassword.com", OPI_KIND)} | {(kind.group, kind.kind) for kind in WORKLOAD_KINDS}

WriteReason = Literal["create", "update", "takeover", "repair"]
"""Why a Secret is written: it is new, its item changed, it was someone else's (the Go operator's, or labelled
for adoption by a user), or it was edited or deleted by hand."""

# --- Whose it is -----------------------------------------------------------------------------------------------


class Ownership(StrEnum):
    MANAGED = "managed"
    """Carries opsync's managed label."""
    LEGACY = "legacy"
    """Made by the Go operator (item-path and item-version annotations, no label): opsync takes it over."""
    FOREIGN = "foreign"
    """Someone else's Secret: opsync must not touch it (report ``SecretConflict``)."""


def secret_ownership(secret: KubeObject) -> Ownership:
    """Who an existing Secret with the wanted name belongs to."""
    meta = secret.get("metadata") or {}
    if (meta.get("labels") or {}).get(MANAGED_LABEL) == MANAGED_LABEL_VALUE:
        return Ownership.MANAGED
    annotations = meta.get("annotations") or {}
    if annotations.get(ITEM_PATH_ANNOTATION) and annotations.get(ITEM_VERSION_ANNOTATION):
        return Ownership.LEGACY
    return Ownership.FOREIGN


def made_for_workloads(secret: KubeObject) -> bool:
    """Whether a Secret (managed, or the Go operator's) was made from workload annotations, not for a
    OnePasswordItem."""
    meta = secret.get("metadata") or {}
    refs = meta.get("ownerReferences") or []
    if any(ref.get("kind") == OPI_KIND for ref in refs):
        return False
    kinds = {kind.kind for kind in WORKLOAD_KINDS}
    return any(ref.get("kind") in kinds for ref in refs) or ITEM_NAME_ANNOTATION in (meta.get("annotations") or {})


def _for_item(desired: KubeObject) -> bool:
    """Whether ``desired`` is a OnePasswordItem's Secret (its owner is the item)."""
    return any(ref.get("kind") == OPI_KIND for ref in desired["metadata"].get("ownerReferences") or [])


# --- What opsync may change ------------------------------------------------------------------------------------


def _group(ref: Mapping[str, Any]) -> str:
    return str(ref.get("apiVersion", "")).rpartition("/")[0]


def is_producer_ref(ref: Mapping[str, Any]) -> bool:
    """Whether an owner reference points at a kind opsync makes Secrets for."""
    return (_group(ref), ref.get("kind")) in _PRODUCER_KINDS


def owner_references(existing: Sequence[KubeObject], desired: Sequence[KubeObject]) -> list[KubeObject]:
    """``existing`` with opsync's producers replaced by ``desired``; other owners kept.

    When another owner already is the controller, the desired references are set without ``controller``
    (the API server allows one controller).
    """
    kept = [dict(ref) for ref in existing if not is_producer_ref(ref)]
    other_controller = any(ref.get("controller") for ref in kept)
    wanted = [dict(ref) for ref in desired]
    if other_controller:
        for ref in wanted:
            ref.pop("controller", None)
    return kept + wanted


def _owned_keys(meta: Mapping[str, Any]) -> dict[str, set[str]]:
    """The label and annotation keys opsync wrote last time (empty for Secrets it has not written)."""
    try:
        owned = json.loads((meta.get("annotations") or {}).get(OWNED_METADATA_ANNOTATION, "{}"))
        return {kind: {str(key) for key in owned.get(kind, [])} for kind in ("labels", "annotations")}
    except (ValueError, AttributeError, TypeError):  # edited by hand into something else: own nothing
        return {"labels": set(), "annotations": set()}


def _same_type(a: str | None, b: str | None) -> bool:
    return (a or DEFAULT_SECRET_TYPE) == (b or DEFAULT_SECRET_TYPE)


def merge_into(existing: KubeObject, desired: KubeObject, *, keep_data: bool = False) -> KubeObject:
    """The object to write: ``existing`` (a copy) with opsync's part replaced by ``desired``'s.

    - ``data`` becomes the desired data, unless ``keep_data`` (an ``ignore-secret`` item whose Secret exists).
    - Labels and annotations: the desired ones are set, the ones opsync wrote before and no longer wants are
      removed, all others (added by other tools) are kept.
    - The data-version annotation only moves when the data changes, so restarts follow data, not versions
      (an ``ignore-secret`` item, or data repaired after a manual edit, restarts nothing).
    - Owner references: ``owner_references``.
    Raises ``SecretTypeImmutableError`` when the types differ (``""`` and ``Opaque`` are equal).
    """
    if not _same_type(existing.get("type"), desired.get("type")):
        raise SecretTypeImmutableError(SECRET_TYPE_IMMUTABLE_MESSAGE)
    merged = copy.deepcopy(existing)
    meta = merged.setdefault("metadata", {})
    wanted = desired["metadata"]
    previously = _owned_keys(existing.get("metadata") or {})
    for kind in ("labels", "annotations"):
        values = {k: v for k, v in (meta.get(kind) or {}).items() if k not in previously[kind] - wanted[kind].keys()}
        meta[kind] = {**values, **wanted[kind]}
    if keep_data or (existing.get("data") or {}) == desired["data"]:
        kept = secret_data_version(existing)
        if kept is not None:
            meta["annotations"][DATA_VERSION_ANNOTATION] = kept
    if not keep_data:
        merged["data"] = dict(desired["data"])
    refs = owner_references(meta.get("ownerReferences") or [], wanted.get("ownerReferences") or [])
    if refs:
        meta["ownerReferences"] = refs
    else:
        meta.pop("ownerReferences", None)
    merged.setdefault("type", desired.get("type"))
    return merged


# --- What differs ------------------------------------------------------------------------------------------


def secret_differs(a: KubeObject, b: KubeObject) -> bool:
    """Whether two Secrets differ in what opsync writes: labels, annotations, owners, data, type."""
    return _comparable(a) != _comparable(b)


def _comparable(secret: KubeObject) -> tuple[Any, ...]:
    meta = secret.get("metadata") or {}
    return (
        meta.get("labels") or {},
        meta.get("annotations") or {},
        meta.get("ownerReferences") or [],
        secret.get("data") or {},
        secret.get("type") or DEFAULT_SECRET_TYPE,
    )


# --- The update ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecretUpdate:
    secret: KubeObject
    """The whole Secret to write over the existing one (it carries the existing ``resourceVersion``)."""
    reason: WriteReason


def plan_update(existing: KubeObject, desired: DesiredSecret) -> SecretUpdate | None:
    """What to write over ``existing`` to make it ``desired``; None when it already is as desired.

    Raises ``SecretConflictError`` for someone else's Secret (``WorkloadSecretConflictError`` for a
    OnePasswordItem's Secret over one made for workloads) and ``SecretTypeImmutableError`` when the type
    would change.
    """
    ownership = secret_ownership(existing)
    meta = desired.secret["metadata"]
    if ownership is Ownership.FOREIGN:
        raise SecretConflictError(meta["namespace"], meta["name"])
    if _for_item(desired.secret) and made_for_workloads(existing):
        raise WorkloadSecretConflictError(meta["namespace"], meta["name"], existing)
    if holds_newer_versions(existing, desired.secret):
        return None
    merged = merge_into(existing, desired.secret, keep_data=desired.keep_data)
    if not secret_differs(merged, existing):
        return None
    return SecretUpdate(merged, _reason(existing, ownership, desired.secret))


def _item_versions(secret: KubeObject) -> dict[str, int]:
    versions = {}
    for path, version in item_versions(secret).items():
        if version.isdigit():
            versions[path] = int(version)
    return versions


def holds_newer_versions(existing: KubeObject, desired: KubeObject) -> bool:
    """Whether ``existing`` was made from a later version of an item ``desired`` was made from."""
    have, want = _item_versions(existing), _item_versions(desired)
    return any(have[path] > version for path, version in want.items() if path in have)


def _reason(existing: KubeObject, ownership: Ownership, desired: KubeObject) -> WriteReason:
    annotations = (existing.get("metadata") or {}).get("annotations") or {}
    if ownership is Ownership.LEGACY or OWNED_METADATA_ANNOTATION not in annotations:
        return "takeover"  # the Go operator's Secret, or one a user labelled for opsync to adopt
    wanted = desired["metadata"]["annotations"]
    versions = (ITEM_VERSION_ANNOTATION, EXTRA_ITEMS_ANNOTATION)  # the main item's, and a shaped Secret's others
    return "update" if any(annotations.get(key) != wanted.get(key) for key in versions) else "repair"
