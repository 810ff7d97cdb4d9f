"""``python -m bench.memory``: what opsync's megabytes are, with N items in sync (docs/benchmarks.md, "Memory").

For each size N (ascending; fresh namespaces each, the largest also gets ``--unmanaged`` other Secrets):

1. an ``opsync run`` is started, the N OnePasswordItems are applied, and once every one is ``Ready`` and
   opsync is idle its RSS is read (*steady*: it holds the items it fetched), then it is stopped;
2. opsync is started again on the same objects and read once idle (*restart*: everything was in sync);
3. with ``--unmanaged``, for the largest N only: the other Secrets are added and 2. is repeated;
4. opsync is started a last time under ``bench.traced`` (tracemalloc), idle, and its allocations are dumped
   (SIGUSR1) and grouped: by package and by the opsync line that led to them.

RSS is always read from an untraced process (tracemalloc's own bookkeeping roughly doubles it). The per-item
figure is (RSS at N2 - RSS at N1) / (N2 - N1) between the two largest sizes, and the item data is what a
managed Secret's ``data`` holds, decoded. Prints JSON on stdout; logs go to bench/results/memory-<time>/.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import cluster
from bench.__main__ import RESULTS, _sizes, log
from bench.processes import ConnectEmulator, Opsync, Samples, until
from bench.scenarios import Bench, Options, add_unmanaged
from controllers.constants import MANAGED_SELECTOR
from controllers.resources import ONEPASSWORDITEMS
from opsync.envtest import ControlPlane
from opsync.resources import SECRETS

REPO = Path(__file__).resolve().parents[1]


class TracedOpsync(Opsync):
    """``opsync run`` as ``python -m bench.traced OUT run ...``: SIGUSR1 writes its allocations to ``OUT``."""

    def __init__(self, out: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out = out
        self._argv = [sys.executable, "-m", "bench.traced", str(out), *self._argv[3:]]  # after "-m opsync"

    async def samples(self) -> Samples:
        """As ``Opsync.samples``, but a scrape that times out is asked again: under tracemalloc a busy opsync
        can take longer than ``processes.HTTP_TIMEOUT`` to answer."""
        deadline = time.monotonic() + 300
        while True:
            try:
                return await super().samples()
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                self.check_running()

    async def dump(self) -> dict[str, Any]:
        """Ask for the allocations now and read them."""
        self.out.unlink(missing_ok=True)
        assert self.process is not None
        self.process.send_signal(signal.SIGUSR1)

        async def written() -> bool:
            self.check_running()
            return self.out.exists()

        await until(written, within=300, what="the tracemalloc report")
        await asyncio.sleep(1)  # written in one call; let it finish before reading
        return dict(json.loads(self.out.read_text()))


async def _idle_rss(bench: Bench, namespaces: Sequence[str], label: str) -> dict[str, float]:
    opsync = await bench.start_opsync(namespaces, label)
    try:
        await opsync.settle()
        memory = opsync.memory()
        return {"rss_mib": memory.rss_mib, "peak_rss_mib": memory.peak_mib}
    finally:
        await opsync.stop()


async def _data_bytes(bench: Bench, namespaces: Sequence[str]) -> float:
    """Mean decoded bytes of data (keys and values) per managed Secret."""
    secrets = [
        secret
        for namespace in namespaces
        for secret in (await bench.kube.list(SECRETS, namespace, label_selector=MANAGED_SELECTOR))["items"]
    ]
    sizes = [
        sum(len(key) + len(base64.b64decode(value)) for key, value in (s.get("data") or {}).items()) for s in secrets
    ]
    return sum(sizes) / max(1, len(sizes))


async def measure(bench: Bench, size: int, unmanaged: int) -> dict[str, Any]:
    """Steps 1-4 of the module docstring at one size."""
    refs = cluster.items(size)
    namespaces = bench.namespaces(f"m{size}")
    await cluster.create_namespaces(bench.kube, namespaces)
    opsync = await bench.start_opsync(namespaces, f"memory-{size}")
    try:
        async with cluster.watching(bench.kube, ONEPASSWORDITEMS, namespaces) as ready:
            ready.expect({(cluster.namespace_of(namespaces, ref), ref.title): cluster.is_ready for ref in refs})
            bodies = [(cluster.namespace_of(namespaces, ref), cluster.onepassword_item(ref)) for ref in refs]
            await cluster.create_all(bench.kube, ONEPASSWORDITEMS, bodies, bench.options.workers)
            await ready.wait(120 + size * 0.5)
        await opsync.settle()
        memory = opsync.memory()
        result: dict[str, Any] = {
            "items": size,
            "data_bytes_per_item": await _data_bytes(bench, namespaces),
            "steady": {"rss_mib": memory.rss_mib, "peak_rss_mib": memory.peak_mib},
        }
    finally:
        await opsync.stop()
    bench.log(f"memory N={size}: steady {result['steady']}")
    result["restart"] = await _idle_rss(bench, namespaces, f"memory-{size}-restart")
    bench.log(f"memory N={size}: restart {result['restart']}")
    if unmanaged:
        await add_unmanaged(bench, namespaces, 0, unmanaged)
        result["unmanaged"] = unmanaged
        result["restart_unmanaged"] = await _idle_rss(bench, namespaces, f"memory-{size}-unmanaged")
        bench.log(f"memory N={size} unmanaged={unmanaged}: restart {result['restart_unmanaged']}")
    traced = TracedOpsync(
        bench.work_dir / f"tracemalloc-{size}.json",
        kubeconfig=bench.control_plane.kubeconfig_path,
        connect_url=bench.emulator.url,
        token=bench.emulator.token,
        namespaces=namespaces,
        poll_interval=bench.options.poll_interval,
        workers=bench.options.workers,
        log_path=bench.work_dir / f"opsync-memory-{size}-traced.log",
    )
    await traced.spawn()
    try:
        await traced.wait_ready()
        await traced.settle()
        result["tracemalloc"] = await traced.dump()
    finally:
        await traced.stop()
    return result


async def _main(options: Options, work_dir: Path) -> list[dict[str, Any]]:
    async with ControlPlane(crds=[REPO / "crds"]) as control_plane:
        emulator = ConnectEmulator(cluster.emulator_data(options.largest), cluster.TOKEN, work_dir / "emulator.log")
        await emulator.start()
        try:
            kube = await control_plane.client()
            try:
                bench = Bench(options, control_plane, kube, emulator, work_dir, log)
                sizes = sorted(options.sizes)
                return [await measure(bench, n, options.unmanaged if n == sizes[-1] else 0) for n in sizes]
            finally:
                await kube.close()
        finally:
            await emulator.stop()


def per_item(results: Sequence[dict[str, Any]], phase: str = "restart") -> dict[str, float]:
    """KiB of RSS per item between the two largest sizes, and the same beyond the items' data."""
    low, high = results[-2], results[-1]
    kib = (high[phase]["rss_mib"] - low[phase]["rss_mib"]) * 1024 / (high["items"] - low["items"])
    return {"kib_per_item": round(kib, 2), "beyond_data_kib": round(kib - high["data_bytes_per_item"] / 1024, 2)}


def main() -> None:
    """Parse the options, measure, print JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=_sizes, default=(500, 2000), help="N, at least two; default %(default)s")
    parser.add_argument("--unmanaged", type=int, default=3000, help="other Secrets at the largest N")
    parser.add_argument("--poll-interval", type=int, default=10, help="POLLING_INTERVAL, s")
    args = parser.parse_args()
    options = Options(sizes=args.sizes, unmanaged=args.unmanaged, poll_interval=args.poll_interval)
    work_dir = RESULTS / f"memory-{time.strftime('%Y%m%d-%H%M%S')}"
    work_dir.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(_main(options, work_dir))
    summary: dict[str, Any] = {"sizes": results}
    if len(results) >= 2:
        summary["per_item"] = {phase: per_item(results, phase) for phase in ("steady", "restart")}
    (work_dir / "memory.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
