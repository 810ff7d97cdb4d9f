"""Mirror ConfigMaps labelled opsync.dev/mirror=true into the namespaces their opsync.dev/mirror-to annotation names."""

import asyncio

from opsync.builder import Builder
from opsync.client import Client
from opsync.manager import Manager
from opsync.reconcile import Request
from opsync.resources import CONFIGMAPS, KubeObject

SOURCES, MIRROR_OF, MIRROR_TO = "opsync.dev/mirror=true", "opsync.dev/mirror-of", "opsync.dev/mirror-to"


def source_of(mirror: KubeObject) -> list[Request]:
    return [Request(mirror["metadata"]["labels"][MIRROR_OF], mirror["metadata"]["name"])]


class Mirror:
    def __init__(self, manager: Manager) -> None:
        self.client = manager.client
        self.sources = manager.cache.informer(CONFIGMAPS, label_selector=SOURCES)
        self.mirrors = manager.cache.informer(CONFIGMAPS, label_selector=MIRROR_OF)

    async def reconcile(self, request: Request) -> None:
        source = self.sources.get(request.namespace, request.name) or {"metadata": {}}
        targets = (source["metadata"].get("annotations") or {}).get(MIRROR_TO, "")
        wanted = {ns.strip() for ns in targets.split(",") if ns.strip()} - {request.namespace}
        for mirror in self.mirrors.list():
            if source_of(mirror) == [request] and mirror["metadata"]["namespace"] not in wanted:
                await self.client.delete(CONFIGMAPS, request.name, mirror["metadata"]["namespace"])
        for namespace in sorted(wanted):  # server-side apply: an unchanged mirror is not written
            meta = {"name": request.name, "namespace": namespace, "labels": {MIRROR_OF: request.namespace}}
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": source.get("data") or {}}
            await self.client.patch(CONFIGMAPS, request.name, body, namespace, patch_type="apply", force=True)


def setup(manager: Manager) -> None:
    builder = Builder(manager, "configmap-mirror").for_(CONFIGMAPS, label_selector=SOURCES)
    builder.watches(CONFIGMAPS, source_of, label_selector=MIRROR_OF).complete(Mirror(manager))


async def main() -> None:
    async with await Client.from_kubeconfig() as client:
        setup(manager := Manager(client))
        await manager.run()  # until SIGTERM or Ctrl-C


if __name__ == "__main__":
    asyncio.run(main())
