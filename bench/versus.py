"""Side by side with 1Password's Go operator (issue 17): the same scenario against each, one after the other.

Runs only when ``GO_OPERATOR=/path/to/manager`` (or ``--go-operator``) is given; it is for measurement, never
for the project's tests or CI. Each operator gets fresh namespaces (one per vault) holding ``versus_unmanaged``
unmanaged Secrets of 16 KiB, the same emulator, the same items (by title), the same poll interval, and is
measured the same way:

1. apply ``versus_items`` OnePasswordItems → the benchmark's watch has seen every Secret; Connect requests and
   API-server writes from the apply until the operator is idle (``Operator.settle``);
2. quiet: Connect requests and the operator's CPU over a window of ``idle_polls`` poll intervals (the Go
   operator has no poll counter, so both are measured over the same time window, divided by the polls it
   holds); RSS at its end;
3. ``versus_changes`` items changed at once in 1Password → each Secret's ``item-version`` moved: p50 and p99;
4. restart with everything in sync: a new process, until it reconciled every item and is idle: Connect
   requests and API-server writes.

Both run as in a pod (``processes.InCluster``): their in-cluster configuration, from a ServiceAccount token
bound to ``cluster-admin``, the cluster's CA and the namespace file kubelet mounts, because that is the
configuration whose memory users pay for (opsync imports no kubeconfig loader then). The Go operator also
needs the namespace file: it exits without it (no environment variable replaces it:
``OSDK_FORCE_RUN_MODE=local`` makes it exit too).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import cluster
from bench.processes import CpuMeter, InCluster, Operator, operator_env, writes
from bench.scenarios import Bench, cached, change_items, changed_from, item_version, percentile
from controllers.resources import ONEPASSWORDITEMS
from opsync.envtest import free_ports
from opsync.resources import CLUSTERROLEBINDINGS, SECRETS, KubeObject

DESCRIPTION = (
    "the same control plane, emulator and items (by title, 5 vaults), the same poll interval; Connect requests "
    "from the emulator's counters, API-server writes from each operator's own `rest_client_requests_total`, CPU "
    "and RSS from `/proc`. Ratios are Go / opsync."
)
"""How the side-by-side table was made, for the report."""
UNMANAGED_VALUE_BYTES = 16 * 1024 // 3  # three keys: a 16 KiB Secret, as in the issue's measurement
POD_NAMESPACE, POD_SERVICE_ACCOUNT = "opsync-bench-pods", "operator"


class GoOperator(Operator):
    """1Password's Go operator (``manager`` built from its source) as in a pod of the bench's control plane,
    against its emulator, scoped to ``namespaces``, metrics over plain HTTP and probes on free loopback ports."""

    def __init__(
        self,
        manager: str,
        *,
        in_cluster: InCluster,
        connect_url: str,
        token: str,
        namespaces: Sequence[str],
        poll_interval: int,
        log_path: Path,
    ) -> None:
        metrics_port, health_port = free_ports(2)
        argv = [
            f"--metrics-bind-address=127.0.0.1:{metrics_port}",
            f"--health-probe-bind-address=127.0.0.1:{health_port}",
            "--metrics-secure=false",
            "--zap-log-level=error",  # its default logs every reconcile; opsync runs at warn
        ]
        env = {**operator_env(connect_url, token, namespaces, poll_interval), **in_cluster.env()}
        program = in_cluster.program(namespaces[0], [manager])
        super().__init__(
            "go-operator", argv, env, log_path, program=program, metrics_port=metrics_port, health_port=health_port
        )


@dataclass
class Side:
    """What one operator did in the side-by-side scenario."""

    operator: str  # "go" or "opsync"
    items: int
    unmanaged: int
    sync_seconds: float  # apply start -> the watch saw every Secret
    sync_connect_requests: int  # apply -> idle
    sync_api_writes: int
    quiet_polls: float  # poll intervals in the quiet window
    quiet_connect_requests: int
    quiet_cpu_seconds: float
    rss_mib: float
    peak_rss_mib: float
    changed: int
    change_secret_seconds: list[float]  # change in 1Password -> the Secret's new item-version
    restart_connect_requests: int
    restart_api_writes: int
    restart_seconds: float  # spawn -> every item reconciled and idle


Start = Callable[[Sequence[str], str], Awaitable[Operator]]


async def side(bench: Bench, operator: str, start: Start) -> Side:
    """The scenario of the module docstring against one operator; ``start(namespaces, label)`` spawns it."""
    options = bench.options
    size, changed, interval = (
        options.versus_items,
        min(options.versus_changes, options.versus_items),
        options.poll_interval,
    )
    refs = cluster.items(size)
    namespaces = bench.namespaces(f"vs-{operator}")
    await cluster.create_namespaces(bench.kube, namespaces)
    unmanaged = [
        (namespaces[j % len(namespaces)], cluster.plain_secret(f"unmanaged-{j:05d}", value_bytes=UNMANAGED_VALUE_BYTES))
        for j in range(options.versus_unmanaged)
    ]
    await cluster.create_all(bench.kube, SECRETS, unmanaged, 32)  # set-up, not measured
    keys = {ref: (cluster.namespace_of(namespaces, ref), ref.title) for ref in refs}
    process = await start(namespaces, f"vs-{operator}")
    try:
        await process.settle()
        async with cluster.watching(bench.kube, SECRETS, namespaces) as watch:
            watch.expect({key: _exists for key in keys.values()})
            connect_before, api_before = await bench.emulator.requests(), await process.api_requests()
            started = time.perf_counter()
            bodies = [(ns, cluster.onepassword_item(ref)) for ref, (ns, _) in keys.items()]
            await cluster.create_all(bench.kube, ONEPASSWORDITEMS, bodies, options.workers)
            await watch.wait(120 + size * 0.5)
            sync_seconds = max(watch.seen.values()) - started
            await process.settle()
            connect_after, api_after = await bench.emulator.requests(), await process.api_requests()

            # A measurement window, not a wait for a condition: the Go operator exposes no poll counter.
            meter = CpuMeter({operator: process.pid})
            quiet_before = await bench.emulator.requests()
            meter.start()
            await asyncio.sleep(options.idle_polls * interval)
            quiet_cpu = meter.read()[operator]
            quiet_after = await bench.emulator.requests()
            memory = process.memory()

            targets = refs[:changed]
            watch.expect(
                {keys[ref]: changed_from(item_version(cached(watch, keys[ref])), item_version) for ref in targets}
            )
            changed_at = await change_items(bench, targets, f"vs-{operator}")
            await watch.wait(2 * interval + 60 + changed * 0.5)
            latencies = [watch.seen[keys[ref]] - changed_at[ref] for ref in targets]
        await process.settle()
    finally:
        await process.stop()

    restart_before = await bench.emulator.requests()
    process = await start(namespaces, f"vs-{operator}-restart")
    try:
        await _reconciled(process, size)
        restart_seconds = await process.settle()
        restart_api = await process.api_requests()
        restart_after = await bench.emulator.requests()
    finally:
        await process.stop()
    result = Side(
        operator=operator,
        items=size,
        unmanaged=options.versus_unmanaged,
        sync_seconds=round(sync_seconds, 2),
        sync_connect_requests=_total(connect_after) - _total(connect_before),
        sync_api_writes=writes(api_before, api_after),
        quiet_polls=options.idle_polls,
        quiet_connect_requests=_total(quiet_after) - _total(quiet_before),
        quiet_cpu_seconds=quiet_cpu,
        rss_mib=memory.rss_mib,
        peak_rss_mib=memory.peak_mib,
        changed=changed,
        change_secret_seconds=[round(t, 3) for t in latencies],
        restart_connect_requests=_total(restart_after) - _total(restart_before),
        restart_api_writes=writes(Counter(), restart_api),
        restart_seconds=round(restart_seconds, 2),
    )
    bench.log(
        f"versus {operator} N={size}: every Secret {sync_seconds:.1f} s, {result.sync_connect_requests} Connect "
        f"requests; quiet {result.quiet_connect_requests / options.idle_polls:.0f} requests and "
        f"{quiet_cpu / options.idle_polls:.2f} CPU s per poll; RSS {memory.rss_mib:.0f} MiB; K={changed} p99 "
        f"{percentile(latencies, 99):.1f} s; restart {result.restart_connect_requests} requests, "
        f"{result.restart_api_writes} writes"
    )
    return result


async def pod_identity(bench: Bench) -> InCluster:
    """A ServiceAccount bound to ``cluster-admin`` (both operators were run as admin from a kubeconfig before),
    its token in a file of the bench's work directory, as kubelet would mount it, and the cluster's CA."""
    await cluster.create_namespaces(bench.kube, [POD_NAMESPACE])
    pod = await InCluster.service_account(bench.control_plane, POD_NAMESPACE, POD_SERVICE_ACCOUNT, bench.work_dir)
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": f"{POD_NAMESPACE}-{POD_SERVICE_ACCOUNT}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": POD_SERVICE_ACCOUNT, "namespace": POD_NAMESPACE}],
    }
    await bench.kube.create(CLUSTERROLEBINDINGS, binding)
    return pod


async def run(bench: Bench, manager: str) -> list[Side]:
    """The Go operator's side, then opsync's, in fresh namespaces each, both as in a pod."""
    options = bench.options
    pod = await pod_identity(bench)

    async def go(namespaces: Sequence[str], label: str) -> Operator:
        process = GoOperator(
            manager,
            in_cluster=pod,
            connect_url=bench.emulator.url,
            token=bench.emulator.token,
            namespaces=namespaces,
            poll_interval=options.poll_interval,
            log_path=bench.work_dir / f"{label}.log",
        )
        await process.spawn()
        await process.wait_ready()
        return process

    async def opsync(namespaces: Sequence[str], label: str) -> Operator:
        return await bench.start_opsync(namespaces, label, in_cluster=pod)

    return [await side(bench, "go", go), await side(bench, "opsync", opsync)]


def _exists(_: KubeObject) -> bool:
    return True


def _total(counts: Counter[str]) -> int:
    return sum(counts.values())


async def _reconciled(process: Operator, count: int, within: float = 600.0) -> None:
    """Until ``process`` finished ``count`` reconciles: the Go operator's ``/readyz`` answers before its caches
    are synced, so an empty work queue right after a start does not mean it is done."""
    deadline = time.monotonic() + within
    while await process.reconciles() < count:
        process.check_running()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{process.name}: fewer than {count} reconciles within {within:.0f} s")
        await asyncio.sleep(0.2)


def _ratio(go: float, opsync: float) -> str:
    return f"{go / opsync:.1f}x" if opsync else "n/a"


def table(sides: Sequence[dict[str, Any]]) -> str:
    """The issue's table, Go vs opsync with the ratio Go / opsync (from ``Side``s as JSON)."""
    by_name = {s["operator"]: s for s in sides}
    go, ops = by_name["go"], by_name["opsync"]

    def row(what: str, key: Callable[[dict[str, Any]], float], fmt: str) -> str:
        return f"| {what} | {fmt.format(key(go))} | {fmt.format(key(ops))} | {_ratio(key(go), key(ops))} |"

    def p99(s: dict[str, Any]) -> float:
        return percentile(s["change_secret_seconds"], 99)

    lines = [
        f"| N = {go['items']:,} items, {go['unmanaged']:,} other 16 KiB Secrets | Go | opsync | Go / opsync |",
        "| --- | --- | --- | --- |",
        row("apply → every Secret exists (s)", lambda s: s["sync_seconds"], "{:.1f}"),
        row("Connect requests during that sync", lambda s: s["sync_connect_requests"], "{:,.0f}"),
        row("API-server writes during that sync", lambda s: s["sync_api_writes"], "{:,.0f}"),
        row("Connect requests per quiet poll", lambda s: s["quiet_connect_requests"] / s["quiet_polls"], "{:,.1f}"),
        row("operator CPU per quiet poll (s)", lambda s: s["quiet_cpu_seconds"] / s["quiet_polls"], "{:.2f}"),
        row("RSS (MiB)", lambda s: s["rss_mib"], "{:.0f}"),
        row(f"{go['changed']} items changed at once: Secret p99 (s)", p99, "{:.1f}"),
        row("restart in sync: Connect requests", lambda s: s["restart_connect_requests"], "{:,.0f}"),
        row("restart in sync: API-server writes", lambda s: s["restart_api_writes"], "{:,.0f}"),
        row("restart in sync: spawn → idle (s)", lambda s: s["restart_seconds"], "{:.1f}"),
    ]
    return "\n".join(lines)
