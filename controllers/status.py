"""The status opsync reports on a OnePasswordItem: its ``Ready`` condition and ``lastSyncTime``.

Pure functions; ``controllers.items`` patches the status subresource with what ``status_patch`` returns.
"""

from __future__ import annotations

from typing import Any

from controllers.constants import READY_CONDITION
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
    opi: KubeObject, status: str, reason: str, message: str, *, synced: bool, served: ServedStatus
) -> KubeObject | None:
    """The status to patch onto ``opi`` for this outcome; None when the condition is already so.

    ``synced``: the Secret's data was just written, which moves ``lastSyncTime`` (also set at the first
    success). The comparison is with the condition as the served schema stores it (``served``): on an old CRD
    that drops ``reason``, a condition differing only there is not rewritten on every retry.
    """
    current: dict[str, Any] = opi.get("status") or {}
    condition = ready_condition(ready_of(opi), status, reason, message, int(opi["metadata"].get("generation") or 0))
    patch: dict[str, Any] = {}
    if [served.condition(condition)] != (current.get("conditions") or []):
        patch["conditions"] = [condition]
    if synced or (status == "True" and not current.get("lastSyncTime") and served.keeps("lastSyncTime")):
        patch["lastSyncTime"] = rfc3339()
    return patch or None
