"""Rolling restarts: the ``onepassword-deployment``, ``-statefulset`` and ``-daemonset`` controllers.

Key: one workload. A reconcile restarts the workload once per change of the data of a managed Secret it uses,
as ``controllers.restarts`` plans it (the versions it was rolled for are recorded on it, so repeated
reconciles do not roll again and a change made while opsync was down still rolls once), and removes the Go
operator's finalizer. Managed Secrets reach the workloads using them through the workload index's "secret
users" (``controllers.workloads``), Namespaces through their ``auto-restart`` annotation.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from controllers.constants import (
    AUTO_RESTART_ANNOTATION,
    DEPLOYMENT_EVENT_COMPONENT,
    ITEM_NAME_ANNOTATION,
    MANAGED_SELECTOR,
    EventReason,
)
from controllers.desired import WORKLOAD_KINDS, operator_annotations, secret_data_version
from controllers.failures import rate_limiter, write_refused
from controllers.finalizer import remove_go_finalizer
from controllers.metrics import WORKLOAD_RESTARTS
from controllers.restarts import plan_restart, recorded_versions, secret_names_used_by
from controllers.sanitisers import secret_name
from controllers.watch import NamespaceMetadata, spec_or_metadata_changed
from controllers.workloads import SECRET_USERS_INDEX, WorkloadOptions, Workloads
from opsync.builder import Builder
from opsync.client import ApiError, ConflictError
from opsync.controller import Controller
from opsync.events import EventRecorder
from opsync.informer import Informer
from opsync.manager import Manager
from opsync.predicate import Predicate, annotation_changed
from opsync.reconcile import Request, Result
from opsync.resources import SECRETS, KubeObject, Resource
from opsync.source import Kind

log = logging.getLogger(__name__)

_PATCH_ATTEMPTS = 3
_CONTROLLER_NAMES = {
    "Deployment": "onepassword-deployment",
    "StatefulSet": "onepassword-statefulset",
    "DaemonSet": "onepassword-daemonset",
}


class RestartReconciler:
    """Restarts one workload of one kind when its Secrets' data changed; removes the Go finalizer."""

    def __init__(
        self,
        manager: Manager,
        kind: Resource,
        *,
        workloads: Workloads,
        secrets: Informer,
        namespaces: NamespaceMetadata,
        options: WorkloadOptions,
    ) -> None:
        self.kind = kind
        self.informer = workloads.informers[kind]
        self._client = manager.client
        self._secrets = secrets
        self._namespaces = namespaces
        self._options = options
        self._events: EventRecorder = manager.event_recorder(DEPLOYMENT_EVENT_COMPONENT)

    async def reconcile(self, request: Request) -> Result | None:
        workload = self.informer.get(request.namespace, request.name)
        if workload is None:
            return None
        try:
            workload = await remove_go_finalizer(self._client, self.kind, workload)
            if workload["metadata"].get("deletionTimestamp"):
                return None
            self._check_item_name(workload)
            await self._restart_if_needed(workload)
        except ApiError as err:  # a write race (the cache is behind), or forbidden, refused by a webhook...
            return write_refused(self._events, workload, err, what=self.kind.kind)
        return None

    def _check_item_name(self, workload: KubeObject) -> None:
        raw = operator_annotations(workload).get(ITEM_NAME_ANNOTATION)
        if raw and secret_name(raw) is None:
            self._events.event(
                workload,
                "Warning",
                EventReason.RECONCILE_ERROR,
                f"{ITEM_NAME_ANNOTATION} {raw!r} cannot be made a valid Secret name",
            )

    async def _restart_if_needed(self, workload: KubeObject) -> None:
        """Roll or record as ``plan_restart`` says. The patch is conditional on the workload's
        resourceVersion (so a stale cache cannot roll it twice); a conflict, usually a status update by the
        workload's own controller, is retried at once from a fresh read."""
        meta = workload["metadata"]
        namespace = meta["namespace"]
        secrets = {
            name: secret
            for name in sorted(secret_names_used_by(workload))
            if (secret := self._secrets.get(namespace, name)) is not None
        }
        if not secrets and recorded_versions(workload) is None:
            return
        for attempt in range(_PATCH_ATTEMPTS):
            plan = plan_restart(
                workload,
                secrets,
                self._namespaces.annotations(namespace),
                self._options.auto_restart,
                datetime.now(UTC),
            )
            if attempt == 0:
                for message in plan.invalid:
                    self._events.event(workload, "Warning", EventReason.INVALID_AUTO_RESTART, message)
            if plan.patch is None:
                return
            try:
                await self._client.patch(self.kind, meta["name"], plan.patch, namespace)
                break
            except ConflictError:
                if attempt + 1 == _PATCH_ATTEMPTS:
                    raise
                workload = await self._client.get(self.kind, meta["name"], namespace)
        if plan.restart:
            changed = ", ".join(sorted(plan.changed))
            WORKLOAD_RESTARTS.labels(kind=self.kind.kind).inc()
            log.info("restarted: the data of its Secrets changed", extra={"secrets": changed})
            self._events.event(
                workload,
                "Normal",
                EventReason.RESTARTED,
                f"Rolling restart: the data of Secret(s) {changed} changed in 1Password",
            )


def _restart_inputs(secret: KubeObject) -> tuple[str | None, str | None]:
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    return secret_data_version(secret), annotations.get(AUTO_RESTART_ANNOTATION)


def setup_restarts(
    manager: Manager,
    *,
    workloads: Workloads,
    secrets: Informer,
    namespaces: NamespaceMetadata,
    options: WorkloadOptions,
    workers: int,
) -> list[Controller]:
    """Add one restart controller per workload kind; return them."""
    relevant = [spec_or_metadata_changed()]
    restart_controllers = []
    data_or_setting_changed = Predicate(on_update=lambda old, new: _restart_inputs(old) != _restart_inputs(new))
    for kind in WORKLOAD_KINDS:
        informer = workloads.informers[kind]

        def users_of(secret: KubeObject, informer: Informer = informer) -> list[Request]:
            return [Request.of(w) for w in informer.by_index(SECRET_USERS_INDEX, str(Request.of(secret)))]

        def in_namespace(namespace: KubeObject, informer: Informer = informer) -> list[Request]:
            return [Request.of(w) for w in informer.list(namespace["metadata"]["name"])]

        restart_setting_changed = [annotation_changed(AUTO_RESTART_ANNOTATION)]
        controller = (
            Builder(manager, _CONTROLLER_NAMES[kind.kind])
            .for_(kind, predicates=relevant)
            .watches(SECRETS, users_of, label_selector=MANAGED_SELECTOR, predicates=[data_or_setting_changed])
            .watches_source(*(Kind(ns, in_namespace, restart_setting_changed) for ns in namespaces.informers))
            .with_options(workers=workers, rate_limiter=rate_limiter())
            .complete(
                RestartReconciler(
                    manager, kind, workloads=workloads, secrets=secrets, namespaces=namespaces, options=options
                )
            )
        )
        restart_controllers.append(controller)
    return restart_controllers
