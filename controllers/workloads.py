"""Annotated workloads → Secrets: the ``workload-secrets`` controller and the workload caches it shares.

Deployments, StatefulSets and DaemonSets annotated with ``operator.1password.io/item-path`` and ``item-name``
get that Secret, as with the Go operator (which handles Deployments only), from this module's controller:

``workload-secrets`` (key: namespace/Secret name)
    Makes the Secret from the annotations of the workloads naming it. Several workloads may name one
    Secret, and others may use it without naming it (env, envFrom, volumes, projected volumes, init
    containers). The Go operator gives the Secret one owner reference, to the annotated Deployment, so
    garbage collection deletes it with that Deployment even while others still use it. opsync instead gives
    it a plain owner reference to **every workload that uses it**: the garbage collector deletes it only
    when all of them are gone, and opsync deletes it itself when the last user stops using it (annotation
    removed, reference dropped) while still existing. If the annotating workloads are gone but others still
    use the Secret, it is kept and stays in sync from its own ``item-path`` annotation (as the Go poller
    did). If several workloads name the Secret with different paths, the oldest workload wins and the
    others get a Warning Event; a OnePasswordItem of the same name always wins over annotations.

The restart controllers (``controllers.rollouts``) share the workload caches and their indexes too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controllers.access import AccessControl
from controllers.constants import (
    DEPLOYMENT_EVENT_COMPONENT,
    ITEM_NAME_ANNOTATION,
    ITEM_PATH_ANNOTATION,
    MANAGED_SELECTOR,
    EventReason,
)
from controllers.desired import (
    WORKLOAD_KINDS,
    desired_secret,
    operator_annotations,
    workload_metadata,
    workload_owner_reference,
)
from controllers.failures import WRITE_RACES, classify, rate_limiter, retry_result
from controllers.fetcher import ItemFetcher
from controllers.merge import made_for_workloads
from controllers.resources import ONEPASSWORDITEMS
from controllers.restarts import pod_spec_secret_names, secret_names_used_by
from controllers.sanitisers import secret_name
from controllers.secrets import SecretWriter
from controllers.watch import spec_or_metadata_changed
from opsync.builder import Builder
from opsync.cache import Cache
from opsync.controller import Controller
from opsync.events import EventRecorder
from opsync.informer import Informer
from opsync.manager import Manager
from opsync.predicate import Predicate
from opsync.reconcile import Request, Result
from opsync.resources import CRONJOBS, JOBS, PODS, SECRETS, KubeObject, Resource
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


class Workloads:
    """The caches of the three workload kinds, indexed by the Secrets they use and name. Create it once."""

    def __init__(self, cache: Cache) -> None:
        self.informers: dict[Resource, Informer] = {kind: cache.informer(kind) for kind in WORKLOAD_KINDS}
        for informer in self.informers.values():
            informer.add_indexer(SECRET_USERS_INDEX, _secret_users)
            informer.add_indexer(ITEM_NAME_INDEX, _item_name)

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

    async def reconcile(self, request: Request) -> Result | None:
        try:
            return await self._reconcile(request.namespace, request.name)
        except WRITE_RACES:
            return Result(requeue=True)  # raced with another writer: try again from the fresher cache

    async def _used_by_pods_or_jobs(self, namespace: str, name: str) -> bool:
        """Whether a Pod, Job or CronJob of the namespace uses the Secret: they are not watched (they come and
        go too often to cache), so they are listed, only when a workload Secret is about to be deleted."""
        specs: list[Mapping[str, Any]] = []
        for resource in (PODS, JOBS, CRONJOBS):
            for obj in (await self._client.list(resource, namespace))["items"]:
                spec = obj.get("spec") or {}
                if resource is CRONJOBS:
                    spec = (spec.get("jobTemplate") or {}).get("spec") or {}
                specs.append(spec if resource is PODS else (spec.get("template") or {}).get("spec") or {})
        return any(name in pod_spec_secret_names(spec) for spec in specs)

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
                if await self._used_by_pods_or_jobs(namespace, name):
                    log.info("kept the Secret: bare Pods, Jobs or CronJobs still use it", extra={"secret": name})
                else:
                    await self._writer.delete(existing)
                    log.info("deleted the Secret no workload uses any more", extra={"secret": name})
            return None
        if naming:
            source = naming[0].obj
            self._warn_disagreements(naming)
        elif existing is not None and made_for_workloads(existing):
            source = existing  # its users remain: keep it in sync from its own annotations
        else:
            return None
        path = operator_annotations(source).get(ITEM_PATH_ANNOTATION, "")
        owners = [workload_owner_reference(w.kind, w.obj) for w in sorted(users, key=lambda w: (w.kind.kind, w.name))]
        reported = naming or users
        try:
            kept = existing is not None
            self._access.admit(namespace, path, kept=kept)
            _, item = await self._fetcher.get(
                path, lambda found: self._access.authorize(namespace, path, found, kept=kept)
            )
            desired = desired_secret(
                name=name,
                namespace=namespace,
                item=item,
                metadata=workload_metadata(source),  # a Secret's own annotations work too
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
        return None

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
    *,
    workloads: Workloads,
    fetcher: ItemFetcher,
    writer: SecretWriter,
    options: WorkloadOptions,
    access: AccessControl,
    changes: Channel,
    workers: int,
) -> Controller:
    """Add the workload-secrets controller (the poller fires into ``changes``); return it."""
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
    builder.watches_source(*access.sources(lambda ns: workload_secret_requests(workloads, writer.secrets, ns)), changes)
    secrets_controller = builder.with_options(workers=workers, rate_limiter=rate_limiter()).complete(
        WorkloadSecretReconciler(manager, workloads, fetcher, writer, options, access=access)
    )
    return secrets_controller
