"""The shared cache of a manager: one informer per (kind, selectors, transform), scoped to its namespaces.

Controllers ask ``Cache.informer(...)`` for what they need; asking twice for the same thing returns the same
informer, so each kind is listed and watched once however many controllers read it. With a namespace list,
namespaced kinds get one list/watch stream per namespace (all feeding one informer); cluster-scoped kinds are
always watched once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from opsync.client import Client
from opsync.informer import Informer, Transform
from opsync.resources import KubeObject, Resource

_InformerKey = tuple[Resource, str | None, str | None, Transform | None]


def metadata_only(obj: KubeObject) -> KubeObject:
    """A transform keeping only apiVersion, kind and metadata (without managedFields).

    For kinds where a controller reads names, labels, annotations or owners but never the payload, e.g. the
    Secrets opsync does not manage: their data never sits in memory.
    """
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": meta}


class Cache:
    """Creates, shares and runs informers; ``namespaces=None`` watches all namespaces."""

    def __init__(self, client: Client, *, namespaces: Sequence[str] | None = None) -> None:
        self._client = client
        self.namespaces = tuple(namespaces) if namespaces is not None else None
        self._informers: dict[_InformerKey, Informer] = {}
        self._stopping: asyncio.Event | None = None  # set while run() is active
        self._tasks: list[asyncio.Task[None]] = []

    def informer(
        self,
        resource: Resource,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        transform: Transform | None = None,
        optional: bool = False,
    ) -> Informer:
        """The informer for ``resource`` with these selectors and transform, created on first use.

        Transforms are told apart by identity: pass the same function to share an informer. An informer made
        while the cache runs starts at once. ``optional`` (the kind's CRD may be missing: see
        ``opsync.informer``) is decided by whoever asks first.
        """
        key = (resource, label_selector, field_selector, transform)
        informer = self._informers.get(key)
        if informer is None:
            informer = Informer(
                self._client,
                resource,
                namespaces=self.namespaces,
                label_selector=label_selector,
                field_selector=field_selector,
                transform=transform,
                optional=optional,
            )
            self._informers[key] = informer
            if self._stopping is not None:
                self._start(informer, self._stopping)
        return informer

    def set_namespaces(self, namespaces: Sequence[str]) -> None:
        """Scope every namespaced informer, and those made later, to ``namespaces`` from now on (a cache made
        with a namespace list only; ``Informer.set_namespaces`` says what happens to the objects)."""
        if self.namespaces is None:
            raise ValueError("this cache watches all namespaces; it has no namespace list to change")
        self.namespaces = tuple(namespaces)
        for informer in self._informers.values():
            if informer.resource.namespaced:
                informer.set_namespaces(self.namespaces)

    @property
    def informers(self) -> list[Informer]:
        """Every informer created so far."""
        return list(self._informers.values())

    def has_synced(self) -> bool:
        """True when every informer has synced."""
        return all(informer.has_synced() for informer in self._informers.values())

    async def wait_for_sync(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 -- the Cache contract
        """Wait until every informer created so far has synced; False if ``timeout`` passed first."""
        try:
            async with asyncio.timeout(timeout):
                for informer in self.informers:
                    await informer.wait_for_sync()
        except TimeoutError:
            return False
        return True

    async def run(self, stopping: asyncio.Event) -> None:
        """Run every informer, including ones created later, until ``stopping`` is set."""
        self._stopping = stopping
        try:
            for informer in self.informers:
                self._start(informer, stopping)
            await stopping.wait()
            await asyncio.gather(*self._tasks)
        finally:
            self._stopping = None
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks.clear()

    def _start(self, informer: Informer, stopping: asyncio.Event) -> None:
        self._tasks.append(asyncio.create_task(informer.run(stopping), name=f"cache {informer!r}"))
