"""The store behind an informer: objects by namespace and name, with secondary indexes (client-go's
``cache.Indexer``). Not thread-safe and needs no lock: everything runs on one event loop.

Objects are held serialized (``marshal``, the interpreter's own compact format for plain data) and every read
decodes a fresh copy, as controller-runtime's cache hands out deep copies: a caller may change what it reads
without changing the cache. A decoded Secret or OnePasswordItem as nested dicts is about twice its serialized
size, and the cache holds one per managed object (docs/benchmarks.md, "Memory"); decoding one costs about
3 µs. Keys interned before storing (``opsync.informer.compact``) come back interned, so copies share them.
"""

from __future__ import annotations

import builtins
import logging
import marshal
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from opsync.resources import KubeObject

log = logging.getLogger(__name__)

IndexFunc = Callable[[KubeObject], Iterable[str]]
Key = tuple[str, str]  # (namespace or "", name)
Objects = list[KubeObject]  # aliased: ``Store.list``/``Informer.list`` shadow ``list`` in their class bodies
Keys = list[Key]


def key_of(obj: KubeObject) -> Key:
    """The store key of an object."""
    meta = obj["metadata"]
    return (meta.get("namespace") or "", meta["name"])


@dataclass(frozen=True, slots=True)
class Delta:
    """One change a store replacement found: ``old`` is None for an add, ``new`` is None for a delete."""

    old: KubeObject | None
    new: KubeObject | None


def _freeze(obj: KubeObject) -> bytes:
    return marshal.dumps(obj)


def _thaw(raw: bytes) -> KubeObject:
    obj: KubeObject = marshal.loads(raw)  # noqa: S302 -- only ever bytes this module wrote, in this process
    return obj


class Store:
    """Objects by namespace and name, plus secondary indexes kept current on every change. Each read returns a
    new copy of the stored object."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, bytes]] = {}
        self._indexers: dict[str, IndexFunc] = {}
        # value -> the one key indexed under it, or a set of two or more: most values (a Secret's item path, the
        # Secret a workload uses) belong to one object, and a set of one would cost 216 bytes more each.
        self._indices: dict[str, dict[str, Key | set[Key]]] = {}
        self._indexed: dict[str, dict[Key, tuple[str, ...]]] = {}  # what each object is indexed under

    def __len__(self) -> int:
        return sum(len(names) for names in self._items.values())

    def get(self, namespace: str, name: str) -> KubeObject | None:
        """The object ``namespace/name`` (namespace "" for cluster-scoped), or None."""
        raw = self._items.get(namespace, {}).get(name)
        return None if raw is None else _thaw(raw)

    def list(self, namespace: str | None = None) -> Objects:
        """Every object, or those in ``namespace``."""
        if namespace is not None:
            return [_thaw(raw) for raw in self._items.get(namespace, {}).values()]
        return [_thaw(raw) for names in self._items.values() for raw in names.values()]

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
        return [obj for obj in (self.get(*key) for key in self.index_keys(name, value)) if obj is not None]

    def index_keys(self, name: str, value: str) -> Keys:
        """The keys of the objects indexer ``name`` mapped to ``value``, sorted (client-go's ``IndexKeys``):
        what an object is indexed under, without decoding it."""
        found = self._index_named(name).get(value)
        if found is None:
            return []
        return sorted(found) if isinstance(found, set) else [found]

    def index_values(self, name: str) -> builtins.list[str]:
        """Every value indexer ``name`` maps some object to (client-go's ``ListIndexFuncValues``)."""
        return list(self._index_named(name))

    def _index_named(self, name: str) -> dict[str, Key | set[Key]]:
        if name not in self._indexers:
            raise KeyError(f"no indexer {name!r}")
        return self._indices[name]

    def put(self, obj: KubeObject) -> KubeObject | None:
        """Store ``obj``; return the object it replaced, if any."""
        key = key_of(obj)
        names = self._items.setdefault(key[0], {})
        old = names.get(key[1])
        names[key[1]] = _freeze(obj)
        for name in self._indexers:
            self._unindex(name, key)
            self._index(name, key, obj)
        return None if old is None else _thaw(old)

    def remove(self, key: Key) -> KubeObject | None:
        """Remove the object at ``key``; return it, if there was one."""
        names = self._items.get(key[0])
        old = names.pop(key[1], None) if names is not None else None
        if names is not None and not names:
            del self._items[key[0]]
        for name in self._indexers:
            self._unindex(name, key)
        return None if old is None else _thaw(old)

    def replace(self, objects: Iterable[KubeObject], namespace: str | None = None) -> builtins.list[Delta]:
        """Make the store's content (within ``namespace``, or all of it) equal ``objects``; return what changed."""
        deltas: list[Delta] = []
        scopes = self._items.items() if namespace is None else [(namespace, self._items.get(namespace, {}))]
        stale = {(ns, name) for ns, names in scopes for name in names}
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
        index = self._indices[name]
        for value in values:
            found = index.get(value)
            if found is None:
                index[value] = key
            elif isinstance(found, set):
                found.add(key)
            elif found != key:
                index[value] = {found, key}

    def _unindex(self, name: str, key: Key) -> None:
        index = self._indices[name]
        for value in self._indexed[name].pop(key, ()):
            found = index.get(value)
            if isinstance(found, set):
                found.discard(key)
                if len(found) == 1:
                    index[value] = found.pop()
            elif found == key:
                del index[value]
