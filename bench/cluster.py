"""What the benchmarks put in 1Password and in Kubernetes, created fast, and watched with timestamps.

Every object is created through ``opsync.client.Client`` (the client opsync itself uses) with a bounded number
of requests in flight. ``Watch`` keeps an informer in the benchmark process and records, per object, the first
moment a condition held, which is how "Ready", "Secret updated" and "restarted" are timed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controllers.constants import AUTO_RESTART_ANNOTATION, ITEM_VERSION_ANNOTATION, LAST_RESTARTED_ANNOTATION
from controllers.resources import ONEPASSWORDITEMS
from opsync.client import Client
from opsync.informer import Informer
from opsync.resources import DEPLOYMENTS, NAMESPACES, SECRETS, KubeObject, Resource

TOKEN = "opsync-bench-token"
VAULTS = 5

Condition = Callable[[KubeObject], bool]


@dataclass(frozen=True)
class ItemRef:
    """One 1Password item the benchmark uses: ``item-<i>`` in vault ``bench-<i % VAULTS>``."""

    index: int

    @property
    def vault(self) -> str:
        """The vault's name."""
        return f"bench-{self.index % VAULTS}"

    @property
    def title(self) -> str:
        """The item's title; also the name of its OnePasswordItem and Secret."""
        return f"item-{self.index:05d}"

    @property
    def path(self) -> str:
        """The item path by names, as users usually write it."""
        return f"vaults/{self.vault}/items/{self.title}"


def items(count: int) -> list[ItemRef]:
    """The first ``count`` items."""
    return [ItemRef(i) for i in range(count)]


def emulator_data(count: int) -> dict[str, Any]:
    """Emulator data: ``count`` login items (username, password, a URL) spread over ``VAULTS`` vaults."""
    vaults: dict[str, list[dict[str, Any]]] = {f"bench-{v}": [] for v in range(VAULTS)}
    for ref in items(count):
        vaults[ref.vault].append(
            {
                "title": ref.title,
                "urls": [{"href": f"https://{ref.title}.example.internal", "primary": True}],
                "fields": [
                    {"label": "username", "value": f"user-{ref.index}", "purpose": "USERNAME"},
                    {"label": "password", "value": f"initial-{ref.index}", "type": "CONCEALED", "purpose": "PASSWORD"},
                ],
            }
        )
    return {
        "tokens": [{"token": TOKEN, "name": "opsync-bench"}],
        "vaults": [{"name": name, "items": entries} for name, entries in vaults.items()],
    }


def namespace_of(namespaces: Sequence[str], ref: ItemRef) -> str:
    """Item ``i`` goes to namespace ``i % len(namespaces)`` (one namespace per vault by default)."""
    return namespaces[ref.index % len(namespaces)]


def onepassword_item(ref: ItemRef) -> KubeObject:
    """The OnePasswordItem for ``ref``."""
    return {
        "apiVersion": "onepassword.com/v1",
        "kind": "OnePasswordItem",
        "metadata": {"name": ref.title},
        "spec": {"itemPath": ref.path},
    }


def plain_secret(name: str, size: int = 3, value_bytes: int = 24) -> KubeObject:
    """A Secret opsync does not manage: ``size`` keys of ``value_bytes`` each (by default about as big as a
    managed one)."""
    data = {
        f"key-{k}": base64.b64encode(f"{name}-value-{k}-".ljust(value_bytes, "x").encode()).decode()
        for k in range(size)
    }
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "Opaque", "data": data}


def copy_of(secret: KubeObject) -> KubeObject:
    """The same Secret (name, labels, annotations, type, data) as a new object, without owner references."""
    meta = secret["metadata"]
    kept = {k: meta[k] for k in ("name", "labels", "annotations") if meta.get(k)}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": kept,
        "type": secret.get("type", "Opaque"),
        "data": secret.get("data") or {},
    }


def deployment(name: str, secret: str) -> KubeObject:
    """A Deployment with auto-restart on that reads ``secret``; zero replicas, so no Pods (nor ReplicaSet churn
    beyond one per rollout)."""
    labels = {"app": name}
    container = {
        "name": "app",
        "image": "example.invalid/app:1",
        "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": {AUTO_RESTART_ANNOTATION: "true"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }


def restarted_at(workload: KubeObject) -> str | None:
    """The pod-template restart annotation opsync sets, if any."""
    template = (workload.get("spec") or {}).get("template") or {}
    return ((template.get("metadata") or {}).get("annotations") or {}).get(LAST_RESTARTED_ANNOTATION)


def is_ready(item: KubeObject) -> bool:
    """Whether a OnePasswordItem's ``Ready`` condition is True."""
    conditions = (item.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


async def create_all(
    client: Client, resource: Resource, bodies: Iterable[tuple[str, KubeObject]], concurrency: int
) -> list[float]:
    """Create ``(namespace, body)`` pairs with at most ``concurrency`` requests in flight; when each create was
    answered (``time.perf_counter()``), in order."""
    slots = asyncio.Semaphore(concurrency)
    answered: list[float] = []

    async def create(namespace: str, body: KubeObject) -> None:
        async with slots:
            await client.create(resource, body, namespace)
            answered.append(time.perf_counter())

    await asyncio.gather(*(create(namespace, body) for namespace, body in bodies))
    return answered


async def floor_writes(
    client: Client,
    items: Sequence[tuple[str, KubeObject, KubeObject, KubeObject]],
    concurrency: int,
) -> list[float]:
    """The initial sync's floor: for each ``(namespace, item, secret, status)``, the user's create of the
    OnePasswordItem, then what no correct operator can skip: its Secret's create (owned by the item, as an
    operator makes it) and the item's status write. The user's creates have ``concurrency`` requests in
    flight, as the benchmark's apply does, and beside them an ideal operator with ``concurrency`` workers, which
    reads nothing, asks 1Password nothing and starts on an item as soon as its create is answered. When each
    status write was answered (``time.perf_counter()``), in order."""
    user, operator = asyncio.Semaphore(concurrency), asyncio.Semaphore(concurrency)
    answered: list[float] = []

    async def one(namespace: str, item: KubeObject, secret: KubeObject, status: KubeObject) -> None:
        async with user:
            created = await client.create(ONEPASSWORDITEMS, item, namespace)
        meta = created["metadata"]
        owner = {  # the reference opsync writes (controllers.desired.opi_owner_reference)
            "apiVersion": item["apiVersion"],
            "kind": item["kind"],
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        owned = {**secret, "metadata": {**secret["metadata"], "ownerReferences": [owner]}}
        async with operator:
            await client.create(SECRETS, owned, namespace)
            await client.patch(ONEPASSWORDITEMS, meta["name"], {"status": status}, namespace, subresource="status")
        answered.append(time.perf_counter())

    await asyncio.gather(*(one(*entry) for entry in items))
    return answered


@dataclass(frozen=True, slots=True)
class Change:
    """One item change as it reaches Kubernetes: the Secret's new data and item-version, then the restart of
    the Deployment reading it (``restarted_at``: the value of its pod-template restart annotation)."""

    namespace: str
    secret: str
    data: Mapping[str, str]
    item_version: str
    deployment: str
    restarted_at: str


async def floor_changes(client: Client, changes: Sequence[Change], concurrency: int) -> None:
    """Propagation's floor: what no correct operator can skip when items change, an update of each Secret
    (its data and item-version) and the restart of the Deployment reading it. The Secret writes have
    ``concurrency`` requests in flight, and beside them the restarts, ``concurrency`` at a time, each as soon
    as its Secret's write is answered (as opsync's two controllers do); nothing is read, 1Password is not asked,
    and there is no status patch nor Event."""
    writers, restarters = asyncio.Semaphore(concurrency), asyncio.Semaphore(concurrency)

    async def one(change: Change) -> None:
        secret = {"metadata": {"annotations": {ITEM_VERSION_ANNOTATION: change.item_version}}, "data": change.data}
        async with writers:
            await client.patch(SECRETS, change.secret, secret, change.namespace)
        stamp = {LAST_RESTARTED_ANNOTATION: change.restarted_at}
        restart = {"spec": {"template": {"metadata": {"annotations": stamp}}}}
        async with restarters:
            await client.patch(DEPLOYMENTS, change.deployment, restart, change.namespace)

    await asyncio.gather(*(one(change) for change in changes))


async def create_namespaces(client: Client, names: Iterable[str]) -> None:
    """Create the namespaces."""
    for name in names:
        await client.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


class Watch:
    """An informer in this process recording, per object, when ``expect``'s condition first held."""

    def __init__(self, informer: Informer) -> None:
        self.informer = informer
        self._conditions: dict[tuple[str, str], Condition] = {}
        self.seen: dict[tuple[str, str], float] = {}  # key -> time.perf_counter()
        self._complete = asyncio.Event()
        informer.add_handler(self)

    def expect(self, conditions: Mapping[tuple[str, str], Condition]) -> None:
        """Start timing: forget earlier sightings, record each key when its condition first holds."""
        self._conditions = dict(conditions)
        self.seen = {}
        self._complete.clear()
        for namespace, name in self._conditions:
            obj = self.informer.get(namespace, name)
            if obj is not None:
                self._check(obj)
        self._check_complete()

    async def wait(self, within: float) -> None:
        """Until every expected key was seen; TimeoutError saying how many were missing."""
        try:
            await asyncio.wait_for(self._complete.wait(), within)
        except TimeoutError:
            missing = len(self._conditions) - len(self.seen)
            raise TimeoutError(f"{missing} of {len(self._conditions)} objects not seen within {within:.0f} s") from None

    def _check(self, obj: KubeObject) -> None:
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        condition = self._conditions.get(key)
        if condition is not None and key not in self.seen and condition(obj):
            self.seen[key] = time.perf_counter()
            self._check_complete()

    def _check_complete(self) -> None:
        if len(self.seen) == len(self._conditions):
            self._complete.set()

    def on_add(self, obj: KubeObject, is_initial_list: bool) -> None:
        """Informer handler."""
        self._check(obj)

    def on_update(self, old: KubeObject, new: KubeObject) -> None:
        """Informer handler."""
        self._check(new)

    def on_delete(self, obj: KubeObject) -> None:
        """Informer handler (deletions are not timed)."""


@contextlib.asynccontextmanager
async def watching(
    client: Client, resource: Resource, namespaces: Sequence[str], *, label_selector: str | None = None
) -> AsyncIterator[Watch]:
    """A synced ``Watch`` on ``resource`` in ``namespaces`` for the duration of the block."""
    informer = Informer(client, resource, namespaces=list(namespaces), label_selector=label_selector)
    watch = Watch(informer)
    stopping = asyncio.Event()
    task = asyncio.create_task(informer.run(stopping), name=f"bench watch {resource.plural}")
    try:
        if not await informer.wait_for_sync(timeout=300):
            raise TimeoutError(f"the benchmark's {resource.plural} informer did not sync")
        yield watch
    finally:
        stopping.set()
        await asyncio.wait_for(task, 30)
