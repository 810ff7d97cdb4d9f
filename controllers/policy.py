"""Namespace access policies: which namespaces may sync which vaults and items (pure functions).

``OnePasswordAccessPolicy`` (cluster-scoped, ``onepassword.com/v1alpha1``) grants namespaces, chosen by name
and/or label selector, access to vaults, optionally only to items with given tags or a title prefix.

- No policy in the cluster: everything is allowed (the Go operator's behaviour, so upgrades change nothing).
- At least one policy: deny by default; an item is allowed when some policy selects its namespace and lists
  its vault, and the item meets that vault entry's tag and title-prefix limits.

Denials carry a message that names the gap (namespace, vault, limits) and never any field value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from onepassword_access.paths import looks_like_id
from opsync.labels import InvalidSelectorError, selector_matches
from opsync.resources import KubeObject


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """What a namespace wants to sync: the resolved vault and item."""

    namespace: str
    namespace_labels: Mapping[str, str] | None
    """None: the Namespace is not in opsync's cache (yet), so no label selector selects it."""
    vault_id: str
    vault_name: str
    item_title: str
    item_tags: Sequence[str]


@dataclass(frozen=True, slots=True)
class AccessDecision:
    allowed: bool
    message: str
    policy: str | None = None
    item_limited: bool = False
    """Denied only by a vault entry's tag or title limits: a change to the item in 1Password may allow it."""


def _selects_namespace(spec: Mapping[str, Any], namespace: str, labels: Mapping[str, str] | None) -> bool:
    selection = spec.get("namespaces") or {}
    if namespace in (selection.get("names") or []):
        return True
    selector = selection.get("selector")
    # Explicit, unlike Kubernetes' usual "empty selects everything": an empty selector (which the CRD schema
    # refuses) selects nothing, and a Namespace not cached yet (a creation race) is selected by no selector,
    # since its missing labels would satisfy NotIn and DoesNotExist. Its arrival enqueues its items again.
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")) or labels is None:
        return False
    try:
        return selector_matches(selector, labels)
    except InvalidSelectorError:
        # The CRD schema restricts operators, so this is a policy edited around validation: grant nothing.
        return False


def _vault_matches(entry: Mapping[str, Any], vault_id: str, vault_name: str) -> bool:
    wanted = str(entry.get("vault") or "")
    return wanted == vault_id or wanted.casefold() == vault_name.casefold()


def _item_limits(entry: Mapping[str, Any], title: str, tags: Sequence[str]) -> str | None:
    """None when the item is within the entry's limits, else what it misses."""
    wanted_tags = list(entry.get("tags") or [])
    if wanted_tags and not set(wanted_tags) & set(tags):
        return f"only items tagged {', '.join(sorted(wanted_tags))}"
    prefix = entry.get("titlePrefix")
    if prefix and not title.startswith(prefix):
        return f"only items whose title starts with {prefix!r}"
    return None


def prefetch_denied(
    policies: Sequence[KubeObject], namespace: str, labels: Mapping[str, str] | None, vault: str, title: str | None
) -> AccessDecision | None:
    """A denial decidable from the item path as written, before asking Connect anything about the item.

    ``vault`` is the path's vault segment, ``title`` its item segment when that is certainly a title (not
    id-like), else None. Conservative: an entry that might match after resolution (it names the vault by id,
    and the segment may be that vault's name) does not deny. Tags are only known once fetched.
    """
    denied = namespace_denied(policies, namespace, labels)
    if denied is not None or not policies:
        return denied
    limits: list[str] = []
    for policy in sorted(policies, key=lambda p: str(p["metadata"]["name"])):
        spec = policy.get("spec") or {}
        if not _selects_namespace(spec, namespace, labels):
            continue
        for entry in spec.get("vaults") or []:
            wanted = str(entry.get("vault") or "")
            if wanted.casefold() != vault.casefold() and not looks_like_id(wanted):
                continue
            prefix = str(entry.get("titlePrefix") or "")
            if title is None or not prefix or title.casefold().startswith(prefix.casefold()):
                return None
            limits.append(f"{policy['metadata']['name']} allows only items whose title starts with {prefix!r}")
    if limits:
        return AccessDecision(
            False,
            f'item "{title}" in vault "{vault}" is outside the limits for namespace "{namespace}": '
            + "; ".join(limits),
        )
    return AccessDecision(False, f'no OnePasswordAccessPolicy grants namespace "{namespace}" access to vault "{vault}"')


def namespace_denied(
    policies: Sequence[KubeObject], namespace: str, labels: Mapping[str, str] | None
) -> AccessDecision | None:
    """A denial when policies exist and none selects the namespace at all (decidable before asking Connect
    anything about the item), else None."""
    if not policies or any(_selects_namespace(p.get("spec") or {}, namespace, labels) for p in policies):
        return None
    return AccessDecision(False, f'no OnePasswordAccessPolicy grants namespace "{namespace}" access to any vault')


def evaluate(policies: Sequence[KubeObject], request: AccessRequest) -> AccessDecision:
    """Decide whether ``request`` is allowed by ``policies`` (the cluster's OnePasswordAccessPolicy objects)."""
    if not policies:
        return AccessDecision(True, "no OnePasswordAccessPolicy exists: all namespaces may sync all items")
    limits: list[str] = []
    for policy in sorted(policies, key=lambda p: str(p["metadata"]["name"])):
        name = str(policy["metadata"]["name"])
        spec = policy.get("spec") or {}
        if not _selects_namespace(spec, request.namespace, request.namespace_labels):
            continue
        for entry in spec.get("vaults") or []:
            if not _vault_matches(entry, request.vault_id, request.vault_name):
                continue
            missing = _item_limits(entry, request.item_title, request.item_tags)
            if missing is None:
                return AccessDecision(True, f"allowed by OnePasswordAccessPolicy {name}", policy=name)
            limits.append(f"{name} allows {missing}")
    if limits:
        return AccessDecision(
            False,
            f'item "{request.item_title}" in vault "{request.vault_name}" is outside the limits for namespace '
            f'"{request.namespace}": ' + "; ".join(limits),
            item_limited=True,
        )
    return AccessDecision(
        False,
        f'no OnePasswordAccessPolicy grants namespace "{request.namespace}" access to vault "{request.vault_name}"',
    )
