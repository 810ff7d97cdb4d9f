"""The status opsync reports on a OnePasswordItem: its ``Ready`` condition and ``lastSyncTime``.

Pure functions; ``controllers.items`` patches the status subresource with what ``status_patch`` returns.
"""

from __future__ import annotations

from typing import Any

from controllers.constants import READY_CONDITION, REFRESH_STATUS_FIELD
from controllers.crdschema import ServedStatus
from opsync.resources import KubeObject
from opsync.timestamps import rfc3339


def ready_of(obj: KubeObject) -> KubeObject | None:
    """The ``Ready`` condition in ``obj``'s status, None when it has none."""
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == READY_CONDITION:
            found: KubeObject = condition
            return found
    return None


def ready_condition(previous: KubeObject | None, status: str, reason: str, message: str, generation: int) -> KubeObject:
    """The ``Ready`` condition; ``lastTransitionTime`` moves only when ``status`` does."""
    unchanged = previous is not None and previous.get("status") == status and previous.get("lastTransitionTime")
    return {
        "type": READY_CONDITION,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": previous["lastTransitionTime"] if unchanged and previous else rfc3339(),
    }


def status_patch(
    opi: KubeObject,
    status: str,
    reason: str,
    message: str,
    *,
    synced_at: str | None,
    served: ServedStatus,
    refreshed: str | None = None,
) -> KubeObject | None:
    """The status to patch onto ``opi`` for this outcome; None when the condition is already so.

    ``synced_at``: when the Secret's data was last written, if ``lastSyncTime`` may not say so yet (it is also
    set at the first success). The comparison is with the condition as the served schema stores it
    (``served``): on an old CRD that drops ``reason``, a condition differing only there is not rewritten on
    every retry. ``refreshed``: the ``opsync.dev/refresh`` value just acted on, recorded in ``observedRefresh``
    (when the served schema keeps it).
    """
    current: dict[str, Any] = opi.get("status") or {}
    condition = ready_condition(ready_of(opi), status, reason, message, int(opi["metadata"].get("generation") or 0))
    patch: dict[str, Any] = {}
    if [served.condition(condition)] != (current.get("conditions") or []):
        patch["conditions"] = [condition]
    if served.keeps("lastSyncTime"):
        if synced_at is not None and current.get("lastSyncTime") != synced_at:
            patch["lastSyncTime"] = synced_at
        elif status == "True" and not current.get("lastSyncTime"):
            patch["lastSyncTime"] = rfc3339()
    if refreshed is not None and current.get(REFRESH_STATUS_FIELD) != refreshed and served.keeps(REFRESH_STATUS_FIELD):
        patch[REFRESH_STATUS_FIELD] = refreshed
    return patch or None


def observed_refresh(opi: KubeObject) -> str | None:
    """The ``opsync.dev/refresh`` value recorded in ``opi``'s status as acted on, if any."""
    value = (opi.get("status") or {}).get(REFRESH_STATUS_FIELD)
    return None if value is None else str(value)
