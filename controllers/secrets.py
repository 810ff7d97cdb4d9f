"""Managed Secrets: the label-selected cache, their owner references, and writing them safely.

Both producers (OnePasswordItems and annotated workloads) write Secrets through ``SecretWriter``:

- Only Secrets labelled ``opsync.dev/managed=true`` are cached (``managed_secrets``), so the data of other
  Secrets never sits in opsync's memory. A Secret of the wanted name missing from that cache is read once
  from the API server to learn whose it is: absent (create it), made by the Go operator (take it over: label
  it, add owner references), or someone else's (never touched: ``SecretConflictError``).
- Every managed Secret is watched, so a Secret deleted or edited by hand reaches its producer's reconciler,
  which puts it back (drift repair) without waiting for a poll.
- Owner references of the kinds opsync produces Secrets for (OnePasswordItem, Deployment, StatefulSet,
  DaemonSet) are opsync's to set: they become exactly the desired ones. Other owners are kept.
- Writes are full updates carrying the cached ``resourceVersion``: a Secret changed meanwhile is not
  overwritten blindly (409, retried from the fresh copy).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Literal

from controllers.constants import (
    ITEM_NAME_ANNOTATION,
    ITEM_VERSION_ANNOTATION,
    MANAGED_SELECTOR,
    OPI_API_VERSION,
    OPI_KIND,
    OWNED_METADATA_ANNOTATION,
)
from controllers.failures import SecretConflictError, WorkloadSecretConflictError
from controllers.metrics import SECRET_WRITES
from controllers.secretdata import Ownership, merge_into, secret_differs, secret_ownership
from opsync.cache import Cache
from opsync.client import Client, NotFoundError
from opsync.informer import Informer
from opsync.resources import DAEMONSETS, DEPLOYMENTS, SECRETS, STATEFULSETS, KubeObject, Resource

log = logging.getLogger(__name__)

WORKLOAD_KINDS: tuple[Resource, ...] = (DEPLOYMENTS, STATEFULSETS, DAEMONSETS)
_PRODUCER_KINDS = {("onepassword.com", OPI_KIND)} | {(kind.group, kind.kind) for kind in WORKLOAD_KINDS}

WriteReason = Literal["create", "update", "takeover", "repair"]


def managed_secrets(cache: Cache) -> Informer:
    """The informer of the Secrets opsync manages (selected by label, shared by every controller)."""
    return cache.informer(SECRETS, label_selector=MANAGED_SELECTOR)


def _group(ref: KubeObject) -> str:
    return str(ref.get("apiVersion", "")).rpartition("/")[0]


def is_producer_ref(ref: KubeObject) -> bool:
    """Whether an owner reference points at a kind opsync makes Secrets for."""
    return (_group(ref), ref.get("kind")) in _PRODUCER_KINDS


def opi_owner_reference(opi: KubeObject) -> KubeObject:
    """The controller reference from a Secret to its OnePasswordItem: garbage collection deletes the Secret
    with the item, and foreground deletion of the item waits for it."""
    meta = opi["metadata"]
    return {
        "apiVersion": OPI_API_VERSION,
        "kind": OPI_KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def workload_owner_reference(kind: Resource, workload: KubeObject) -> KubeObject:
    """A plain (non-controller) reference from a shared Secret to one workload that uses it: garbage
    collection deletes the Secret only once every such workload is gone."""
    meta = workload["metadata"]
    return {"apiVersion": kind.api_version, "kind": kind.kind, "name": meta["name"], "uid": meta["uid"]}


def owner_references(existing: list[KubeObject], desired: list[KubeObject]) -> list[KubeObject]:
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


@dataclass(frozen=True, slots=True)
class WriteResult:
    secret: KubeObject = field(repr=False)  # holds the data: kept out of reprs
    """The Secret as written, or as found when nothing needed writing."""
    reason: WriteReason | None
    """Why it was written; None when it already was as desired."""
    data_changed: bool


def made_for_workloads(secret: KubeObject) -> bool:
    """Whether a Secret (managed, or the Go operator's) was made from workload annotations, not for a
    OnePasswordItem."""
    meta = secret.get("metadata") or {}
    refs = meta.get("ownerReferences") or []
    if any(ref.get("kind") == OPI_KIND for ref in refs):
        return False
    kinds = {kind.kind for kind in WORKLOAD_KINDS}
    return any(ref.get("kind") in kinds for ref in refs) or ITEM_NAME_ANNOTATION in (meta.get("annotations") or {})


def _reason(existing: KubeObject, desired: KubeObject) -> WriteReason:
    annotations = (existing.get("metadata") or {}).get("annotations") or {}
    if secret_ownership(existing) is Ownership.LEGACY or OWNED_METADATA_ANNOTATION not in annotations:
        return "takeover"  # the Go operator's Secret, or one a user labelled for opsync to adopt
    wanted = desired["metadata"]["annotations"].get(ITEM_VERSION_ANNOTATION)
    return "update" if annotations.get(ITEM_VERSION_ANNOTATION) != wanted else "repair"


class SecretWriter:
    """Creates, updates and deletes managed Secrets (see the module docstring for the rules)."""

    def __init__(self, client: Client, secrets: Informer) -> None:
        self._client = client
        self.secrets = secrets

    async def existing(self, namespace: str, name: str) -> KubeObject | None:
        """The Secret ``namespace/name`` whoever owns it: from the cache, else read from the API server."""
        cached = self.secrets.get(namespace, name)
        if cached is not None:
            return cached
        try:
            return await self._client.get(SECRETS, name, namespace)
        except NotFoundError:
            return None

    async def write(self, desired: KubeObject, *, keep_data: bool = False, for_item: bool = False) -> WriteResult:
        """Make the Secret match ``desired`` (from ``secretdata.desired_secret``).

        ``keep_data``: an existing Secret keeps its data (the item is tagged ``ignore-secret``); only its
        metadata advances. ``for_item``: written for a OnePasswordItem, which never takes over a Secret made
        for workloads (by opsync or the Go operator): their owner references and data would be lost.
        Raises ``SecretConflictError`` for someone else's Secret, ``SecretTypeImmutableError`` when the type
        would change, and the client's ``ApiError``s (409s are for the caller to retry).
        """
        meta = desired["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        existing = await self.existing(namespace, name)
        if existing is None:
            created = await self._client.create(SECRETS, desired)
            SECRET_WRITES.labels(reason="create").inc()
            return WriteResult(created, "create", True)
        if secret_ownership(existing) is Ownership.FOREIGN:
            raise SecretConflictError(namespace, name)
        if for_item and made_for_workloads(existing):
            raise WorkloadSecretConflictError(namespace, name, existing)
        base = copy.deepcopy(existing)
        base_meta = base.setdefault("metadata", {})
        base_meta["ownerReferences"] = owner_references(
            base_meta.get("ownerReferences") or [], meta.get("ownerReferences") or []
        )
        merged = merge_into(base, desired, keep_data=keep_data)
        if not secret_differs(merged, existing):
            return WriteResult(existing, None, False)
        reason = _reason(existing, desired)
        written = await self._client.replace(SECRETS, merged)
        SECRET_WRITES.labels(reason=reason).inc()
        return WriteResult(written, reason, (existing.get("data") or {}) != (written.get("data") or {}))

    async def delete(self, secret: KubeObject) -> None:
        """Delete ``secret`` if it is still the object seen (same uid and resourceVersion)."""
        meta = secret["metadata"]
        try:
            await self._client.delete(
                SECRETS,
                meta["name"],
                meta["namespace"],
                preconditions={"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]},
            )
        except NotFoundError:
            return
        SECRET_WRITES.labels(reason="delete").inc()
