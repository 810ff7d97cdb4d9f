"""OnePasswordItem → the Secret of the same name (the Go operator's ``onepassworditem`` controller).

One reconcile: take the item from ``ItemSource`` (Connect only when the item changed or was never fetched),
build the desired Secret (``secretdata``), let ``SecretWriter`` write the difference, and report the outcome
in the ``Ready`` condition. The Secret's controller owner reference to the item makes garbage collection
delete it with the item, so opsync needs no finalizer; the Go operator's finalizer is removed from items it
left behind so they can still be deleted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from controllers.access import AccessControl
from controllers.constants import (
    FINALIZER,
    ITEM_CONTROLLER,
    MANAGED_SELECTOR,
    READY_CONDITION,
    ConditionReason,
    EventReason,
)
from controllers.failures import Failure, classify, rate_limiter, retry_result
from controllers.metrics import ITEMS
from controllers.resources import ONEPASSWORDITEMS
from controllers.secretdata import desired_secret, opi_metadata
from controllers.secrets import SecretWriter, opi_owner_reference
from controllers.source import ItemSource
from controllers.watch import spec_or_metadata_changed
from opsync.client import AlreadyExistsError, ApiError, ConflictError, NotFoundError
from opsync.controller import Builder, Controller, Request, Result
from opsync.events import EventRecorder
from opsync.informer import Informer
from opsync.manager import Manager
from opsync.resources import SECRETS, KubeObject

log = logging.getLogger(__name__)

SYNCED_MESSAGE = "the Secret is in sync with the 1Password item"
UNCHECKED_MESSAGE = "the Secret holds the 1Password item as last read; opsync could not check the item"
_WRITTEN = {"create": "created", "update": "updated", "takeover": "taken over", "repair": "repaired"}


def rfc3339(when: datetime) -> str:
    """``when`` as the API server writes times (seconds, UTC)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_rfc3339() -> str:
    """The current time as the API server writes it."""
    return rfc3339(datetime.now(UTC))


def ready_condition(previous: KubeObject | None, status: str, reason: str, message: str, generation: int) -> KubeObject:
    """The ``Ready`` condition; ``lastTransitionTime`` moves only when ``status`` does."""
    unchanged = previous is not None and previous.get("status") == status and previous.get("lastTransitionTime")
    return {
        "type": READY_CONDITION,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": previous["lastTransitionTime"] if unchanged and previous else now_rfc3339(),
    }


def _ready(opi: KubeObject) -> KubeObject | None:
    for condition in (opi.get("status") or {}).get("conditions") or []:
        if condition.get("type") == READY_CONDITION:
            found: KubeObject = condition
            return found
    return None


@dataclass(frozen=True, slots=True)
class ItemOptions:
    allow_empty_values: bool = False
    enable_annotations: bool = False


class ItemReconciler:
    """Reconciles one OnePasswordItem; see the module docstring."""

    def __init__(
        self, manager: Manager, source: ItemSource, writer: SecretWriter, options: ItemOptions, access: AccessControl
    ) -> None:
        self.items: Informer = manager.cache.informer(ONEPASSWORDITEMS)
        self._client = manager.client
        self._source = source
        self.access = access
        self._writer = writer
        self._options = options
        self._events: EventRecorder = manager.event_recorder("opsync")
        self._states: dict[Request, tuple[str, str]] = {}  # for the opsync_items gauge

    async def reconcile(self, request: Request) -> Result | None:
        opi = self.items.get(request.namespace, request.name)
        if opi is None:
            self._record_state(request, None)
            return None
        try:
            if FINALIZER in (opi["metadata"].get("finalizers") or []):
                opi = await self._remove_finalizer(opi)
            if opi["metadata"].get("deletionTimestamp"):
                return None  # the garbage collector deletes the Secret once the item is gone
            return await self._sync(request, opi)
        except (ConflictError, AlreadyExistsError, NotFoundError):
            # Raced with another writer, or the item or Secret went away meanwhile: the cache is behind.
            # Try again once it has caught up (a vanished item then simply ends the reconcile).
            return Result(requeue=True)
        except ApiError as err:  # writing the item itself (finalizer, status) was refused
            log.warning("could not update the OnePasswordItem: %s", err)
            self._events.event(opi, "Warning", EventReason.RECONCILE_ERROR, f"opsync could not update this item: {err}")
            return Result(requeue=True)

    async def _sync(self, request: Request, opi: KubeObject) -> Result | None:
        name, namespace = request.name, request.namespace
        try:
            path = str((opi.get("spec") or {}).get("itemPath") or "")
            kept = self._writer.secrets.get(namespace, name) is not None
            previous = _ready(opi)
            denied_before = previous is not None and previous.get("reason") == ConditionReason.ACCESS_DENIED
            self.access.admit(namespace, path, kept=kept, denied_before=denied_before)
            resolved, item = await self._source.get(
                path, lambda found: self.access.authorize(namespace, path, found, kept=kept)
            )
            desired = desired_secret(
                name=name,
                namespace=namespace,
                item=item,
                secret_type=str(opi.get("type") or ""),
                metadata=opi_metadata(opi, enable_annotations=self._options.enable_annotations),
                owner_references=[opi_owner_reference(opi)],
                allow_empty=self._options.allow_empty_values,
            )
            written = await self._writer.write(desired.secret, keep_data=item.ignores_secret, for_item=True)
        except (ConflictError, AlreadyExistsError, NotFoundError):
            raise
        except Exception as err:
            failure = classify(err)
            if failure is None:
                raise
            await self._report_failure(request, opi, failure)
            return retry_result(failure)
        if written.reason is not None:
            verb = _WRITTEN[written.reason]
            log.info("secret %s", verb, extra={"secret": name, "itemVersion": item.version})
            self._events.event(
                opi, "Normal", EventReason.SYNCED, f'Secret "{name}" {verb} from item version {item.version}'
            )
            if desired.warnings:
                self._events.event(opi, "Warning", EventReason.DATA_WARNING, "; ".join(desired.warnings))
        reason, message = ConditionReason.SYNCED, SYNCED_MESSAGE
        unchecked = self._source.unchecked(resolved.vault_id)
        if unchecked is not None:  # in sync with the item as last read; whether it changed since is unknown
            since, why = unchecked
            reason = ConditionReason.CONNECT_UNAVAILABLE
            message = f"{UNCHECKED_MESSAGE} since {rfc3339(since)}: {why}"
        await self._set_status(opi, "True", reason, message, synced=written.data_changed)
        self._record_state(request, ("true", reason))
        return None

    async def _report_failure(self, request: Request, opi: KubeObject, failure: Failure) -> None:
        log.warning("sync failed: %s", failure.message, extra={"reason": str(failure.reason)})
        self._events.event(opi, "Warning", failure.event_reason, failure.event_message)
        await self._set_status(opi, "False", failure.reason, failure.message, synced=False)
        self._record_state(request, ("false", failure.reason))

    async def _set_status(self, opi: KubeObject, status: str, reason: str, message: str, *, synced: bool) -> None:
        """Patch the status subresource, only when the condition (or the sync time) changes."""
        current: dict[str, Any] = opi.get("status") or {}
        previous = _ready(opi)
        condition = ready_condition(previous, status, reason, message, int(opi["metadata"].get("generation") or 0))
        patch: dict[str, Any] = {}
        if [condition] != (current.get("conditions") or []):
            patch["conditions"] = [condition]
        if synced or (status == "True" and not current.get("lastSyncTime")):
            patch["lastSyncTime"] = now_rfc3339()
        if not patch:
            return
        meta = opi["metadata"]
        await self._client.patch(
            ONEPASSWORDITEMS, meta["name"], {"status": patch}, meta["namespace"], subresource="status"
        )

    async def _remove_finalizer(self, opi: KubeObject) -> KubeObject:
        """Drop the Go operator's finalizer (opsync relies on garbage collection instead)."""
        meta = opi["metadata"]
        kept = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
        patch = {"metadata": {"finalizers": kept, "resourceVersion": meta["resourceVersion"]}}
        log.info("removing the 1Password operator's finalizer")
        return await self._client.patch(ONEPASSWORDITEMS, meta["name"], patch, meta["namespace"])

    def _record_state(self, request: Request, state: tuple[str, str] | None) -> None:
        if state is None:
            self._states.pop(request, None)
        elif self._states.get(request) == state:
            return
        else:
            self._states[request] = state
        counts: dict[tuple[str, str], int] = {}
        for value in self._states.values():
            counts[value] = counts.get(value, 0) + 1
        ITEMS.clear()
        for (ready, reason), count in counts.items():
            ITEMS.labels(ready=ready, reason=reason).set(count)


def setup_items(manager: Manager, reconciler: ItemReconciler, *, workers: int) -> Controller:
    """The ``onepassworditem`` controller: items, and the managed Secret of the same name (drift repair)."""

    def item_of_secret(secret: KubeObject) -> list[Request]:
        request = Request.of(secret)
        return [request] if reconciler.items.get(request.namespace, request.name) is not None else []

    controller = (
        Builder(manager, ITEM_CONTROLLER)
        .for_(ONEPASSWORDITEMS, predicates=[spec_or_metadata_changed()])
        .watches(SECRETS, item_of_secret, label_selector=MANAGED_SELECTOR)
        .with_options(workers=workers, rate_limiter=rate_limiter())
        .complete(reconciler)
    )
    reconciler.access.trigger(controller, lambda namespace: [Request.of(o) for o in reconciler.items.list(namespace)])
    return controller
