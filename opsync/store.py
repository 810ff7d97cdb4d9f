"""The store behind an informer: objects by namespace and name, with secondary indexes (client-go's
``cache.Indexer``). Not thread-safe and needs no lock: everything runs on one event loop.

Objects are held serialized and every read decodes a fresh copy, as controller-runtime's cache hands out
deep copies: a caller may change what it reads without changing the cache. The cache holds one object per
managed Secret, item and workload, so their size is most of what opsync holds per item (docs/benchmarks.md,
"Memory"). Each is ``marshal``-ed (the interpreter's own compact format for plain data: half the size of the
nested dicts), then deflated against a preset dictionary: the *shape* of the first object the store was
given (its keys, and the values of :data:`SHARED_VALUE_KEYS`; no other value, so no secret outlives its
object in the dictionary). Objects of one kind spell the same keys, which the dictionary turns into
back-references: a managed Secret takes about 340 bytes instead of 800 marshalled. Writing one costs about
20 µs, reading one 7 µs. Keys interned before storing (``opsync.informer.compact``) come back interned, so
copies share them.
"""

from __future__ import annotations

import builtins
import logging
import marshal
import zlib
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

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


class Frozen(NamedTuple):
    """An object as a store keeps it (``Store.freeze``): what ``Store.replace`` takes, so that a listing of
    thousands of objects is held as bytes while its pages arrive, not as thousands of decoded dicts."""

    key: Key
    blob: bytes


class Delta:
    """One change a store replacement found: ``old`` is None for an add, ``new`` is None for a delete. Each side
    is held as the store holds it and decoded when read (a new copy each time), so the thousands of deltas of
    a first listing cost their bytes, not their dicts."""

    __slots__ = ("_codec", "_new", "_old")

    def __init__(self, codec: _Codec, old: bytes | None, new: bytes | None) -> None:
        self._codec, self._old, self._new = codec, old, new

    @property
    def old(self) -> KubeObject | None:
        return None if self._old is None else self._codec.thaw(self._old)

    @property
    def new(self) -> KubeObject | None:
        return None if self._new is None else self._codec.thaw(self._new)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Delta) and (self.old, self.new) == (other.old, other.new)

    __hash__ = None  # type: ignore[assignment]  # equal by content, which a dict can change

    def __repr__(self) -> str:
        return f"Delta(old={self.old!r}, new={self.new!r})"


SHARED_VALUE_KEYS = frozenset({"apiVersion", "kind", "namespace", "type", "status", "reason"})
"""Keys whose values come from small sets shared by many objects (never secret): kept in a store's dictionary,
and interned by ``opsync.informer.compact``."""
OPAQUE_KEYS = frozenset({"data", "stringData", "binaryData"})
"""Keys of a Secret's or ConfigMap's values, which may be secrets: never shared, whatever their own keys."""

_WBITS = 12  # a 4 KiB window: the dictionary and most objects fit, and a compressor's state stays small
_LEVEL = 6
_MEM_LEVEL = 8


def _shape(value: Any, key: str = "") -> Any:
    """``value`` with its keys and lists as they are and every scalar blanked but a shared value."""
    if key in OPAQUE_KEYS and isinstance(value, dict):
        return dict.fromkeys(value, "")
    if isinstance(value, dict):
        return {k: _shape(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    if isinstance(value, str):
        return value if key in SHARED_VALUE_KEYS else ""
    return value


class _Codec:
    """What a store keeps of an object and back: ``marshal``, deflated against the dictionary learned from the
    first object encoded (never changed after, since every stored blob depends on it)."""

    def __init__(self) -> None:
        self._zdict: bytes | None = None

    def freeze(self, obj: KubeObject) -> bytes:
        if self._zdict is None:
            self._zdict = marshal.dumps(_shape(obj))[-(1 << _WBITS) :]
        deflate = zlib.compressobj(_LEVEL, zlib.DEFLATED, -_WBITS, _MEM_LEVEL, zlib.Z_DEFAULT_STRATEGY, self._zdict)
        return deflate.compress(marshal.dumps(obj)) + deflate.flush()

    def thaw(self, blob: bytes) -> KubeObject:
        assert self._zdict is not None  # a blob exists only once freeze has learned the dictionary
        raw = zlib.decompressobj(-_WBITS, self._zdict).decompress(blob)
        obj: KubeObject = marshal.loads(raw)  # noqa: S302 -- only ever bytes this module wrote, in this process
        return obj


class Store:
    """Objects by namespace and name, plus secondary indexes kept current on every change. Each read returns a
    new copy of the stored object."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, bytes]] = {}
        self._codec = _Codec()
        self._indexers: dict[str, IndexFunc] = {}
        # value -> the one key indexed under it, or a set of two or more: most values (a Secret's item path, the
        # Secret a workload uses) belong to one object, and a set of one would cost 216 bytes more each.
        self._indices: dict[str, dict[str, Key | set[Key]]] = {}
        # What each object is indexed under; an object an index maps to nothing has no entry.
        self._indexed: dict[str, dict[Key, tuple[str, ...]]] = {}

    def __len__(self) -> int:
        return sum(len(names) for names in self._items.values())

    def get(self, namespace: str, name: str) -> KubeObject | None:
        """The object ``namespace/name`` (namespace "" for cluster-scoped), or None."""
        raw = self._items.get(namespace, {}).get(name)
        return None if raw is None else self._codec.thaw(raw)

    def list(self, namespace: str | None = None) -> Objects:
        """Every object, or those in ``namespace``."""
        if namespace is not None:
            return [self._codec.thaw(raw) for raw in self._items.get(namespace, {}).values()]
        return [self._codec.thaw(raw) for names in self._items.values() for raw in names.values()]

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
        old = self._put(self.freeze(obj), obj)
        return None if old is None else self._codec.thaw(old)

    def freeze(self, obj: KubeObject) -> Frozen:
        """``obj`` as the store would hold it, for :meth:`replace`."""
        return Frozen(key_of(obj), self._codec.freeze(obj))

    def remove(self, key: Key) -> KubeObject | None:
        """Remove the object at ``key``; return it, if there was one."""
        old = self._remove(key)
        return None if old is None else self._codec.thaw(old)

    def replace(self, objects: Iterable[Frozen], namespace: str | None = None) -> builtins.list[Delta]:
        """Make the store's content (within ``namespace``, or all of it) equal ``objects`` (from :meth:`freeze`);
        return what changed."""
        deltas: list[Delta] = []
        scopes = self._items.items() if namespace is None else [(namespace, self._items.get(namespace, {}))]
        stale = {(ns, name) for ns, names in scopes for name in names}
        for frozen in objects:
            stale.discard(frozen.key)
            old = self._items.get(frozen.key[0], {}).get(frozen.key[1])
            if old == frozen.blob:
                continue
            new = self._codec.thaw(frozen.blob)  # to index it
            # marshal may spell equal objects differently (it marks the strings others share): compare them.
            if old is not None and self._codec.thaw(old) == new:
                continue
            self._put(frozen, new)
            deltas.append(Delta(self._codec, old, frozen.blob))
        for key in sorted(stale):
            deltas.append(Delta(self._codec, self._remove(key), None))
        return deltas

    def _put(self, frozen: Frozen, obj: KubeObject) -> bytes | None:
        """Hold ``frozen`` (``obj``, encoded) and index ``obj``; return the blob it replaced, if any."""
        key = frozen.key
        names = self._items.setdefault(key[0], {})
        old = names.get(key[1])
        names[key[1]] = frozen.blob
        for name in self._indexers:
            self._unindex(name, key)
            self._index(name, key, obj)
        return old

    def _remove(self, key: Key) -> bytes | None:
        names = self._items.get(key[0])
        old = names.pop(key[1], None) if names is not None else None
        if names is not None and not names:
            del self._items[key[0]]
        for name in self._indexers:
            self._unindex(name, key)
        return old

    def _index(self, name: str, key: Key, obj: KubeObject) -> None:
        try:
            values = tuple(self._indexers[name](obj))
        except Exception:
            log.exception("indexer %s failed on %s/%s; not indexed", name, *key)
            values = ()
        if not values:
            return  # most objects are in few of a store's indexes: no entry for the others
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
