"""What the operator's controllers watch: which updates matter, and the Namespaces' labels and annotations."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opsync.cache import Cache, metadata_only
from opsync.informer import Informer
from opsync.predicate import Predicate
from opsync.resources import NAMESPACES, KubeObject

_WATCHED_METADATA = ("labels", "annotations", "finalizers", "deletionTimestamp", "uid")


def _watched(obj: KubeObject) -> tuple[Any, ...]:
    meta = obj.get("metadata") or {}
    return (meta.get("generation"), *(meta.get(key) for key in _WATCHED_METADATA))


def spec_or_metadata_changed() -> Predicate:
    """Updates that change the spec (``generation``), labels, annotations, finalizers or deletion.

    Drops status-only updates: opsync's own status writes on OnePasswordItems, and the stream of status
    updates a rolling Deployment makes, which would otherwise each cause a reconcile.
    """
    return Predicate(on_update=lambda old, new: _watched(old) != _watched(new))


class NamespaceMetadata:
    """The labels and annotations of the watched Namespaces, from a metadata-only cache.

    With a namespace list, each Namespace is watched by name (``fieldSelector=metadata.name=<ns>``), which
    needs no cluster-wide permission (RBAC grants it with ``resourceNames``, as in the Go operator's #245 fix).
    """

    def __init__(self, cache: Cache, namespaces: Sequence[str] | None, *, selector: str | None = None) -> None:
        """With ``selector`` (``WATCH_NAMESPACE_SELECTOR``), the Namespaces it selects: one cluster-wide
        watch with that label selector (a Namespace whose labels stop matching leaves it as a deletion)."""
        if selector:
            self.informers: list[Informer] = [
                cache.informer(NAMESPACES, label_selector=selector, transform=metadata_only)
            ]
        elif namespaces:
            self.informers = [
                cache.informer(NAMESPACES, field_selector=f"metadata.name={name}", transform=metadata_only)
                for name in namespaces
            ]
        else:
            self.informers = [cache.informer(NAMESPACES, transform=metadata_only)]

    def _find(self, namespace: str) -> KubeObject | None:
        for informer in self.informers:
            found = informer.get("", namespace)
            if found is not None:
                return found
        return None

    def annotations(self, namespace: str) -> Mapping[str, str] | None:
        """The Namespace's annotations; None when it is not known (not watched, or not in the cache)."""
        found = self._find(namespace)
        if found is None:
            return None
        annotations: Mapping[str, str] = (found.get("metadata") or {}).get("annotations") or {}
        return annotations

    def labels(self, namespace: str) -> Mapping[str, str] | None:
        """The Namespace's labels; None when it is not in the cache (yet): label selectors then select nothing,
        whatever their expressions (an absent label set would satisfy ``DoesNotExist``)."""
        found = self._find(namespace)
        return labels_of(found) if found is not None else None


def labels_of(obj: KubeObject) -> Mapping[str, str]:
    """An object's labels (empty when it has none)."""
    labels: Mapping[str, str] = (obj.get("metadata") or {}).get("labels") or {}
    return labels


class SelectedNamespaces:
    """``WATCH_NAMESPACE_SELECTOR``: keeps the cache's namespace list equal to the Namespaces the selector's
    informer holds, as their labels change, without a restart.

    A namespace gaining the label is added to every namespaced informer (its objects arrive as adds and are
    reconciled); one losing it, or deleted, is dropped: its objects are forgotten, not treated as deleted, so
    nothing is synced there any more and nothing opsync made there is deleted or rolled back.
    """

    def __init__(
        self, cache: Cache, namespaces: Informer, *, on_change: Callable[[Sequence[str]], None] | None = None
    ) -> None:
        """``on_change(selected)`` runs after each change of the selection (for state kept per namespace)."""
        self._cache = cache
        self._namespaces = namespaces
        self._on_change = on_change
        namespaces.add_handler(self)

    def _follow(self) -> None:
        selected = sorted(ns["metadata"]["name"] for ns in self._namespaces.list())
        if tuple(selected) != self._cache.namespaces:
            self._cache.set_namespaces(selected)
            if self._on_change is not None:
                self._on_change(selected)

    def on_add(self, obj: KubeObject, is_initial_list: bool) -> None:
        """A Namespace now selected."""
        del obj, is_initial_list
        self._follow()

    def on_update(self, old: KubeObject, new: KubeObject) -> None:
        """Still selected (its other labels or annotations changed): nothing to do unless the set moved."""
        del old, new
        self._follow()

    def on_delete(self, obj: KubeObject) -> None:
        """No longer selected (label removed) or deleted."""
        del obj
        self._follow()
