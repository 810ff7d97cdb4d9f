"""Annotated workloads → Secrets: the ``workload-secrets`` controller and the workload caches it shares.

Workloads (Deployments, StatefulSets, DaemonSets, CronJobs and, where their CRD is installed, Argo Rollouts)
annotated with ``operator.1password.io/item-path`` and ``item-name`` get that Secret, as with the Go operator
(which handles Deployments only), from this module's controller:

``workload-secrets`` (key: namespace/Secret name)
    Makes the Secret from the annotations of the workloads naming it. Several workloads may name one
    Secret, and others may use it without naming it (env, envFrom, volumes, projected volumes, init
    containers). The Go operator gives the Secret one owner reference, to the annotated Deployment, so
    garbage collection deletes it with that Deployment even while others still use it. opsync instead gives
    it a plain owner reference to **every workload that uses it**: the garbage collector deletes it only
    when all of them are gone, and opsync deletes it itself when the last user stops using it (annotation
    removed, reference dropped) while still existing, unless a Job or a bare Pod (one no controller owns)
    still uses it: those are never restarted and get no owner reference, but opsync does not delete a
    Secret under them. If the annotating workloads are gone but others still
    use the Secret, it is kept and stays in sync from its own ``item-path`` annotation (as the Go poller
    did). If several workloads name the Secret with different paths, the oldest workload wins and the
    others get a Warning Event; a OnePasswordItem of the same name always wins over annotations.

    Setting ``opsync.dev/refresh`` to a new value on a workload naming the Secret fetches the item now; the
    value acted on is recorded in the workload's metadata annotation ``opsync.dev/refreshed`` (metadata, so
    that recording it does not roll the workload).

The restart controllers (``controllers.rollouts``) share the workload caches and their indexes too.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from controllers.access import AccessControl
from controllers.constants import (
    DEPLOYMENT_EVENT_COMPONENT,
    ITEM_NAME_ANNOTATION,
    ITEM_PATH_ANNOTATION,
    ITEM_VERSION_ANNOTATION,
    MANAGED_SELECTOR,
    REFRESH_ANNOTATION,
    REFRESHED_ANNOTATION,
    EventReason,
)
from controllers.desired import (
    WORKLOAD_KINDS,
    SecretMetadata,
    desired_from_existing,
    desired_secret,
    operator_annotations,
    workload_metadata,
    workload_owner_reference,
)
from controllers.failures import WRITE_RACES, SecretConflictError, classify, rate_limiter, retry_result
from controllers.fetcher import ItemFetcher
from controllers.merge import made_for_workloads, plan_update
from controllers.resources import ONEPASSWORDITEMS, ROLLOUTS
from controllers.restarts import secret_names_used_by
from controllers.sanitisers import secret_name
from controllers.secretdata import InvalidSecretError
from controllers.secrets import SecretWriter
from controllers.watch import spec_or_metadata_changed
from onepassword_access.resolve import ResolvedItem
from opsync.builder import Builder
from opsync.cache import Cache
from opsync.controller import Controller
from opsync.events import EventRecorder
from opsync.informer import Informer
from opsync.manager import Manager
from opsync.predicate import Predicate
from opsync.reconcile import Request, Result
from opsync.resources import JOBS, PODS, SECRETS, KubeObject, Resource
from opsync.source import Channel

log = logging.getLogger(__name__)

WORKLOAD_SECRETS_CONTROLLER = "workload-secrets"
SECRET_USERS_INDEX = "opsync.dev/secret-users"  # noqa: S105 - an index name
"""Workload index: ``namespace/secret`` for every Secret the workload uses or names in ``item-name``."""
ITEM_NAME_INDEX = "opsync.dev/item-name"
"""Workload index: ``namespace/secret`` for the Secret its ``item-name`` annotation names."""


def annotated_secret(workload: KubeObject) -> str | None:
    """The (sanitised) Secret name the workload's ``item-name`` annotation asks for, if any."""
    raw = operator_annotations(workload).get(ITEM_NAME_ANNOTATION)
    return secret_name(raw) if raw else None


def _key(workload: KubeObject, name: str) -> str:
    return str(Request(workload["metadata"].get("namespace") or "", name))


def _secret_users(workload: KubeObject) -> list[str]:
    names = secret_names_used_by(workload)
    named = annotated_secret(workload)
    if named:
        names.add(named)
    return [_key(workload, name) for name in sorted(names)]


def _item_name(workload: KubeObject) -> list[str]:
    named = annotated_secret(workload)
    return [_key(workload, named)] if named else []


def _secret_requests(workload: KubeObject) -> list[Request]:
    return [Request(*key.split("/", 1)) for key in _secret_users(workload)]


@dataclass(frozen=True, slots=True)
class Workload:
    kind: Resource
    obj: KubeObject

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def display(self) -> str:
        return f"{self.kind.kind} {self.name}"


def bare_pod(pod: KubeObject) -> KubeObject | None:
    """A transform for the Pod cache: Pods no controller owns, their metadata and spec; nothing of the others,
    whose owner's template already says which Secrets they use. The cache holds the Pods someone made by hand,
    not every Pod of every Deployment (about 0.7 KiB each)."""
    meta = {k: v for k, v in (pod.get("metadata") or {}).items() if k != "managedFields"}
    if any(ref.get("controller") for ref in meta.get("ownerReferences") or []):
        return None
    return {
        "apiVersion": pod.get("apiVersion"),
        "kind": pod.get("kind"),
        "metadata": meta,
        "spec": pod.get("spec") or {},
    }


class Workloads:
    """The caches of the workload kinds, indexed by the Secrets they use and name, and of the Jobs and bare
    Pods using Secrets. Create it once, before the controllers that watch these kinds."""

    def __init__(self, cache: Cache) -> None:
        self.informers: dict[Resource, Informer] = {
            kind: cache.informer(kind, optional=kind is ROLLOUTS) for kind in WORKLOAD_KINDS
        }
        # Kinds that use Secrets but are never restarted nor own one: Jobs and bare Pods.
        self.users_only: dict[Resource, Informer] = {
            JOBS: cache.informer(JOBS),
            PODS: cache.informer(PODS, transform=bare_pod),
        }
        for informer in self.informers.values():
            informer.add_indexer(SECRET_USERS_INDEX, _secret_users)
            informer.add_indexer(ITEM_NAME_INDEX, _item_name)
        for informer in self.users_only.values():
            informer.add_indexer(SECRET_USERS_INDEX, _secret_users)

    def used_by_jobs_or_pods(self, namespace: str, secret: str) -> bool:
        """Whether a live Job or bare Pod uses the Secret."""
        key = str(Request(namespace, secret))
        return any(
            not obj["metadata"].get("deletionTimestamp")
            for informer in self.users_only.values()
            for obj in informer.by_index(SECRET_USERS_INDEX, key)
        )

    def _find(self, index: str, namespace: str, name: str) -> list[Workload]:
        key = str(Request(namespace, name))
        return [
            Workload(kind, obj)
            for kind, informer in self.informers.items()
            for obj in informer.by_index(index, key)
            if not obj["metadata"].get("deletionTimestamp")
        ]

    def users(self, namespace: str, secret: str) -> list[Workload]:
        """Live workloads that use or name the Secret."""
        return self._find(SECRET_USERS_INDEX, namespace, secret)

    def naming(self, namespace: str, secret: str) -> list[Workload]:
        """Live workloads whose ``item-name`` names the Secret, oldest first."""
        found = self._find(ITEM_NAME_INDEX, namespace, secret)
        order = {kind: rank for rank, kind in enumerate(WORKLOAD_KINDS)}
        return sorted(found, key=lambda w: (w.obj["metadata"].get("creationTimestamp") or "", order[w.kind], w.name))


def refresh_asked(workload: KubeObject) -> str | None:
    """A workload's ``opsync.dev/refresh`` value when it differs from the one recorded as acted on."""
    annotations = (workload.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(REFRESH_ANNOTATION) or None
    return None if value is None or value == annotations.get(REFRESHED_ANNOTATION) else str(value)


@dataclass(frozen=True, slots=True)
class WorkloadOptions:
    allow_empty_values: bool = False
    auto_restart: bool = False


class WorkloadSecretReconciler:
    """Reconciles one Secret named by workload annotations; see the module docstring."""

    def __init__(
        self,
        manager: Manager,
        workloads: Workloads,
        fetcher: ItemFetcher,
        writer: SecretWriter,
        options: WorkloadOptions,
        *,
        access: AccessControl,
    ) -> None:
        self._workloads = workloads
        self._client = manager.client
        self._items = manager.cache.informer(ONEPASSWORDITEMS)
        self._fetcher = fetcher
        self._access = access
        self._writer = writer
        self._options = options
        self._events: EventRecorder = manager.event_recorder(DEPLOYMENT_EVENT_COMPONENT)
        self._client = manager.client

    async def reconcile(self, request: Request) -> Result | None:
        try:
            return await self._reconcile(request.namespace, request.name)
        except WRITE_RACES:
            return Result(requeue=True)  # raced with another writer: try again from the fresher cache

    async def _reconcile(self, namespace: str, name: str) -> Result | None:
        naming = self._workloads.naming(namespace, name)
        if self._items.get(namespace, name) is not None:
            for workload in naming:
                self._events.event(
                    workload.obj,
                    "Warning",
                    EventReason.SECRET_CONFLICT,
                    f'Secret "{name}" belongs to OnePasswordItem "{name}": the {ITEM_PATH_ANNOTATION} '
                    f"annotation of this {workload.kind.kind} is ignored",
                )
            return None
        users = self._workloads.users(namespace, name)
        existing = self._writer.secrets.get(namespace, name)
        if not users:
            if existing is not None and made_for_workloads(existing):
                if self._workloads.used_by_jobs_or_pods(namespace, name):
                    return None  # kept for the Jobs and Pods using it; the last one's deletion comes back here
                await self._writer.delete(existing)
                log.info("deleted the Secret no workload uses any more", extra={"secret": name})
            return None
        source = _source(naming, existing)
        if source is None:
            return None
        if naming:
            self._warn_disagreements(naming)
        path = operator_annotations(source).get(ITEM_PATH_ANNOTATION, "")
        owners = [workload_owner_reference(w.kind, w.obj) for w in sorted(users, key=lambda w: (w.kind.kind, w.name))]
        reported = naming or users
        refreshing = [w for w in naming if refresh_asked(w.obj) is not None]
        try:
            kept = existing is not None
            self._access.admit(namespace, path, kept=kept)
            metadata = workload_metadata(source)  # a Secret's own annotations work too
            authorize = functools.partial(self._access.authorize, namespace, path, kept=kept)
            if not refreshing and await self._unchanged(existing, path, metadata, owners, authorize):
                return None  # in sync with the item as 1Password lists it now: nothing fetched
            _, item = await self._fetcher.get(path, authorize, fresh=bool(refreshing))
            desired = desired_secret(
                name=name,
                namespace=namespace,
                item=item,
                metadata=metadata,
                owner_references=owners,
                allow_empty=self._options.allow_empty_values,
            )
            written = await self._writer.write(desired)
        except Exception as err:
            failure = classify(err)
            if failure is None:
                raise
            log.warning("sync failed: %s", failure.message, extra={"reason": str(failure.reason), "secret": name})
            for workload in reported:
                self._events.event(workload.obj, "Warning", failure.event_reason, failure.event_message)
            return retry_result(failure)
        if written.reason is not None:
            log.info("secret %s", written.reason, extra={"secret": name, "itemVersion": item.version})
            for workload in reported:
                self._events.event(
                    workload.obj,
                    "Normal",
                    EventReason.SYNCED,
                    f'Secret "{name}" synced from item version {item.version} ({written.reason})',
                )
                if desired.warnings:
                    self._events.event(workload.obj, "Warning", EventReason.DATA_WARNING, "; ".join(desired.warnings))
        for workload in refreshing:
            await self._record_refresh(workload)
        return None

    def item_path(self, namespace: str, name: str) -> str | None:
        """The item path a reconcile of the Secret ``name`` fetches, None when it fetches none (a OnePasswordItem
        makes it, or no workload uses it)."""
        if self._items.get(namespace, name) is not None or not self._workloads.users(namespace, name):
            return None
        source = _source(self._workloads.naming(namespace, name), self._writer.secrets.get(namespace, name))
        return None if source is None else operator_annotations(source).get(ITEM_PATH_ANNOTATION) or None

    async def _unchanged(
        self,
        existing: KubeObject | None,
        path: str,
        metadata: SecretMetadata,
        owners: list[KubeObject],
        authorize: Callable[[ResolvedItem], None],
    ) -> bool:
        """Whether the existing Secret is what a sync would write and its item has not changed, told without
        fetching the item (a restart with everything in sync)."""
        if existing is None or self._fetcher.holds_current(path):
            return False  # nothing to compare with, or the held item costs no request anyway
        meta = existing["metadata"]
        try:
            desired = desired_from_existing(
                existing,
                name=meta["name"],
                namespace=meta["namespace"],
                metadata=metadata,
                owner_references=owners,
                allow_empty=self._options.allow_empty_values,
            )
            if desired is None or plan_update(existing, desired) is not None:
                return False
        except (InvalidSecretError, SecretConflictError):
            return False  # the fetch path reports it
        annotations = meta.get("annotations") or {}
        made_from, version = annotations[ITEM_PATH_ANNOTATION], annotations[ITEM_VERSION_ANNOTATION]
        return await self._fetcher.unchanged(path, made_from, version, authorize) is not None

    async def _record_refresh(self, workload: Workload) -> None:
        value = refresh_asked(workload.obj)
        meta = workload.obj["metadata"]
        patch = {"metadata": {"annotations": {REFRESHED_ANNOTATION: value}}}
        await self._client.patch(workload.kind, meta["name"], patch, meta["namespace"])
        self._events.event(
            workload.obj, "Normal", EventReason.REFRESHED, f"fetched the item again ({REFRESH_ANNOTATION}={value!r})"
        )

    def _warn_disagreements(self, naming: list[Workload]) -> None:
        chosen = naming[0]
        path = operator_annotations(chosen.obj).get(ITEM_PATH_ANNOTATION)
        for other in naming[1:]:
            if operator_annotations(other.obj).get(ITEM_PATH_ANNOTATION) != path:
                self._events.event(
                    other.obj,
                    "Warning",
                    EventReason.SECRET_CONFLICT,
                    f"{chosen.display} names the same Secret with another {ITEM_PATH_ANNOTATION}; "
                    f"the oldest workload's path is used",
                )


def _source(naming: list[Workload], existing: KubeObject | None) -> KubeObject | None:
    """What a used Secret is made from: the oldest workload naming it, else (its users remain) the Secret's own
    annotations; None when neither makes it."""
    if naming:
        return naming[0].obj
    if existing is not None and made_for_workloads(existing):
        return existing
    return None


def workload_secret_requests(workloads: Workloads, secrets: Informer, namespace: str | None) -> list[Request]:
    """The keys of the ``workload-secrets`` controller in ``namespace`` (None: everywhere): the Secrets
    workloads name, and the managed Secrets made for workloads (kept in sync from their own annotations)."""
    named = {
        Request(*key.split("/", 1))
        for informer in workloads.informers.values()
        for obj in informer.list(namespace)
        for key in _item_name(obj)
    }
    made = {Request.of(secret) for secret in secrets.list(namespace) if made_for_workloads(secret)}
    return sorted(named | made)


def setup_workloads(
    manager: Manager,
    reconciler: WorkloadSecretReconciler,
    *,
    workloads: Workloads,
    writer: SecretWriter,
    access: AccessControl,
    changes: Channel,
    workers: int,
) -> Controller:
    """Add the workload-secrets controller running ``reconciler`` (the poller fires into ``changes``); return
    it."""
    items = manager.cache.informer(ONEPASSWORDITEMS)

    def unclaimed_secret(secret: KubeObject) -> list[Request]:
        request = Request.of(secret)
        return [] if items.get(request.namespace, request.name) is not None else [request]

    builder = Builder(manager, WORKLOAD_SECRETS_CONTROLLER)
    for kind in WORKLOAD_KINDS:
        builder.watches(kind, _secret_requests, predicates=[spec_or_metadata_changed()])
    builder.watches(SECRETS, unclaimed_secret, label_selector=MANAGED_SELECTOR)
    # An item appearing or disappearing decides who makes a Secret of its name.
    builder.watches(ONEPASSWORDITEMS, lambda opi: [Request.of(opi)], predicates=[Predicate(on_update=lambda *_: False)])
    # Jobs and bare Pods only keep a Secret alive: their creation and deletion matter, not their updates.
    users_only = [Predicate(on_update=lambda *_: False)]
    builder.watches(JOBS, _secret_requests, predicates=users_only)
    builder.watches(PODS, _secret_requests, predicates=users_only, transform=bare_pod)
    builder.watches_source(*access.sources(lambda ns: workload_secret_requests(workloads, writer.secrets, ns)), changes)
    return builder.with_options(workers=workers, rate_limiter=rate_limiter()).complete(reconciler)
