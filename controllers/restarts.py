"""Which Secrets a workload uses, whether a change restarts it, and the patch that does (pure functions).

Works for any workload with a pod template at ``spec.template``: Deployments, StatefulSets, DaemonSets.

Restarting exactly once per change
----------------------------------
The Go operator rolls a Deployment from the poll that changed a Secret; a restart is lost when a reconciler
changed the Secret first, when the write fails, or when the operator was down. opsync instead keeps state:

- Each managed Secret carries a data-version token (``desired.secret_data_version``) that moves only when
  1Password changed its data.
- Each workload with auto-restart on records, in its **metadata** annotation ``opsync.dev/restart-versions``,
  the tokens of the managed Secrets it uses as of its last restart (metadata, because any pod-template edit
  rolls the workload; recording must not).
- A reconcile compares the tokens with the record. A used Secret whose token differs from its recorded one
  changed since: if auto-restart applies to it the workload is rolled by setting the pod-template annotation
  ``operator.1password.io/last-restarted`` (RFC 3339, as the Go operator does) **in the same patch** that
  records the new tokens. Repeated reconciles then see no difference and do nothing; a change made while opsync
  was down is still found at the next reconcile, and rolls once.
- No record yet (a new workload, auto-restart just turned on, opsync just installed): the tokens are recorded
  without rolling. Secrets newly referenced by the pod template are recorded without rolling too: the template
  edit that references them rolls the workload by itself.
- The patch carries the workload's ``resourceVersion``: of two concurrent reconciles one fails with a conflict
  and, retried, finds the record up to date, so the workload is not rolled twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from controllers.constants import (
    AUTO_RESTART_ANNOTATION,
    GO_FALSE_VALUES,
    GO_TRUE_VALUES,
    ITEM_NAME_ANNOTATION,
    LAST_RESTARTED_ANNOTATION,
    RESTART_VERSIONS_ANNOTATION,
)
from controllers.desired import secret_data_version
from controllers.sanitisers import secret_name
from opsync.resources import KubeObject
from opsync.timestamps import rfc3339


def parse_bool(value: str | None) -> bool | None:
    """Go ``strconv.ParseBool`` in any case (``1``, ``t``, ``true``, ``0``, ``f``, ``false``...); None when
    ``value`` is None or anything else."""
    if value is None:
        return None
    lowered = value.lower()
    if lowered in GO_TRUE_VALUES:
        return True
    if lowered in GO_FALSE_VALUES:
        return False
    return None


# --- Which Secrets a workload uses (any reference counts) -------------------------------------------------------


def _annotations(meta: Mapping[str, Any] | None) -> Mapping[str, str]:
    return (meta or {}).get("annotations") or {}


def _pod_spec(workload: KubeObject) -> Mapping[str, Any]:
    return ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}


def _referenced_names(pod_spec: Mapping[str, Any]) -> Iterator[str | None]:
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for container in pod_spec.get(group) or []:
            for env in container.get("env") or []:
                yield ((env.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name")
            for source in container.get("envFrom") or []:
                yield (source.get("secretRef") or {}).get("name")
    for volume in pod_spec.get("volumes") or []:
        yield (volume.get("secret") or {}).get("secretName")
        for source in (volume.get("projected") or {}).get("sources") or []:
            yield (source.get("secret") or {}).get("name")


def pod_spec_secret_names(pod_spec: Mapping[str, Any]) -> set[str]:
    """Names of the Secrets a pod spec uses (env, envFrom, secret and projected volumes)."""
    return {name for name in _referenced_names(pod_spec) if name}


def secret_names_used_by(workload: KubeObject) -> set[str]:
    """Names of the Secrets (in the workload's namespace) that ``workload``'s pods use.

    Sources: env ``secretKeyRef`` and ``envFrom`` ``secretRef`` of init, regular and ephemeral containers;
    ``secret`` volumes; every ``secret`` source of projected volumes; and the workload's metadata ``item-name``
    annotation, sanitised the way the Secret was named (the Go operator compares the raw value).
    """
    names = {name for name in _referenced_names(_pod_spec(workload)) if name}
    item_name = _annotations(workload.get("metadata")).get(ITEM_NAME_ANNOTATION)
    sanitised = secret_name(item_name) if item_name else None
    if sanitised:
        names.add(sanitised)
    return names


# --- Whether a change restarts ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Decision:
    restart: bool
    source: str
    """Which setting decided: ``secret``, ``workload``, ``namespace`` or ``default`` (``AUTO_RESTART``)."""
    invalid: tuple[str, ...] = ()
    """Messages about values that are not booleans, for an Event (an invalid value decides "no restart")."""


def auto_restart_decision(
    secret_annotations: Mapping[str, str] | None,
    workload_annotations: Mapping[str, str] | None,
    namespace_annotations: Mapping[str, str] | None,
    global_default: bool,
) -> Decision:
    """Whether a change of one Secret restarts a workload that uses it.

    The first non-empty ``operator.1password.io/auto-restart`` wins: the Secret's (copied from its
    OnePasswordItem), the workload's metadata, the Namespace's, then ``global_default`` (``AUTO_RESTART``).
    As in the Go operator an unparseable value decides "no restart", but it is reported in ``invalid``. Unlike
    the Go operator, an unknown namespace (pass None) falls back to ``global_default`` rather than "no".
    """
    levels = (("secret", secret_annotations), ("workload", workload_annotations), ("namespace", namespace_annotations))
    for source, level_annotations in levels:
        value = (level_annotations or {}).get(AUTO_RESTART_ANNOTATION, "")
        if not value:
            continue
        parsed = parse_bool(value)
        if parsed is None:
            message = f"{AUTO_RESTART_ANNOTATION}={value!r} on the {source} is not true or false; not restarting"
            return Decision(False, source, (message,))
        return Decision(parsed, source)
    return Decision(global_default, "default")


# --- The restart record and patches ------------------------------------------------------------------------------


def recorded_versions(workload: KubeObject) -> dict[str, str] | None:
    """The Secret data-version tokens recorded on ``workload``, or None if there is no (readable) record."""
    raw = _annotations(workload.get("metadata")).get(RESTART_VERSIONS_ANNOTATION)
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    return {str(name): str(token) for name, token in record.items()}


def changed_secrets(workload: KubeObject, secret_versions: Mapping[str, str]) -> set[str]:
    """The Secrets in ``secret_versions`` (name → data-version token) whose token differs from the record.

    Secrets missing from the record (or no record at all) have not changed: they are new to the workload.
    """
    record = recorded_versions(workload) or {}
    return {name for name, token in secret_versions.items() if name in record and record[name] != token}


def _record(workload: KubeObject, secret_versions: Mapping[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "annotations": {
            RESTART_VERSIONS_ANNOTATION: json.dumps(dict(sorted(secret_versions.items())), separators=(",", ":"))
        }
    }
    resource_version = (workload.get("metadata") or {}).get("resourceVersion")
    if resource_version:
        meta["resourceVersion"] = resource_version  # the API server refuses the patch if the workload moved on
    return meta


def record_patch(workload: KubeObject, secret_versions: Mapping[str, str]) -> KubeObject:
    """A merge patch that records ``secret_versions`` on ``workload`` without rolling it."""
    return {"metadata": _record(workload, secret_versions)}


def restart_patch(workload: KubeObject, secret_versions: Mapping[str, str], now: datetime) -> KubeObject:
    """A merge patch that rolls ``workload`` once and records ``secret_versions``.

    ``last-restarted`` is ``now`` in UTC, RFC 3339 to the second; if that equals the current value (two
    restarts within a second) it is moved one second on, since an unchanged template would not roll.
    """
    stamp = now.astimezone(UTC)
    template = ((workload.get("spec") or {}).get("template") or {}).get("metadata")
    if rfc3339(stamp) == _annotations(template).get(LAST_RESTARTED_ANNOTATION):
        stamp += timedelta(seconds=1)
    return {
        "metadata": _record(workload, secret_versions),
        "spec": {"template": {"metadata": {"annotations": {LAST_RESTARTED_ANNOTATION: rfc3339(stamp)}}}},
    }


@dataclass(frozen=True, slots=True)
class RestartPlan:
    patch: KubeObject | None
    """The merge patch to send to the workload, None when nothing needs writing."""
    restart: bool
    """Whether ``patch`` rolls the workload."""
    changed: frozenset[str]
    """Used Secrets whose data changed since the record."""
    invalid: tuple[str, ...] = ()
    """Invalid auto-restart values met (for a Warning Event)."""


def plan_restart(
    workload: KubeObject,
    secrets: Mapping[str, KubeObject],
    namespace_annotations: Mapping[str, str] | None,
    global_default: bool,
    now: datetime,
) -> RestartPlan:
    """Everything the workloads reconciler needs to decide and write a restart, from cached objects.

    ``secrets``: the Secrets ``workload`` uses (``secret_names_used_by``) that exist, by name; Secrets that are
    not managed are ignored. ``namespace_annotations``: the Namespace's annotations, None if unknown.
    The workload rolls when a changed Secret's decision says so. Otherwise the record is refreshed when one
    exists and is out of date, or created when auto-restart applies to some used Secret; a workload nothing
    would ever restart is left untouched.
    """
    versions = {name: token for name, secret in secrets.items() if (token := secret_data_version(secret))}
    workload_annotations = _annotations(workload.get("metadata"))
    decisions = {
        name: auto_restart_decision(
            _annotations(secrets[name].get("metadata")), workload_annotations, namespace_annotations, global_default
        )
        for name in versions
    }
    changed = changed_secrets(workload, versions)
    invalid = tuple(dict.fromkeys(message for d in decisions.values() for message in d.invalid))
    record = recorded_versions(workload)
    if any(decisions[name].restart for name in changed):
        return RestartPlan(restart_patch(workload, versions, now), True, frozenset(changed), invalid)
    wanted = record is not None or any(d.restart for d in decisions.values())
    patch = record_patch(workload, versions) if wanted and record != versions else None
    return RestartPlan(patch, False, frozenset(changed), invalid)
