"""The store behind an informer: objects by namespace and name, with secondary indexes (client-go's
``cache.Indexer``). Not thread-safe and needs no lock: everything runs on one event loop."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from opsync.resources import KubeObject

log = logging.getLogger(__name__)

IndexFunc = Callable[[KubeObject], Iterable[str]]
Key = tuple[str, str]  # (namespace or "", name)
Objects = list[KubeObject]  # aliased: ``Store.list``/``Informer.list`` shadow ``list`` in their class bodies


def key_of(obj: KubeObject) -> Key:
    """The store key of an object."""
    meta = obj["metadata"]
    return (meta.get("namespace") or "", meta["name"])


@dataclass(frozen=True, slots=True)
class Delta:
    """One change a store replacement found: ``old`` is None for an add, ``new`` is None for a delete."""

    old: KubeObject | None
    new: KubeObject | None


class Store:
    """Objects by namespace and name, plus secondary indexes kept current on every change."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, KubeObject]] = {}
        self._indexers: dict[str, IndexFunc] = {}
        self._indices: dict[str, dict[str, set[Key]]] = {}
        self._indexed: dict[str, dict[Key, tuple[str, ...]]] = {}  # what each object is indexed under

    def __len__(self) -> int:
        return sum(len(names) for names in self._items.values())

    def get(self, namespace: str, name: str) -> KubeObject | None:
        """The object ``namespace/name`` (namespace "" for cluster-scoped), or None."""
        return self._items.get(namespace, {}).get(name)

    def list(self, namespace: str | None = None) -> Objects:
        """Every object, or those in ``namespace``."""
        if namespace is not None:
            return list(self._items.get(namespace, {}).values())
        return [obj for names in self._items.values() for obj in names.values()]

    def add_indexer(self, name: str, fn: IndexFunc) -> None:
        """Index objects by the values ``fn`` returns; existing objects are indexed now."""
        if name in self._indexers:
            raise ValueError(f"indexer {name!r} already exists")
        self._indexers[name] = fn
        self._indices[name] = {}
        self._indexed[name] = {}
        for obj in self.list():
            self._index(name, key_of(obj), obj)

    def by_index(self, name: str, value: str) -> Objects:
        """The objects indexer ``name`` mapped to ``value``."""
        if name not in self._indexers:
            raise KeyError(f"no indexer {name!r}")
        keys = self._indices[name].get(value, ())
        return [obj for obj in (self.get(*key) for key in sorted(keys)) if obj is not None]

    def put(self, obj: KubeObject) -> KubeObject | None:
        """Store ``obj``; return the object it replaced, if any."""
        key = key_of(obj)
        old = self._items.setdefault(key[0], {}).get(key[1])
        self._items[key[0]][key[1]] = obj
        for name in self._indexers:
            self._unindex(name, key)
            self._index(name, key, obj)
        return old

    def remove(self, key: Key) -> KubeObject | None:
        """Remove the object at ``key``; return it, if there was one."""
        names = self._items.get(key[0])
        old = names.pop(key[1], None) if names is not None else None
        if names is not None and not names:
            del self._items[key[0]]
        for name in self._indexers:
            self._unindex(name, key)
        return old

    def replace(self, objects: Iterable[KubeObject], namespace: str | None = None) -> builtins.list[Delta]:
        """Make the store's content (within ``namespace``, or all of it) equal ``objects``; return what changed."""
        deltas: list[Delta] = []
        stale = {key_of(obj) for obj in self.list(namespace)}
        for obj in objects:
            key = key_of(obj)
            stale.discard(key)
            old = self.get(*key)
            if old != obj:
                self.put(obj)
                deltas.append(Delta(old, obj))
        for key in sorted(stale):
            deltas.append(Delta(self.remove(key), None))
        return deltas

    def _index(self, name: str, key: Key, obj: KubeObject) -> None:
        try:
            values = tuple(self._indexers[name](obj))
        except Exception:
            log.exception("indexer %s failed on %s/%s; not indexed", name, *key)
            values = ()
        self._indexed[name][key] = values
        for value in values:
            self._indices[name].setdefault(value, set()).add(key)

    def _unindex(self, name: str, key: Key) -> None:
        index = self._indices[name]
        for value in self._indexed[name].pop(key, ()):
            keys = index.get(value)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[value]
