"""OnePasswordAccessPolicy enforcement for the item and workload reconcilers.

The decisions are ``controllers.policy``'s (pure); this module feeds them from the caches:

- the policies, from a cluster-scoped informer (cluster-scoped even when ``WATCH_NAMESPACE`` is set, since
  policies live outside namespaces);
- a Namespace's labels, from the metadata-only Namespace informers the restart controllers already use
  (``controllers.watch.NamespaceMetadata``), so no extra watch or permission is needed.

A reconciler asks three times, each before it fetches more: ``admit`` before asking Connect anything (the
namespace, the vault and the title as the path writes them: a namespace no policy selects, or a vault no
policy lists for it, costs no Connect request and learns nothing), ``authorize`` once the item is resolved
(vault id, title, tags) and before any of its files is downloaded. Both raise ``AccessDeniedError``, which
``controllers.failures`` turns into ``Ready=False`` reason ``AccessDenied``, a Warning Event and one log line;
no Secret is written. A Secret written before access was revoked is kept, not updated, and the message says so.

Fail closed. "No policy" allows everything (the Go operator's behaviour) only while this process has never
seen a policy and ``--access-policy`` is not ``required``. Once a policy was seen, an empty policy cache
(the CRD deleted or briefly unserved, a 404 on a watch, every policy deleted) denies everything until a
policy is listed again; only a restart returns to "allow all". Across a restart, an item whose ``Ready``
condition already says ``AccessDenied`` stays denied while no policy is visible.

Controllers whose keys the policies affect watch ``sources``: any policy change (and a Namespace label change)
enqueues their keys again, so policies take effect without a restart. Controllers wait for the informers
they watch to sync, so no key is reconciled before the policies are known (an unsynced, empty cache would
otherwise read as "no policy: allow everything").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Literal

from controllers.failures import AccessDeniedError
from controllers.policy import AccessDecision, AccessRequest, evaluate, prefetch_denied
from controllers.resources import ONEPASSWORDACCESSPOLICIES
from controllers.watch import NamespaceMetadata, labels_of
from onepassword_access.paths import ItemPathError, looks_like_id, parse_item_path
from onepassword_access.resolve import ResolvedItem
from opsync.cache import Cache
from opsync.informer import Informer
from opsync.predicate import Predicate
from opsync.reconcile import Request
from opsync.resources import KubeObject
from opsync.source import Kind, Source

log = logging.getLogger(__name__)

KEPT_SUFFIX = "the existing Secret is kept but no longer updated"
AccessPolicyMode = Literal["auto", "required"]
"""``--access-policy``: ``auto`` (no policy ever seen: allow all) or ``required`` (no policy: deny all)."""
REQUIRED_MESSAGE = "no OnePasswordAccessPolicy exists and --access-policy=required: nothing may be synced"
LOST_MESSAGE = (
    "no OnePasswordAccessPolicy is visible, but policies were in use: opsync denies every item until a policy "
    "is listed again (restart opsync to allow everything without policies)"
)
DENIED_BEFORE_MESSAGE = (
    "this item was denied by a OnePasswordAccessPolicy and no policy is visible now: it stays denied until a "
    "policy allows it (delete and re-create the item to sync it without policies)"
)

RequestsIn = Callable[[str | None], Iterable[Request]]
"""A controller's keys in one namespace (None: in every namespace)."""


class AccessControl:
    """Answers "may this namespace sync this item?" from the cached policies and Namespace labels."""

    def __init__(self, cache: Cache, namespaces: NamespaceMetadata, *, mode: AccessPolicyMode = "auto") -> None:
        # optional: a cluster whose CRDs came from the Go operator has no policy CRD, hence no policy (allow all,
        # as before, unless required); the informer notices when the CRD is installed.
        self.policies: Informer = cache.informer(ONEPASSWORDACCESSPOLICIES, optional=True)
        self.mode: AccessPolicyMode = mode
        self.seen_policies = False
        """A policy was in the cache at some point in this process: from then on, none means deny all."""
        self.policies.add_handler(self)
        self._namespaces = namespaces

    # the policy informer's handler: remembers that policies were in use
    def on_add(self, obj: KubeObject, is_initial_list: bool) -> None:
        """A policy appeared."""
        self.seen_policies = True

    def on_update(self, old: KubeObject, new: KubeObject) -> None:
        """A policy changed (nothing to remember)."""

    def on_delete(self, obj: KubeObject) -> None:
        """A policy went away; when it was the last one, access narrows to nothing (fail closed)."""
        if not self.policies.list():
            log.warning("the last OnePasswordAccessPolicy is gone: denying every item until a policy is listed again")

    def current_policies(self) -> Sequence[KubeObject] | None:
        """The policies to decide by: None when none applies (allow all), empty to deny all."""
        found = self.policies.list()
        if found or self.seen_policies or self.mode == "required":
            return found
        return None

    def _deny_all_message(self) -> str:
        return REQUIRED_MESSAGE if self.mode == "required" and not self.seen_policies else LOST_MESSAGE

    def decide(self, namespace: str, path: str, resolved: ResolvedItem) -> AccessDecision:
        """The decision for the item ``path`` resolved to.

        The vault's name is the path's vault segment when that segment resolved as a name; a path by vault id
        gives only the id (learning the name would cost a Connect request), so policies naming the vault by
        name do not match it: deny-safe, and the message names the id.
        """
        policies = self.current_policies()
        if policies is None:
            return evaluate([], _request(namespace, {}, path, resolved))
        if not policies:
            return AccessDecision(False, self._deny_all_message())
        return evaluate(policies, _request(namespace, self._namespaces.labels(namespace), path, resolved))

    def admit(self, namespace: str, path: str, *, kept: bool, denied_before: bool = False) -> None:
        """Raise ``AccessDeniedError`` when the item at ``path`` is denied whatever it resolves to: no policy
        selects ``namespace``, or none lists the vault (or allows the title) as the path writes them.

        ``kept``: a Secret written earlier exists (the message then says it is kept). ``denied_before``: the
        item's status already says ``AccessDenied`` (from this or an earlier opsync process).
        """
        policies = self.current_policies()
        if policies is None:
            if denied_before:
                raise AccessDeniedError(_message(AccessDecision(False, DENIED_BEFORE_MESSAGE), kept=kept))
            return
        if not policies:
            raise AccessDeniedError(_message(AccessDecision(False, self._deny_all_message()), kept=kept))
        parsed = parse_item_path(path)
        title = None if looks_like_id(parsed.item) else parsed.item
        denied = prefetch_denied(policies, namespace, self._namespaces.labels(namespace), parsed.vault, title)
        if denied is not None:
            raise AccessDeniedError(_message(denied, kept=kept))

    def admits(self, namespace: str, path: str, *, denied_before: bool = False) -> bool:
        """Whether ``admit`` lets ``namespace`` ask 1Password for ``path`` (the poller's prefetch asks this
        first, as the reconcilers do before their own fetch); a malformed path is not admitted."""
        try:
            self.admit(namespace, path, kept=False, denied_before=denied_before)
        except (AccessDeniedError, ItemPathError):
            return False
        return True

    def authorize(self, namespace: str, path: str, resolved: ResolvedItem, *, kept: bool) -> None:
        """Raise ``AccessDeniedError`` unless some policy lets ``namespace`` sync the resolved item.

        Also refuses an item Connect returned from another vault than the one resolved for the path (the
        policy decision is about the vault asked for).
        """
        if resolved.item.vault.id != resolved.vault_id:
            message = (
                f'Connect returned item "{resolved.item.title}" from vault "{resolved.item.vault.id}", not from '
                f'vault "{resolved.vault_id}" that the path resolved to'
            )
            raise AccessDeniedError(_message(AccessDecision(False, message), kept=kept))
        decision = self.decide(namespace, path, resolved)
        if not decision.allowed:
            raise AccessDeniedError(_message(decision, kept=kept), item_limited=decision.item_limited)

    def sources(self, requests_in: RequestsIn) -> list[Source]:
        """Sources for a controller (``Builder.watches_source``) that enqueue its keys again when a policy
        changes (all keys) or a Namespace's labels change (its keys)."""
        labels_changed = Predicate(on_update=lambda old, new: labels_of(old) != labels_of(new))
        return [
            Kind(self.policies, lambda _policy: requests_in(None)),
            *(
                Kind(informer, lambda namespace: requests_in(namespace["metadata"]["name"]), [labels_changed])
                for informer in self._namespaces.informers
            ),
        ]


def _request(namespace: str, labels: Mapping[str, str] | None, path: str, resolved: ResolvedItem) -> AccessRequest:
    segment = parse_item_path(path).vault
    return AccessRequest(
        namespace=namespace,
        namespace_labels=labels,
        vault_id=resolved.vault_id,
        vault_name=segment if segment != resolved.vault_id else resolved.vault_id,
        item_title=resolved.item.title,
        item_tags=tuple(resolved.item.tags),
    )


def _message(decision: AccessDecision, *, kept: bool) -> str:
    return f"access revoked: {decision.message}; {KEPT_SUFFIX}" if kept else decision.message
