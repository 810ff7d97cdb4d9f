"""Does the served OnePasswordItem CRD keep what opsync writes into an item's status?

A cluster that ran 1Password's operator keeps that operator's CRD (Helm never upgrades a CRD), whose status
schema has only ``conditions[].type/status/message/lastTransitionTime``: the API server silently prunes the
``reason`` and ``observedGeneration`` of opsync's ``Ready`` condition and ``status.lastSyncTime``. opsync works
on that schema all the same: ``ServedStatus`` tells the item reconciler which fields the server drops, so no
decision compares against a field that cannot come back. ``read_served_crd`` reads the schema (at start-up,
and in ``opsync check``) so that opsync can say how to upgrade it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from controllers.constants import SHAPING_FIELDS
from controllers.resources import ONEPASSWORDITEMS
from opsync.client import ApiError, Client, ForbiddenError, NotFoundError
from opsync.resources import CRDS, KubeObject

log = logging.getLogger(__name__)

ITEMS_CRD = f"{ONEPASSWORDITEMS.plural}.{ONEPASSWORDITEMS.group}"
UPGRADE_HINT = (
    "upgrade it with `kubectl apply --server-side --force-conflicts -f crds/onepassword.com_onepassworditems.yaml` "
    "(opsync's repository) or let opsync's chart manage it (docs/compatibility.md, 'The CRD')"
)

# opsync's status fields that 1Password's CRD lacks, as paths below ``status``.
OPSYNC_FIELDS = ("conditions[].reason", "conditions[].observedGeneration", "lastSyncTime", "observedRefresh")
# The shaping fields and pollingInterval of ``spec``: an old schema prunes them from what users apply, so
# the item would silently sync unshaped, at the default interval.
OPSYNC_SPEC_FIELDS = (*SHAPING_FIELDS, "pollingInterval")
_CONDITION = "conditions[]."


def _keeps(schema: Mapping[str, Any] | None, path: list[str]) -> bool:
    """Whether a structural schema keeps ``path`` (``"x[]"`` steps into an array's items)."""
    node = schema
    for step in path:
        if node is None:
            return False
        if node.get("x-kubernetes-preserve-unknown-fields"):
            return True
        name, array = step.removesuffix("[]"), step.endswith("[]")
        node = (node.get("properties") or {}).get(name)
        if array and node is not None:
            node = node.get("items")
    return node is not None


def _dropped(crd: KubeObject, version: str, top: str, fields: tuple[str, ...]) -> tuple[str, ...]:
    for served in (crd.get("spec") or {}).get("versions") or []:
        if served.get("name") == version and served.get("served"):
            root = ((served.get("schema") or {}).get("openAPIV3Schema")) or {}
            return tuple(f for f in fields if not _keeps(root, [top, *f.split(".")]))
    return fields


def dropped_status_fields(crd: KubeObject, version: str = ONEPASSWORDITEMS.version) -> tuple[str, ...]:
    """Which of ``OPSYNC_FIELDS`` the CRD's schema for ``version`` prunes (all of them if it serves none)."""
    return _dropped(crd, version, "status", OPSYNC_FIELDS)


def dropped_spec_fields(crd: KubeObject, version: str = ONEPASSWORDITEMS.version) -> tuple[str, ...]:
    """Which of ``OPSYNC_SPEC_FIELDS`` the CRD's schema for ``version`` prunes."""
    return _dropped(crd, version, "spec", OPSYNC_SPEC_FIELDS)


@dataclass(frozen=True, slots=True)
class ServedCrd:
    """What ``read_served_crd`` found: the fields the schema drops, or why it could not tell."""

    dropped: tuple[str, ...] | None
    """None when the CRD could not be read (``problem`` says why)."""
    problem: str = ""
    missing: bool = False
    """The CRD does not exist at all."""
    dropped_spec: tuple[str, ...] = ()
    """The shaping fields of ``spec`` the schema prunes."""

    @property
    def outdated(self) -> bool:
        """The served schema prunes some of opsync's status or spec fields."""
        return bool(self.dropped) or bool(self.dropped_spec)

    def describe(self) -> str:
        """One line for a log or ``opsync check``."""
        if self.dropped is None:
            return f"cannot read CustomResourceDefinition {ITEMS_CRD}: {self.problem}"
        if not self.outdated:
            return f"{ITEMS_CRD} keeps every status field opsync writes"
        drops = []
        if self.dropped:
            drops.append(
                f"status.{', status.'.join(self.dropped)} (Ready conditions show no reason; opsync works regardless)"
            )
        if self.dropped_spec:
            drops.append(
                f"spec.{', spec.'.join(self.dropped_spec)} "
                "(items cannot shape their Secrets or set their own polling interval)"
            )
        return (
            f"the served CRD {ITEMS_CRD} is older than opsync's: the API server drops {'; and '.join(drops)}; "
            f"{UPGRADE_HINT}"
        )


async def read_served_crd(client: Client) -> ServedCrd:
    """Read the OnePasswordItem CRD and judge its schema; never raises for a refusal or an unreachable server."""
    try:
        crd = await client.get(CRDS, ITEMS_CRD)
    except NotFoundError:
        return ServedCrd(None, "it does not exist: install opsync's CRDs (crds/ or the chart)", missing=True)
    except ForbiddenError:
        return ServedCrd(None, "forbidden (grant get on it by name: controllers/permissions.py)")
    except (ApiError, aiohttp.ClientError, TimeoutError) as err:
        return ServedCrd(None, str(err) or type(err).__name__)
    return ServedCrd(dropped_status_fields(crd), dropped_spec=dropped_spec_fields(crd))


class ServedStatus:
    """Which of opsync's status fields the API server keeps: seeded from the served CRD at start-up, corrected by
    the answer to every status patch (the stored object shows what survived pruning)."""

    def __init__(self, dropped: Iterable[str] = ()) -> None:
        self.dropped = frozenset(dropped)

    def keeps(self, field: str) -> bool:
        """Whether ``field`` (a path below ``status``, e.g. ``lastSyncTime``) survives a write."""
        return field not in self.dropped

    def condition(self, condition: KubeObject) -> KubeObject:
        """``condition`` as the API server would store it."""
        return {key: value for key, value in condition.items() if self.keeps(_CONDITION + key)}

    def learn(self, sent: KubeObject, stored: KubeObject) -> frozenset[str]:
        """Compare a status patch with the status the server stored; return the fields found dropped anew."""
        seen: dict[str, bool] = {}
        for key in sent.keys() - {"conditions"}:
            seen[key] = key in stored
        sent_conditions, stored_conditions = sent.get("conditions") or [], stored.get("conditions") or []
        if len(sent_conditions) == 1 and len(stored_conditions) == 1:  # opsync writes its one Ready condition
            for key in sent_conditions[0]:
                seen[_CONDITION + key] = key in stored_conditions[0]
        before = self.dropped
        self.dropped = (before - {f for f, kept in seen.items() if kept}) | {f for f, kept in seen.items() if not kept}
        return self.dropped - before
