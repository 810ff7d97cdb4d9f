"""Event filters applied before a key is enqueued: controller-runtime's ``pkg/predicate``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opsync.labels import selector_matches
from opsync.resources import KubeObject


def _meta(obj: KubeObject) -> dict[str, Any]:
    meta: dict[str, Any] = obj.get("metadata") or {}
    return meta


@dataclass(frozen=True)
class Predicate:
    """Filters events before they are enqueued; each kind of event passes unless its function says no.

    Build one from functions (``Predicate(on_update=lambda old, new: ...)``), with the helpers below, or
    subclass it and override ``create``/``update``/``delete``.
    """

    on_create: Callable[[KubeObject], bool] | None = None
    on_update: Callable[[KubeObject, KubeObject], bool] | None = None
    on_delete: Callable[[KubeObject], bool] | None = None

    def create(self, obj: KubeObject) -> bool:
        """Whether an added object (including those of the initial list) is enqueued."""
        return self.on_create is None or self.on_create(obj)

    def update(self, old: KubeObject, new: KubeObject) -> bool:
        """Whether an update is enqueued."""
        return self.on_update is None or self.on_update(old, new)

    def delete(self, obj: KubeObject) -> bool:
        """Whether a deletion is enqueued."""
        return self.on_delete is None or self.on_delete(obj)


def generation_changed() -> Predicate:
    """Updates only when ``metadata.generation`` changed (spec changes; status and metadata edits are
    ignored). Kinds without a generation, such as ConfigMap and Secret, then never pass updates."""
    return Predicate(on_update=lambda old, new: _meta(old).get("generation") != _meta(new).get("generation"))


def annotation_changed(key: str | None = None) -> Predicate:
    """Updates only when the annotations changed (only annotation ``key``, when given)."""

    def annotations(obj: KubeObject) -> Mapping[str, str]:
        values: Mapping[str, str] = _meta(obj).get("annotations") or {}
        return values if key is None else {key: values[key]} if key in values else {}

    return Predicate(on_update=lambda old, new: annotations(old) != annotations(new))


def label_selector(selector: Mapping[str, Any]) -> Predicate:
    """Events for objects whose labels match a ``LabelSelector`` (``matchLabels``/``matchExpressions``).

    As in controller-runtime, an update is judged on the new object only.
    """

    def matches(obj: KubeObject) -> bool:
        return selector_matches(selector, _meta(obj).get("labels"))

    return Predicate(on_create=matches, on_update=lambda _old, new: matches(new), on_delete=matches)


def resource_version_changed() -> Predicate:
    """Updates only when ``metadata.resourceVersion`` changed (drops resync replays)."""
    return Predicate(on_update=lambda old, new: _meta(old).get("resourceVersion") != _meta(new).get("resourceVersion"))


class OwnWrites:
    """The objects as this process last wrote them, to drop the watch event each write causes (its echo): a
    level-triggered reconciler that just wrote an object learns nothing from seeing it come back, and
    reconciling it again costs as much as the write's own reconcile.

    ``record`` the object a write returned; ``predicate()`` then drops the first create or update event that
    carries exactly its ``resourceVersion``. Any other event of the object (someone else's change, a delete)
    passes and clears the record, as ``forget`` does when the echo must be reconciled after all. Records are
    consumed: give the predicate to one watch, as the only predicate of its handler (``all`` stops at the first
    that drops an event, which would leave the record behind).
    """

    def __init__(self) -> None:
        self._versions: dict[tuple[str, str], str] = {}

    @staticmethod
    def _key(obj: KubeObject) -> tuple[str, str]:
        meta = _meta(obj)
        return meta.get("namespace") or "", meta.get("name") or ""

    def record(self, obj: KubeObject, *, cached: KubeObject | None = None) -> None:
        """``obj`` as a write of this process returned it; ``cached``, the informer's copy now. When that
        already is the written version, its echo came before the write's answer and has passed: nothing is
        kept, so a record lives only until its echo."""
        version = _meta(obj).get("resourceVersion")
        if version and (cached is None or _meta(cached).get("resourceVersion") != version):
            self._versions[self._key(obj)] = version

    def forget(self, namespace: str, name: str) -> None:
        """Let the echo of the last write of ``namespace/name`` pass."""
        self._versions.pop((namespace, name), None)

    def __len__(self) -> int:
        return len(self._versions)

    def _changed(self, obj: KubeObject) -> bool:
        return self._versions.pop(self._key(obj), None) != _meta(obj).get("resourceVersion")

    def _gone(self, obj: KubeObject) -> bool:
        self._versions.pop(self._key(obj), None)
        return True

    def predicate(self) -> Predicate:
        """Drops the echo of each recorded write (see the class docstring)."""
        return Predicate(on_create=self._changed, on_update=lambda _old, new: self._changed(new), on_delete=self._gone)


def and_(*predicates: Predicate) -> Predicate:
    """Passes what every one of ``predicates`` passes."""
    return Predicate(
        on_create=lambda obj: all(p.create(obj) for p in predicates),
        on_update=lambda old, new: all(p.update(old, new) for p in predicates),
        on_delete=lambda obj: all(p.delete(obj) for p in predicates),
    )


def or_(*predicates: Predicate) -> Predicate:
    """Passes what any one of ``predicates`` passes."""
    return Predicate(
        on_create=lambda obj: any(p.create(obj) for p in predicates),
        on_update=lambda old, new: any(p.update(old, new) for p in predicates),
        on_delete=lambda obj: any(p.delete(obj) for p in predicates),
    )


def not_(predicate: Predicate) -> Predicate:
    """Passes what ``predicate`` drops."""
    return Predicate(
        on_create=lambda obj: not predicate.create(obj),
        on_update=lambda old, new: not predicate.update(old, new),
        on_delete=lambda obj: not predicate.delete(obj),
    )
