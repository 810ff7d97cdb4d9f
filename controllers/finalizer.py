"""The Go operator's finalizer, removed from the OnePasswordItems and workloads it left behind.

opsync needs no finalizer (garbage collection follows the Secrets' owner references), but an object still
carrying the Go operator's could never be deleted once that operator is gone.
"""

from __future__ import annotations

import logging

from controllers.constants import FINALIZER
from opsync.client import Client
from opsync.resources import KubeObject, Resource

log = logging.getLogger(__name__)


async def remove_go_finalizer(client: Client, resource: Resource, obj: KubeObject) -> KubeObject:
    """``obj`` without the Go operator's finalizer: patched (conditional on its resourceVersion) when it has
    it, else returned as is."""
    meta = obj["metadata"]
    finalizers = meta.get("finalizers") or []
    if FINALIZER not in finalizers:
        return obj
    kept = [f for f in finalizers if f != FINALIZER]
    patch = {"metadata": {"finalizers": kept, "resourceVersion": meta["resourceVersion"]}}
    log.info("removing the 1Password operator's finalizer")
    return await client.patch(resource, meta["name"], patch, meta["namespace"])
