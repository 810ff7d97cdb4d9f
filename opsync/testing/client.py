"""An in-memory ``Client`` and a manager around it, for unit tests of reconcilers.

What the fake does as the API server does: ``resourceVersion`` moves on every write (and a write carrying a
stale one fails with ``ConflictError``), ``uid`` and ``creationTimestamp`` are set on create, ``generation``
moves when anything but metadata and status changes, and an object with finalizers is only marked deleted
(``deletionTimestamp``) until a write removes the last one. Label selectors are the equality and existence
forms (``a=b``, ``a!=b``, ``a``, ``!a``).

What it does not do: no admission, defaulting or validation, no garbage collection, no field ownership
(server-side apply is a JSON merge patch, and so is a strategic merge patch), no JSON patch and no watch.
Tests that need those use ``opsync.envtest``.
"""

from __future__ import annotations

import builtins
import copy
import itertools
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any, Literal

from opsync.client import (
    AlreadyExistsError,
    Client,
    ConflictError,
    NotFoundError,
    PatchType,
    WatchEvent,
)
from opsync.informer import ResourceEventHandler
from opsync.resources import KubeObject, Resource

_Key = tuple[Resource, str, str]  # resource, namespace ("" if cluster-scoped), name
_CREATED = "2026-01-01T00:00:00Z"
_DELETED = "2026-01-01T00:00:01Z"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge, ``None`` removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def selector_predicate(selector: str | None) -> Callable[[KubeObject], bool]:
    """A string label selector (equality and existence forms) as a test on an object's labels."""
    terms: list[tuple[str, str, str]] = []  # (operator, key, value)
    for raw in (selector or "").split(","):
        term = raw.strip()
        if not term:
            continue
        if " in " in f" {term} " or " notin " in f" {term} " or "(" in term:
            raise ValueError(f"the fake client understands no set-based selector: {term!r}")
        if "!=" in term:
            key, value = term.split("!=", 1)
            terms.append(("!=", key.strip(), value.strip()))
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            terms.append(("=", key.strip(), value.strip()))
        elif term.startswith("!"):
            terms.append(("!", term[1:].strip(), ""))
        else:
            terms.append(("", term, ""))

    def holds(operator: str, key: str, value: str, labels: Mapping[str, str]) -> bool:
        if operator == "=":
            return labels.get(key) == value
        if operator == "!=":
            return labels.get(key) != value
        return (key in labels) != (operator == "!")

    def matches(obj: KubeObject) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(holds(operator, key, value, labels) for operator, key, value in terms)

    return matches


class FakeClient(Client):
    """``Client``'s reads and writes on a dict; ``actions`` lists every write as (verb, resource, key)."""

    def __init__(self, objects: Sequence[tuple[Resource, KubeObject]] = (), *, field_manager: str = "opsync") -> None:
        # No ApiClient behind it: the methods that would use one are all replaced below.
        self.field_manager = field_manager
        self.request_timeout = 0.0
        self.actions: list[tuple[str, Resource, str]] = []
        self._objects: dict[_Key, KubeObject] = {}
        self._versions = itertools.count(1)
        self._informers: list[FakeInformer] = []
        for resource, obj in objects:
            self._store(resource, self._created(resource, obj, (obj.get("metadata") or {}).get("namespace")))

    @property
    def host(self) -> str:
        return "fake"

    async def close(self) -> None:
        """Nothing to close."""

    # reads

    async def get(self, resource: Resource, name: str, namespace: str | None = None) -> KubeObject:
        """A copy of the object, or ``NotFoundError``."""
        return copy.deepcopy(self._find(resource, name, namespace))

    async def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
        resource_version: str | None = None,
        resource_version_match: str | None = None,
    ) -> KubeObject:
        """Every matching object in one page (``field_selector`` and paging are not supported)."""
        if field_selector or continue_token:
            raise NotImplementedError("the fake client supports no field selectors or continue tokens")
        items = [copy.deepcopy(obj) for obj in self.objects(resource, namespace, label_selector=label_selector)]
        return {"items": items[:limit] if limit else items, "metadata": {"resourceVersion": str(self._latest())}}

    def watch(self, resource: Resource, namespace: str | None = None, **_: Any) -> AsyncGenerator[WatchEvent, None]:
        """Not supported: use ``FakeManager``'s informers, which see every write at once."""
        raise NotImplementedError("the fake client has no watch; FakeInformer gets its events directly")

    def objects(
        self, resource: Resource, namespace: str | None = None, *, label_selector: str | None = None
    ) -> builtins.list[KubeObject]:
        """The stored objects themselves (not copies), sorted by namespace and name: for assertions."""
        matches = selector_predicate(label_selector)
        found = [
            obj
            for (kind, ns, _), obj in self._objects.items()
            if kind == resource and (namespace is None or ns == namespace) and matches(obj)
        ]
        return sorted(found, key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))

    # writes

    async def create(self, resource: Resource, body: KubeObject, namespace: str | None = None) -> KubeObject:
        """Store a copy of ``body`` with the server's metadata; ``AlreadyExistsError`` if the name is taken."""
        namespace = namespace or (body.get("metadata") or {}).get("namespace")
        if resource.namespaced and not namespace:
            raise ValueError(f"{resource}: a namespace is required to create")
        key = self._key(resource, body["metadata"]["name"], namespace)
        if key in self._objects:
            raise AlreadyExistsError(409, "AlreadyExists", f'{resource} "{key[2]}" already exists')
        obj = self._created(resource, body, namespace)
        self._record("create", resource, key)
        self._store(resource, obj)
        return copy.deepcopy(obj)

    async def replace(self, resource: Resource, body: KubeObject, *, subresource: str | None = None) -> KubeObject:
        """Replace the object; a ``resourceVersion`` in ``body`` other than the stored one is a conflict."""
        meta = body.get("metadata") or {}
        current = self._find(resource, meta["name"], meta.get("namespace"))
        wanted = meta.get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise ConflictError(409, "Conflict", f'Operation cannot be fulfilled on {resource} "{meta["name"]}"')
        if subresource == "status":
            new = {**copy.deepcopy(current), "status": copy.deepcopy(body.get("status"))}
        else:
            new = copy.deepcopy(body)
            new["metadata"] = {**current["metadata"], **copy.deepcopy(meta)}
            new["status"] = copy.deepcopy(current.get("status"))
        return self._update("replace", resource, current, new)

    async def patch(
        self,
        resource: Resource,
        name: str,
        body: KubeObject | Sequence[Any],
        namespace: str | None = None,
        *,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
        force: bool = False,
    ) -> KubeObject:
        """A merge patch (also for ``strategic`` and ``apply``, which create a missing object)."""
        if patch_type == "json" or not isinstance(body, dict):
            raise NotImplementedError("the fake client supports merge, strategic and apply patches only")
        try:
            current = self._find(resource, name, namespace)
        except NotFoundError:
            if patch_type != "apply":
                raise
            return await self.create(resource, body, namespace)
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise ConflictError(409, "Conflict", f'Operation cannot be fulfilled on {resource} "{name}"')
        if subresource == "status":
            body = {"status": body.get("status")}
        new = merge_patch(current, body)
        return self._update("patch", resource, current, new)

    async def delete(
        self,
        resource: Resource,
        name: str,
        namespace: str | None = None,
        *,
        propagation_policy: Literal["Foreground", "Background", "Orphan"] | None = None,
        preconditions: Mapping[str, str] | None = None,
    ) -> None:
        """Delete (or, with finalizers, mark deleted); ``preconditions`` on uid/resourceVersion are checked."""
        current = self._find(resource, name, namespace)
        for field, wanted in (preconditions or {}).items():
            if current["metadata"].get(field) != wanted:
                raise ConflictError(409, "Conflict", f"precondition failed: {field}")
        key = self._key(resource, name, namespace)
        self._record("delete", resource, key)
        if current["metadata"].get("finalizers"):
            if not current["metadata"].get("deletionTimestamp"):
                marked = copy.deepcopy(current)
                marked["metadata"]["deletionTimestamp"] = _DELETED
                self._bump(marked)
                self._store(resource, marked, old=current)
            return
        del self._objects[key]
        for informer in self._watching(resource, current):
            informer.deleted(current)

    # bookkeeping

    def _key(self, resource: Resource, name: str, namespace: str | None) -> _Key:
        if resource.namespaced and not namespace:
            raise ValueError(f"{resource} {name!r}: a namespace is required")
        return (resource, (namespace or "") if resource.namespaced else "", name)

    def _find(self, resource: Resource, name: str, namespace: str | None) -> KubeObject:
        key = self._key(resource, name, namespace)
        if key not in self._objects:
            raise NotFoundError(404, "NotFound", f'{resource} "{name}" not found')
        return self._objects[key]

    def _latest(self) -> int:
        return max((int(o["metadata"]["resourceVersion"]) for o in self._objects.values()), default=0)

    def _bump(self, obj: KubeObject) -> None:
        obj["metadata"]["resourceVersion"] = str(next(self._versions))

    def _created(self, resource: Resource, body: KubeObject, namespace: str | None) -> KubeObject:
        obj = copy.deepcopy(body)
        obj.setdefault("apiVersion", resource.api_version)
        obj.setdefault("kind", resource.kind)
        meta = obj.setdefault("metadata", {})
        if resource.namespaced:
            meta["namespace"] = namespace
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_CREATED, generation=1)
        self._bump(obj)
        return obj

    def _update(self, verb: str, resource: Resource, current: KubeObject, new: KubeObject) -> KubeObject:
        meta = new["metadata"]
        for fixed in ("uid", "creationTimestamp", "deletionTimestamp", "namespace", "name"):
            if fixed in current["metadata"]:
                meta[fixed] = current["metadata"][fixed]
        meta["generation"] = current["metadata"].get("generation", 1) + (_spec(new) != _spec(current))
        self._bump(new)
        key = self._key(resource, meta["name"], meta.get("namespace"))
        self._record(verb, resource, key)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self._objects[key]  # the last finalizer is gone: the deletion completes
            for informer in self._watching(resource, current):
                informer.deleted(current)
            return copy.deepcopy(new)
        self._store(resource, new, old=current)
        return copy.deepcopy(new)

    def _record(self, verb: str, resource: Resource, key: _Key) -> None:
        self.actions.append((verb, resource, f"{key[1]}/{key[2]}" if key[1] else key[2]))

    def _store(self, resource: Resource, obj: KubeObject, old: KubeObject | None = None) -> None:
        self._objects[self._key(resource, obj["metadata"]["name"], obj["metadata"].get("namespace"))] = obj
        for informer in self._informers:
            if informer.resource != resource:
                continue
            was, now = old is not None and informer.selects(old), informer.selects(obj)
            if old is not None and was and now:
                informer.updated(copy.deepcopy(old), copy.deepcopy(obj))
            elif now:
                informer.added(copy.deepcopy(obj))
            elif old is not None and was:
                informer.deleted(copy.deepcopy(old))

    def _watching(self, resource: Resource, obj: KubeObject) -> builtins.list[FakeInformer]:
        return [i for i in self._informers if i.resource == resource and i.selects(obj)]


def _spec(obj: KubeObject) -> KubeObject:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


class FakeInformer:
    """An informer over a ``FakeClient``'s objects: always synced, and told of every write at once."""

    def __init__(self, client: FakeClient, resource: Resource, label_selector: str | None = None) -> None:
        self.resource = resource
        self.label_selector = label_selector
        self._client = client
        self._handlers: list[ResourceEventHandler] = []
        self._matches = selector_predicate(label_selector)
        client._informers.append(self)

    def selects(self, obj: KubeObject) -> bool:
        """Whether ``obj`` is in this informer's view (its label selector)."""
        return self._matches(obj)

    def get(self, namespace: str, name: str) -> KubeObject | None:
        """A copy of the object, if the view holds it."""
        key = (self.resource, namespace if self.resource.namespaced else "", name)
        found = self._client._objects.get(key)
        return copy.deepcopy(found) if found is not None and self.selects(found) else None

    def list(self, namespace: str | None = None) -> builtins.list[KubeObject]:
        """Copies of the objects in the view (in ``namespace``, when given)."""
        objects = self._client.objects(self.resource, namespace, label_selector=self.label_selector)
        return [copy.deepcopy(obj) for obj in objects]

    def add_handler(self, handler: ResourceEventHandler) -> None:
        """Call ``handler`` for every change from now on, after replaying the current objects as adds."""
        self._handlers.append(handler)
        for obj in self.list():
            handler.on_add(obj, True)

    def has_synced(self) -> bool:
        return True

    async def wait_for_sync(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - Informer's API
        return True

    def added(self, obj: KubeObject) -> None:
        for handler in self._handlers:
            handler.on_add(obj, False)

    def updated(self, old: KubeObject, new: KubeObject) -> None:
        for handler in self._handlers:
            handler.on_update(old, new)

    def deleted(self, obj: KubeObject) -> None:
        for handler in self._handlers:
            handler.on_delete(obj)


class FakeCache:
    """``Cache.informer`` over a ``FakeClient``: one ``FakeInformer`` per kind and label selector."""

    def __init__(self, client: FakeClient) -> None:
        self._client = client
        self._informers: dict[tuple[Resource, str | None], FakeInformer] = {}

    def informer(self, resource: Resource, *, label_selector: str | None = None, **_: Any) -> FakeInformer:
        """The informer for ``resource`` and ``label_selector`` (field selectors and transforms are ignored)."""
        key = (resource, label_selector)
        if key not in self._informers:
            self._informers[key] = FakeInformer(self._client, resource, label_selector)
        return self._informers[key]


class FakeManager:
    """What reconcilers and ``Builder`` use of a ``Manager``: ``client``, ``cache`` and ``add``."""

    def __init__(self, client: FakeClient | None = None) -> None:
        self.client = client or FakeClient()
        self.cache = FakeCache(self.client)
        self.runnables: builtins.list[Any] = []

    def add(self, runnable: Any, *, leader_only: bool = True) -> None:
        """Keep ``runnable`` (a built controller, say) for the test to run or inspect."""
        self.runnables.append(runnable)
