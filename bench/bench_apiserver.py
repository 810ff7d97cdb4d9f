"""What each kind of request opsync sends costs the API server and etcd, in CPU.

The initial sync and propagation are bounded by the API server's CPU on a small machine, so their ratio to
the floor follows from these costs: ``python -m bench.bench_apiserver [--count 1000] [--concurrency 4]``
sends ``count`` requests of each kind (as opsync does for one item) and prints CPU milliseconds per request
(the API server's, etcd's and this process's, whose ``Client`` speaks HTTP/2, or HTTP/1.1 with ``--http1``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench import cluster
from bench.processes import CpuMeter, control_plane_pids
from controllers.resources import ONEPASSWORDITEMS
from opsync.client import Client, NotFoundError
from opsync.envtest import ControlPlane
from opsync.resources import EVENTS, SECRETS, KubeObject

NOW = "2026-01-01T00:00:00Z"

REPO = Path(__file__).resolve().parents[1]


def ready_status() -> KubeObject:
    """A status patch like opsync's on a sync."""
    condition = {
        "type": "Ready",
        "status": "True",
        "reason": "Synced",
        "message": "synced",
        "lastTransitionTime": NOW,
        "observedGeneration": 1,
    }
    return {"status": {"conditions": [condition], "lastSyncTime": NOW}}


def event(namespace: str, item: str, index: int) -> KubeObject:
    """A Normal Event about an item, like the one opsync records for each Secret it writes."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{item}.{index}"},
        "type": "Normal",
        "involvedObject": {
            "apiVersion": "onepassword.com/v1",
            "kind": "OnePasswordItem",
            "name": item,
            "namespace": namespace,
        },
        "reason": "Synced",
        "message": "Secret created",
        "count": 1,
        "firstTimestamp": NOW,
        "lastTimestamp": NOW,
        "source": {"component": "opsync"},
    }


async def measure(
    control_plane: ControlPlane, kube: Client, count: int, concurrency: int
) -> dict[str, dict[str, float]]:
    """CPU ms per request of each kind, by process (kube-apiserver, etcd, this process)."""
    namespace = "bench-apiserver"
    await cluster.create_namespaces(kube, [namespace])
    refs = cluster.items(count)
    meter = CpuMeter(control_plane_pids(control_plane.host))

    async def absent_secret(i: int) -> None:
        with contextlib.suppress(NotFoundError):
            await kube.get(SECRETS, f"absent-{i}", namespace)

    kinds: dict[str, Callable[[int], Awaitable[object]]] = {
        "warm-up (Secret create)": lambda i: kube.create(SECRETS, cluster.plain_secret(f"warm-{i}"), namespace),
        "Secret create (the floor)": lambda i: kube.create(SECRETS, cluster.plain_secret(f"s-{i}"), namespace),
        "OnePasswordItem create (apply)": lambda i: kube.create(
            ONEPASSWORDITEMS, cluster.onepassword_item(refs[i]), namespace
        ),
        "Secret GET, absent": absent_secret,
        "OnePasswordItem status patch": lambda i: kube.patch(
            ONEPASSWORDITEMS, refs[i].title, ready_status(), namespace, subresource="status"
        ),
        "Event create": lambda i: kube.create(EVENTS, event(namespace, refs[i].title, i), namespace),
    }
    slots = asyncio.Semaphore(concurrency)
    results = {}
    for name, send in kinds.items():

        async def one(i: int, send: Callable[[int], Awaitable[object]] = send) -> None:
            async with slots:
                await send(i)

        meter.start()
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        wall = time.perf_counter() - started
        results[name] = {
            "wall ms": wall * 1000 / count * concurrency,
            **{process: cpu * 1000 / count for process, cpu in meter.read().items()},
        }
    return results


async def _main(count: int, concurrency: int, http2: bool) -> None:
    async with ControlPlane(crds=[REPO / "crds"]) as control_plane:
        kube = await Client.from_kubeconfig(control_plane.kubeconfig_path, http2=http2)
        try:
            for name, costs in (await measure(control_plane, kube, count, concurrency)).items():
                print(f"{name:32}", "  ".join(f"{key} {value:5.2f}" for key, value in costs.items()))
        finally:
            await kube.close()


def main() -> None:
    """Run once and print CPU ms per request."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--http1", action="store_true", help="send over HTTP/1.1 (as DISABLE_HTTP2=true)")
    args = parser.parse_args()
    asyncio.run(_main(args.count, args.concurrency, http2=not args.http1))


if __name__ == "__main__":
    main()
