"""OnePasswordItem → the Secret of the same name (the Go operator's ``onepassworditem`` controller).

One reconcile: if the existing Secret is known to be in sync without its items (after a restart:
``ItemFetcher.unchanged`` for the item and a shaped one's ``extraItems``, ``desired.desired_from_existing``),
only the status is checked. Otherwise take the
item, and the ``spec.extraItems`` of a shaped one (``controllers.shaping``), from
``ItemFetcher`` (Connect only when an item changed or was never fetched, when the item's spec was edited since
this process last synced it, or when its ``opsync.dev/refresh`` annotation holds a value not acted on yet),
each authorized by the access policies, build the desired Secret (``controllers.desired``), let
``SecretWriter`` write the difference, and report the outcome in the ``Ready`` condition
(``controllers.status``). The Secret's controller owner reference to the item makes garbage collection delete
it with the item, so opsync needs no finalizer; the Go operator's finalizer is removed from items it left
behind so they can still be deleted.

On-demand refresh: the ``opsync.dev/refresh`` value acted on is recorded in ``status.observedRefresh``, so a
restarted opsync does not fetch again for it. 1Password's own CRD (v1.12.0) has no such status field and the
API server drops it; opsync then remembers the value in memory only, says so once (a Warning Event
``OutdatedCRD`` and a log line), and after each restart of opsync acts on the current value once more: one
extra fetch, no rewrite of a Secret already in sync.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from controllers.access import AccessControl
from controllers.constants import (
    ITEM_CONTROLLER,
    ITEM_PATH_ANNOTATION,
    ITEM_VERSION_ANNOTATION,
    MANAGED_SELECTOR,
    REFRESH_ANNOTATION,
    REFRESH_STATUS_FIELD,
    ConditionReason,
    EventReason,
)
from controllers.crdschema import UPGRADE_HINT, ServedStatus
from controllers.desired import (
    desired_from_existing,
    desired_secret,
    opi_metadata,
    opi_owner_reference,
    recorded_extra_items,
)
from controllers.failures import Failure, SecretConflictError, classify, rate_limiter, retry_result, write_refused
from controllers.fetcher import ItemFetcher
from controllers.finalizer import remove_go_finalizer
from controllers.merge import plan_update
from controllers.metrics import ITEM_STATES, ItemState
from controllers.resources import ONEPASSWORDITEMS
from controllers.secretdata import InvalidSecretError
from controllers.secrets import SecretWriter, WriteResult
from controllers.shaping import Shaping, shaping_of
from controllers.status import observed_refresh, ready_of, status_patch
from controllers.watch import spec_or_metadata_changed
from onepassword_access.resolve import ResolvedItem
from opsync.builder import Builder
from opsync.client import ApiError
from opsync.controller import Controller
from opsync.events import EventRecorder
from opsync.informer import Informer
from opsync.manager import Manager
from opsync.predicate import OwnWrites
from opsync.reconcile import Request, Result
from opsync.resources import SECRETS, KubeObject
from opsync.source import Channel
from opsync.timestamps import rfc3339

log = logging.getLogger(__name__)

SYNCED_MESSAGE = "the Secret is in sync with the 1Password item"
UNCHECKED_MESSAGE = "the Secret holds the 1Password item as last read; opsync could not check the item"
_WRITTEN = {"create": "created", "update": "updated", "takeover": "taken over", "repair": "repaired"}


@dataclass(frozen=True, slots=True)
class ItemOptions:
    allow_empty_values: bool = False
    enable_annotations: bool = False


class ItemReconciler:
    """Reconciles one OnePasswordItem; see the module docstring."""

    def __init__(
        self,
        manager: Manager,
        fetcher: ItemFetcher,
        writer: SecretWriter,
        options: ItemOptions,
        access: AccessControl,
        *,
        served: ServedStatus | None = None,
    ) -> None:
        self.items: Informer = manager.cache.informer(ONEPASSWORDITEMS)
        self._client = manager.client
        self._fetcher = fetcher
        self.access = access
        self._writer = writer
        self._options = options
        self._events: EventRecorder = manager.event_recorder("opsync")
        self._states: dict[Request, ItemState] = {}  # for opsync_items, opsync_item_condition and reporting
        ITEM_STATES.track(self._states)
        self._generations: dict[Request, int] = {}  # generation last synced by this process
        self._refreshed: dict[Request, str] = {}  # refresh value last acted on (also when the CRD drops it)
        self._unrecorded_syncs: dict[Request, str] = {}  # Secret data written then, not yet in lastSyncTime
        self._warned_old_crd = False
        self.own_writes = OwnWrites()  # the Secrets this reconciler wrote, until their watch events are seen
        self.served = served or ServedStatus()

    def keep_namespaces(self, namespaces: Sequence[str]) -> None:
        """Forget the items of namespaces no longer watched (``WATCH_NAMESPACE_SELECTOR``): their objects leave
        the cache without delete events, and must leave ``opsync_items`` and ``opsync_item_condition`` too."""
        kept = set(namespaces)
        for request in [r for r in self._states if r.namespace not in kept]:
            self._forget(request)

    def reporting(self, reason: str) -> list[Request]:
        """The items whose last reconcile here ended with ``reason`` (``Ready`` True or False). Kept in memory
        rather than read back from the condition, which an old CRD stores without its reason."""
        return [request for request, state in self._states.items() if state[1] == reason]

    async def reconcile(self, request: Request) -> Result | None:
        opi = self.items.get(request.namespace, request.name)
        if opi is None:
            self._forget(request)
            return None
        try:
            opi = await remove_go_finalizer(self._client, ONEPASSWORDITEMS, opi)
            if opi["metadata"].get("deletionTimestamp"):
                return None  # the garbage collector deletes the Secret once the item is gone
            return await self._sync(request, opi)
        except ApiError as err:  # a write race, or writing the item itself (finalizer, status) was refused
            return write_refused(self._events, opi, err, what="item")

    async def _sync(self, request: Request, opi: KubeObject) -> Result | None:
        name, namespace = request.name, request.namespace
        try:
            spec = opi.get("spec") or {}
            path = str(spec.get("itemPath") or "")
            shaping = shaping_of(spec)
            kept = self._writer.secrets.get(namespace, name) is not None
            previous = ready_of(opi)
            denied_before = previous is not None and previous.get("reason") == ConditionReason.ACCESS_DENIED
            self.access.admit(namespace, path, kept=kept, denied_before=denied_before)
            generation = int(opi["metadata"].get("generation") or 0)
            refresh = self._refresh_asked(request, opi)
            edited = self._generations.get(request, generation) != generation
            fresh = edited or refresh is not None
            authorize = functools.partial(self.access.authorize, namespace, path, kept=kept)
            unchanged = None if fresh else await self._unchanged(opi, path, shaping, authorize, kept=kept)
            written: WriteResult | None = None
            if unchanged is not None:
                resolved = unchanged  # in sync with the item as 1Password lists it now: nothing fetched
            else:
                resolved, item = await self._fetcher.get(path, authorize, fresh=fresh)
                extra_items = []
                for extra in shaping.extra_items if shaping is not None else ():
                    _, extra_item = await self._fetcher.get(
                        extra.item_path,
                        functools.partial(self.access.authorize, namespace, extra.item_path, kept=kept),
                        fresh=fresh,
                    )
                    extra_items.append(extra_item)
                desired = desired_secret(
                    name=name,
                    namespace=namespace,
                    item=item,
                    secret_type=str(opi.get("type") or ""),
                    metadata=opi_metadata(opi, enable_annotations=self._options.enable_annotations),
                    owner_references=[opi_owner_reference(opi)],
                    allow_empty=self._options.allow_empty_values,
                    shaping=shaping,
                    extra_items=extra_items,
                )
                written = await self._writer.write(desired)
        except Exception as err:
            failure = classify(err)
            if failure is None:
                raise
            await self._report_failure(request, opi, failure)
            return retry_result(failure)
        if written is not None and written.reason is not None:
            self.own_writes.record(written.secret, cached=self._writer.secrets.get(namespace, name))
            verb = _WRITTEN[written.reason]
            log.info("secret %s", verb, extra={"secret": name, "itemVersion": resolved.version})
            self._events.event(
                opi, "Normal", EventReason.SYNCED, f'Secret "{name}" {verb} from item version {resolved.version}'
            )
            if desired.warnings:
                self._events.event(opi, "Warning", EventReason.DATA_WARNING, "; ".join(desired.warnings))
        self._generations[request] = generation
        if refresh is not None:
            self._refreshed[request] = refresh
            self._events.event(
                opi, "Normal", EventReason.REFRESHED, f"fetched the item again ({REFRESH_ANNOTATION}={refresh!r})"
            )
        reason, message = ConditionReason.SYNCED, SYNCED_MESSAGE
        unchecked = self._fetcher.unchecked(resolved.vault_id)
        if unchecked is not None:  # in sync with the item as last read; whether it changed since is unknown
            since, why = unchecked
            reason = ConditionReason.CONNECT_UNAVAILABLE
            message = f"{UNCHECKED_MESSAGE} since {rfc3339(since)}: {why}"
        data_written = written is not None and written.data_changed
        if data_written:
            self._unrecorded_syncs[request] = rfc3339()
        await self._set_status(request, opi, "True", reason, message, refreshed=refresh, defer_sync_time=data_written)
        if refresh is not None and not self.served.keeps(REFRESH_STATUS_FIELD):
            self._warn_refresh_not_kept(opi)
        self._record_state(request, ("true", reason))
        return None

    async def _unchanged(
        self,
        opi: KubeObject,
        path: str,
        shaping: Shaping | None,
        authorize: Callable[[ResolvedItem], None],
        *,
        kept: bool,
    ) -> ResolvedItem | None:
        """The item as listed when the existing Secret is what a sync would write and its items (a shaped one's
        ``extraItems`` too) have not changed (no fetch: a restart with everything in sync); None when the items
        must be fetched to tell."""
        meta = opi["metadata"]
        existing = self._writer.secrets.get(meta["namespace"], meta["name"])
        if existing is None or self._fetcher.holds_current(path):
            return None  # nothing to compare with, or the held item costs no request anyway
        ready = ready_of(opi)
        observed = None if ready is None else ready.get("observedGeneration")
        # A shaped Secret's data depends on the whole spec: only a sync of this very generation vouches for it
        # (opsync's CRD keeps observedGeneration; one that drops it drops the shaping fields too).
        synced_generations = (meta.get("generation"),) if shaping is not None else (None, meta.get("generation"))
        if ready is None or ready.get("status") != "True" or observed not in synced_generations:
            return None  # never synced, or the spec changed since the last sync: fetched as for an edit
        try:
            desired = desired_from_existing(
                existing,
                name=meta["name"],
                namespace=meta["namespace"],
                secret_type=str(opi.get("type") or ""),
                metadata=opi_metadata(opi, enable_annotations=self._options.enable_annotations),
                owner_references=[opi_owner_reference(opi)],
                allow_empty=self._options.allow_empty_values,
                shaping=shaping,
            )
            if desired is None or plan_update(existing, desired) is not None:
                return None
        except (InvalidSecretError, SecretConflictError):
            return None  # the fetch path reports it
        annotations = existing["metadata"].get("annotations") or {}
        extras = recorded_extra_items(existing) or {}  # one per spec.extraItems, in order (desired_from_existing)
        for extra, (made_from, version) in zip(shaping.extra_items if shaping else (), extras.items(), strict=True):
            allowed = functools.partial(self.access.authorize, meta["namespace"], extra.item_path, kept=kept)
            if await self._fetcher.unchanged(extra.item_path, made_from, str(version), allowed) is None:
                return None
        return await self._fetcher.unchanged(
            path, annotations[ITEM_PATH_ANNOTATION], annotations[ITEM_VERSION_ANNOTATION], authorize
        )

    def _refresh_asked(self, request: Request, opi: KubeObject) -> str | None:
        """The ``opsync.dev/refresh`` value to act on now, None when there is none or it was acted on."""
        value = (opi["metadata"].get("annotations") or {}).get(REFRESH_ANNOTATION)
        if not value or value in (observed_refresh(opi), self._refreshed.get(request)):
            return None
        return str(value)

    def _warn_refresh_not_kept(self, opi: KubeObject) -> None:
        """Say once that the served CRD drops ``status.observedRefresh`` (1Password's own CRD): known from the
        CRD read at start-up or learnt from a status patch (``ServedStatus``)."""
        if self._warned_old_crd:
            return
        self._warned_old_crd = True
        message = (
            f"the installed OnePasswordItem CRD drops status.{REFRESH_STATUS_FIELD}: {REFRESH_ANNOTATION} values "
            "are remembered in memory only and acted on once more after a restart of opsync; install opsync's CRD"
        )
        log.warning(message)
        self._events.event(opi, "Warning", EventReason.OLD_CRD, message)

    async def _report_failure(self, request: Request, opi: KubeObject, failure: Failure) -> None:
        log.warning("sync failed: %s", failure.message, extra={"reason": str(failure.reason)})
        self._events.event(opi, "Warning", failure.event_reason, failure.event_message)
        await self._set_status(request, opi, "False", failure.reason, failure.message)
        self._record_state(request, ("false", failure.reason))

    async def _set_status(
        self,
        request: Request,
        opi: KubeObject,
        status: str,
        reason: str,
        message: str,
        *,
        refreshed: str | None = None,
        defer_sync_time: bool = False,
    ) -> None:
        """Patch the status subresource, only when something in it changes.

        The comparison is with the condition as the served schema stores it (``self.served``): on an old CRD
        that drops ``reason``, a condition differing only there is not rewritten on every retry.

        ``defer_sync_time``: this reconcile wrote the Secret. When only ``lastSyncTime`` would change, it is
        left to the reconcile that the Secret's own watch event queues: behind every other item still waiting
        for its Secret, so that after a poll that changed hundreds of items their Secrets (and the restarts
        they cause) are written first; the status write, among the API server's dearer ones, comes after. The
        time is the write's, kept in memory meanwhile: should opsync stop in between, the Secret is right and
        ``lastSyncTime`` keeps the sync before."""
        synced_at = self._unrecorded_syncs.get(request)
        patch = status_patch(opi, status, reason, message, synced_at=synced_at, served=self.served, refreshed=refreshed)
        if patch is not None and defer_sync_time and patch.keys() == {"lastSyncTime"}:
            self.own_writes.forget(request.namespace, request.name)  # the reconcile the Secret's echo queues
            return
        if patch is not None:
            meta = opi["metadata"]
            stored = await self._client.patch(
                ONEPASSWORDITEMS, meta["name"], {"status": patch}, meta["namespace"], subresource="status"
            )
            if dropped := self.served.learn(patch, stored.get("status") or {}):
                log.warning(
                    "the API server dropped status.%s from a OnePasswordItem: its CRD is older than opsync's; %s",
                    ", status.".join(sorted(dropped)),
                    UPGRADE_HINT,
                )
        self._unrecorded_syncs.pop(request, None)  # recorded now, or a CRD that cannot keep it

    def _forget(self, request: Request) -> None:
        """Drop what is held about an item that left the cache."""
        self._record_state(request, None)
        self._generations.pop(request, None)
        self._refreshed.pop(request, None)
        self._unrecorded_syncs.pop(request, None)

    def _record_state(self, request: Request, state: ItemState | None) -> None:
        if state is not None and self.items.get(request.namespace, request.name) is None:
            state = None  # it left the cache while this reconcile ran (deleted, or its namespace unselected)
        if state is None:
            self._states.pop(request, None)
        else:
            self._states[request] = state


def setup_items(manager: Manager, reconciler: ItemReconciler, *, changes: Channel, workers: int) -> Controller:
    """The ``onepassworditem`` controller: items, the managed Secret of the same name (drift repair), and
    what the poller fires into ``changes``."""

    def item_of_secret(secret: KubeObject) -> list[Request]:
        request = Request.of(secret)
        return [request] if reconciler.items.get(request.namespace, request.name) is not None else []

    controller = (
        Builder(manager, ITEM_CONTROLLER)
        .for_(ONEPASSWORDITEMS, predicates=[spec_or_metadata_changed()])
        .watches(
            SECRETS, item_of_secret, label_selector=MANAGED_SELECTOR, predicates=[reconciler.own_writes.predicate()]
        )
        .watches_source(*reconciler.access.sources(lambda ns: [Request.of(o) for o in reconciler.items.list(ns)]))
        .watches_source(changes)
        .with_options(workers=workers, rate_limiter=rate_limiter())
        .complete(reconciler)
    )
    return controller
