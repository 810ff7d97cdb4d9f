"""Rolling restarts: the ``onepassword-deployment``, ``-statefulset``, ``-daemonset``, ``-cronjob`` and
``-rollout`` controllers (Argo Rollouts: the informer is optional, so without the CRD none exist and nothing
happens; the CRD installed later is picked up without a restart).

Key: one workload. A reconcile restarts the workload once per change of the data of a managed Secret it uses,
as ``controllers.restarts`` plans it (the versions it was rolled for are recorded on it, so repeated
reconciles do not roll again and a change made while opsync was down still rolls once), and removes the Go
operator's finalizer. Managed Secrets reach the workloads using them through the workload index's "secret
users" (``controllers.workloads``), Namespaces through their ``auto-restart`` annotation.

``opsync.dev/restart-delay: 30s`` on a workload holds a due restart back for that long, counted from the
first reconcile that found it due: changes arriving meanwhile join the same rollout. The delay lives in
memory only; the record on the workload still decides whether a restart is due, so exactly-once holds:
after a restart of opsync (or a change of leader) the pending restart is found again and happens once,
after a full delay counted anew.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from controllers.constants import (
    AUTO_RESTART_ANNOTATION,
    DEPLOYMENT_EVENT_COMPONENT,
    ITEM_NAME_ANNOTATION,
    MANAGED_SELECTOR,
    RESTART_DELAY_ANNOTATION,
    EventReason,
)
from controllers.desired import WORKLOAD_KINDS, operator_annotations, secret_data_version
from controllers.failures import rate_limiter, write_refused
from controllers.finalizer import remove_go_finalizer
from controllers.metrics import WORKLOAD_RESTARTS
from controllers.restarts import parse_duration, plan_restart, recorded_versions, secret_names_used_by
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
    "CronJob": "onepassword-cronjob",
    "Rollout": "onepassword-rollout",
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
        self._due_since: dict[Request, float] = {}  # restarts held back by a restart delay (monotonic time)

    async def reconcile(self, request: Request) -> Result | None:
        workload = self.informer.get(request.namespace, request.name)
        if workload is None:
            self._due_since.pop(request, None)
            return None
        try:
            workload = await remove_go_finalizer(self._client, self.kind, workload)
            if workload["metadata"].get("deletionTimestamp"):
                return None
            self._check_item_name(workload)
            return await self._restart_if_needed(workload)
        except ApiError as err:  # a write race (the cache is behind), or forbidden, refused by a webhook...
            return write_refused(self._events, workload, err, what=self.kind.kind)

    def _check_item_name(self, workload: KubeObject) -> None:
        raw = operator_annotations(workload).get(ITEM_NAME_ANNOTATION)
        if raw and secret_name(raw) is None:
            self._events.event(
                workload,
                "Warning",
                EventReason.RECONCILE_ERROR,
                f"{ITEM_NAME_ANNOTATION} {raw!r} cannot be made a valid Secret name",
            )

    def _held_back(self, workload: KubeObject) -> float:
        """Seconds a due restart still waits for its ``restart-delay`` (0: restart now)."""
        raw = (workload["metadata"].get("annotations") or {}).get(RESTART_DELAY_ANNOTATION)
        if not raw:
            return 0.0
        delay = parse_duration(raw)
        if delay is None:
            self._events.event(
                workload,
                "Warning",
                EventReason.INVALID_RESTART_DELAY,
                f"{RESTART_DELAY_ANNOTATION}={raw!r} is not a duration such as 30s, 5m or 1h; restarting now",
            )
            return 0.0
        due_since = self._due_since.setdefault(Request.of(workload), time.monotonic())
        return max(0.0, due_since + delay - time.monotonic())

    async def _restart_if_needed(self, workload: KubeObject) -> Result | None:
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
            return None
        before = recorded_versions(workload) or {}
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
                if plan.restart and (wait := self._held_back(workload)) > 0:
                    return Result(requeue_after=wait)
            if not plan.restart:
                self._due_since.pop(Request.of(workload), None)
            if plan.patch is None:
                return None
            try:
                await self._client.patch(self.kind, meta["name"], plan.patch, namespace)
                break
            except ConflictError:
                if attempt + 1 == _PATCH_ATTEMPTS:
                    raise
                workload = await self._client.get(self.kind, meta["name"], namespace)
        if plan.restart:
            self._due_since.pop(Request.of(workload), None)
            changed = ", ".join(sorted(plan.changed))
            WORKLOAD_RESTARTS.labels(kind=self.kind.kind).inc()
            log.info("restarted: the data of its Secrets changed", extra={"secrets": changed})
            versions = "; ".join(
                f'Secret "{name}" {before.get(name)} -> {secret_data_version(secrets[name])}'
                for name in sorted(plan.changed)
            )
            self._events.event(
                workload, "Normal", EventReason.RESTARTED, f"Rolling restart: changed in 1Password: {versions}"
            )
        return None


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
