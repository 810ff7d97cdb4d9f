"""OnePasswordAccessPolicy enforcement for the item and workload reconcilers.

The decisions are ``controllers.policy``'s (pure); this module feeds them from the caches:

- the policies, from a cluster-scoped informer (cluster-scoped even when ``WATCH_NAMESPACE`` is set, since
  policies live outside namespaces);
- a Namespace's labels, from the metadata-only Namespace informers the restart controllers already use
  (``controllers.watch.NamespaceMetadata``), so no extra watch or permission is needed.

A reconciler asks twice: ``admit`` before fetching the item (a namespace no policy selects costs no Connect
request and learns nothing about the item), ``authorize`` once the item is resolved (vault, title, tags).
Both raise ``AccessDeniedError``, which ``controllers.failures`` turns into ``Ready=False`` reason
``AccessDenied``, a Warning Event and one log line; no Secret is written. A Secret written before access
was revoked is kept, not updated, and the message says so.

Controllers whose keys the policies affect watch ``sources``: any policy change (and a Namespace label change)
enqueues their keys again, so policies take effect without a restart. Controllers wait for the informers
they watch to sync, so no key is reconciled before the policies are known (an unsynced, empty cache would
otherwise read as "no policy: allow everything").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from controllers.failures import AccessDeniedError
from controllers.policy import AccessDecision, AccessRequest, evaluate, namespace_denied
from controllers.resources import ONEPASSWORDACCESSPOLICIES
from controllers.watch import NamespaceMetadata, labels_of
from onepassword_access.paths import parse_item_path
from onepassword_access.resolve import ResolvedItem
from opsync.cache import Cache
from opsync.informer import Informer
from opsync.predicate import Predicate
from opsync.reconcile import Request
from opsync.source import Kind, Source

KEPT_SUFFIX = "the existing Secret is kept but no longer updated"

RequestsIn = Callable[[str | None], Iterable[Request]]
"""A controller's keys in one namespace (None: in every namespace)."""


class AccessControl:
    """Answers "may this namespace sync this item?" from the cached policies and Namespace labels."""

    def __init__(self, cache: Cache, namespaces: NamespaceMetadata) -> None:
        # optional: a cluster whose CRDs came from the Go operator has no policy CRD, hence no policy (allow all,
        # as before); the informer notices when the CRD is installed.
        self.policies: Informer = cache.informer(ONEPASSWORDACCESSPOLICIES, optional=True)
        self._namespaces = namespaces

    def decide(self, namespace: str, path: str, resolved: ResolvedItem) -> AccessDecision:
        """The decision for the item ``path`` resolved to.

        The vault's name is the path's vault segment when that segment resolved as a name; a path by vault id
        gives only the id (learning the name would cost a Connect request), so policies naming the vault by
        name do not match it: deny-safe, and the message names the id.
        """
        segment = parse_item_path(path).vault
        request = AccessRequest(
            namespace=namespace,
            namespace_labels=self._namespaces.labels(namespace),
            vault_id=resolved.vault_id,
            vault_name=segment if segment != resolved.vault_id else resolved.vault_id,
            item_title=resolved.item.title,
            item_tags=tuple(resolved.item.tags),
        )
        return evaluate(self.policies.list(), request)

    def admit(self, namespace: str, *, kept: bool) -> None:
        """Raise ``AccessDeniedError`` when policies exist and none selects ``namespace``.

        ``kept``: a Secret written earlier exists (the message then says it is kept).
        """
        denied = namespace_denied(self.policies.list(), namespace, self._namespaces.labels(namespace))
        if denied is not None:
            raise AccessDeniedError(_message(denied, kept=kept))

    def authorize(self, namespace: str, path: str, resolved: ResolvedItem, *, kept: bool) -> None:
        """Raise ``AccessDeniedError`` unless some policy lets ``namespace`` sync the resolved item."""
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


def _message(decision: AccessDecision, *, kept: bool) -> str:
    return f"access revoked: {decision.message}; {KEPT_SUFFIX}" if kept else decision.message
