"""The five scenarios of docs/benchmarks.md, run in one control plane against one Connect emulator.

Order (each size gets fresh namespaces; the largest size's objects and opsync carry on):

1. initial sync, per size N: opsync (scoped to the size's namespaces) is up; the benchmark applies N
   OnePasswordItems and times apply → all ``Ready``. The floor (``cluster.floor_writes``), in other
   namespaces with the same client: the same apply, and beside it the writes no correct operator can skip, the
   very Secrets opsync made (owned by their items) and the items' status, with opsync's ``--workers`` in flight;
   timed, as opsync is, to the last item the benchmark's watch sees ``Ready``. Sizes up to ``REPEATED_UP_TO``
   run this pair ``sync_repeats`` times, each in fresh namespaces with a fresh opsync, and keep the repeat
   with the median ratio (one pair on the shared 2-core machine varies by a fifth).
2. idle: with the largest N in sync (plus the Deployments of scenario 3), requests per poll.
3. propagation: change K items in 1Password at a random moment of the poll cycle; time to the Secret's new
   item-version and to the Deployment's restart annotation. After each round, its floor
   (``cluster.floor_changes``) in scenario 1's floor namespaces: the same Secret updates and restarts by the
   benchmark, timed from the first Secret seen updated to the last restart seen, as opsync's round is.
4. and 5. memory and restart: stop opsync, create unmanaged Secrets in the same namespaces in steps, and at
   each step start opsync again: time to ``/readyz`` and to idle, API-server writes, RSS.
6. on-demand refresh: an opsync polling every ``refresh_poll_interval`` (600 s) s, so no poll helps; change an
   item in 1Password, then set its OnePasswordItem's ``opsync.dev/refresh`` annotation; time from that patch
   to the Secret's new item-version and to the Deployment's restart annotation, ``refreshes`` times, one
   refresh at a time (after scenario 3, before 4 and 5, on the same objects).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import cluster
from bench.cluster import ItemRef, Watch
from bench.processes import ConnectEmulator, CpuMeter, InCluster, Opsync, control_plane_pids, until, writes
from controllers.config import DEFAULT_WORKERS
from controllers.constants import ITEM_CONTROLLER, ITEM_VERSION_ANNOTATION, MANAGED_SELECTOR, REFRESH_ANNOTATION
from controllers.resources import ONEPASSWORDITEMS
from opsync.client import Client
from opsync.envtest import ControlPlane
from opsync.resources import DEPLOYMENTS, SECRETS, KubeObject
from opsync.timestamps import rfc3339


@dataclass(frozen=True)
class Options:
    """Sizes and settings of one run (``python -m bench --help``)."""

    sizes: tuple[int, ...] = (100, 1000, 5000)
    changes: tuple[int, ...] = (1, 50, 500)
    unmanaged: int = 10_000
    unmanaged_steps: int = 1
    poll_interval: int = 10
    rounds: int = 2
    idle_polls: int = 3
    workers: int = DEFAULT_WORKERS
    seed: int = 7
    refreshes: int = 50
    refresh_poll_interval: int = 600
    scenarios: tuple[str, ...] = ("sync", "idle", "propagation", "refresh", "restart")  # see SCENARIOS
    go_operator: str | None = None  # the Go operator's manager binary: run bench.versus as well
    versus_items: int = 2000
    versus_unmanaged: int = 3000
    versus_changes: int = 200
    sync_repeats: int = 3  # scenario 1's pairs (opsync, floor) per size up to REPEATED_UP_TO

    @property
    def largest(self) -> int:
        """The N that scenarios 2-5 run with."""
        return max(self.sizes)


REPEATED_UP_TO = 1000
"""Scenario 1 repeats sizes up to this N (the ratio's target size); a larger one takes a minute or more a pair
and runs once."""

SCENARIOS = ("sync", "idle", "propagation", "refresh", "restart")
"""What ``Options.scenarios`` may name: the initial sync at every size, and the scenarios on the largest size's
objects after it (which need it)."""


@dataclass
class InitialSync:
    """Scenario 1 at one size."""

    items: int
    apply_seconds: float  # creating the OnePasswordItems
    ready_seconds: float  # apply start -> the last Ready
    floor_seconds: float  # the same apply plus the Secret creates and status writes alone (cluster.floor_writes),
    # to the last Ready the same watch saw
    cpu_seconds: dict[str, float]  # CPU per process from apply to idle: who was busy?
    floor_cpu_seconds: dict[str, float]  # the same during the floor
    applied: list[float]  # seconds from the start when each item's create was answered
    ready: list[float]  # seconds from the start when each item was seen Ready
    connect_requests: dict[str, int]  # by route
    api_requests: dict[str, int]  # by HTTP method (watches are GETs)
    api_writes: int
    rss_mib: float = 0.0  # opsync once idle after the sync (0: a run from before this was measured)
    peak_rss_mib: float = 0.0
    floor_answered_seconds: float = 0.0  # the floor to its last status write answered (as runs before 2026-12-07)
    ratios: list[float] = field(default_factory=list)  # every repeat's ratio, in the order run (this one's among them)
    item_reconciles: int = 0  # by the onepassworditem controller, apply to idle (0: a run from before 2026-12-07)

    @property
    def ratio(self) -> float:
        """Ready time over the floor."""
        return self.ready_seconds / self.floor_seconds


def median_repeat(repeats: Sequence[InitialSync]) -> InitialSync:
    """The repeat with the median ratio (the higher of the middle two for an even count), holding every
    repeat's ratio in ``ratios``."""
    kept = sorted(repeats, key=lambda r: r.ratio)[len(repeats) // 2]
    kept.ratios = [round(r.ratio, 3) for r in repeats]
    return kept


@dataclass
class Idle:
    """Scenario 2."""

    items: int
    vaults: int
    polls: int
    connect_requests: dict[str, int]
    api_requests: dict[str, int]
    api_writes: int
    cpu_seconds: float  # opsync's CPU over ``polls`` poll intervals, nothing scraping it meanwhile


@dataclass
class Propagation:
    """Scenario 3 at one K: latencies in seconds from the change in 1Password."""

    items: int
    changed: int
    rounds: int
    secret_seconds: list[float]
    restart_seconds: list[float]
    cpu_seconds: dict[str, float]  # CPU per process from the changes until opsync is idle again, all rounds
    spans: list[float]  # per round: opsync's first Secret updated -> its last restart annotation seen
    floor_spans: list[float]  # per round: the same for the floor's writes (cluster.floor_changes)
    split: list[bool]  # per round: its Secret updates fell into two polls (``split_over_polls``)
    floor_cpu_seconds: dict[str, float]  # CPU per process during the floor's writes, all rounds
    api_requests: dict[str, int]  # opsync's API-server requests by verb, all rounds


@dataclass
class Refresh:
    """Scenario 6: latencies in seconds from setting ``opsync.dev/refresh`` on an item."""

    items: int
    poll_interval: int
    secret_seconds: list[float]
    restart_seconds: list[float]


@dataclass
class Restart:
    """Scenarios 4 and 5: one start of opsync with ``items`` in sync and ``unmanaged`` other Secrets."""

    items: int
    unmanaged: int
    ready_seconds: float  # spawn -> /readyz
    idle_seconds: float  # spawn -> nothing queued
    cpu_seconds: dict[str, float]  # CPU per process from spawn to idle
    api_requests: dict[str, int]
    api_writes: int
    connect_requests: int
    rss_mib: float
    peak_rss_mib: float


@dataclass
class Results:
    """Everything one run measured."""

    options: dict[str, Any]
    started: str
    wall_seconds: float = 0.0
    initial_sync: list[InitialSync] = field(default_factory=list)
    steady_memory: dict[str, float] = field(default_factory=dict)  # the scenario-1 opsync after scenario 3
    idle: Idle | None = None
    propagation: list[Propagation] = field(default_factory=list)
    restarts: list[Restart] = field(default_factory=list)
    refresh: Refresh | None = None
    versus: list[dict[str, Any]] = field(default_factory=list)  # bench.versus.Side: the Go operator, then opsync

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (``bench.report`` reads it back)."""
        return asdict(self)


def kept_rounds(spans: Sequence[float], split: Sequence[bool] = ()) -> list[int]:
    """Scenario 3: the rounds whose changes one poll found (runs before 2026-12-04T21:30Z did not say)."""
    return [i for i in range(len(spans)) if not (split and split[i])]


def kept_mean(spans: Sequence[float], split: Sequence[bool] = ()) -> float:
    """Scenario 3: the mean of per-round ``spans`` over the rounds one poll found; NaN when there were none."""
    kept = kept_rounds(spans, split)
    return sum(spans[i] for i in kept) / len(kept) if kept else math.nan


def span_ratio(spans: Sequence[float], floor_spans: Sequence[float], split: Sequence[bool] = ()) -> float:
    """Scenario 3: opsync's spans over the floor's over the rounds one poll found (the span of a round split
    over two polls holds the wait for the second poll, not work); NaN when every round was."""
    return kept_mean(spans, split) / kept_mean(floor_spans, split)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _delta(after: Counter[str], before: Counter[str]) -> dict[str, int]:
    return {key: after[key] - before[key] for key in sorted(after) if after[key] != before[key]}


class Bench:
    """One run: the control plane, the emulator, the admin client, where logs go."""

    def __init__(
        self,
        options: Options,
        control_plane: ControlPlane,
        kube: Client,
        emulator: ConnectEmulator,
        work_dir: Path,
        log: Callable[[str], None],
    ) -> None:
        self.options = options
        self.control_plane = control_plane
        self.kube = kube
        self.emulator = emulator
        self.work_dir = work_dir
        self.log = log
        self.run_id = "b" + secrets.token_hex(2)
        self.random = random.Random(options.seed)

    def namespaces(self, label: str) -> list[str]:
        """One namespace per vault for ``label``."""
        return [f"{self.run_id}-{label}-{v}" for v in range(cluster.VAULTS)]

    def cpu_meter(self, opsync: Opsync | None) -> CpuMeter:
        """A CPU meter over opsync (if given), the emulator, the API server, etcd and this process."""
        pids = {"emulator": self.emulator.pid, **control_plane_pids(self.control_plane.host)}
        return CpuMeter({"opsync": opsync.pid, **pids} if opsync else pids)

    async def start_opsync(
        self,
        namespaces: Sequence[str],
        label: str,
        *,
        poll_interval: int | None = None,
        in_cluster: InCluster | None = None,
    ) -> Opsync:
        """Spawn ``opsync run`` scoped to ``namespaces`` (as in a pod with ``in_cluster``); returns once
        ``/readyz`` answers."""
        opsync = Opsync(
            kubeconfig=self.control_plane.kubeconfig_path if in_cluster is None else None,
            connect_url=self.emulator.url,
            token=self.emulator.token,
            namespaces=namespaces,
            poll_interval=poll_interval or self.options.poll_interval,
            workers=self.options.workers,
            log_path=self.work_dir / f"opsync-{label}.log",
            in_cluster=in_cluster,
        )
        await opsync.spawn()
        await opsync.wait_ready()
        return opsync


async def initial_sync(bench: Bench, size: int, label: str = "") -> tuple[InitialSync, Opsync, list[str]]:
    """Scenario 1 at ``size`` in the namespaces of ``label`` (default: the size; later scenarios use those);
    returns the still-running opsync and its namespaces."""
    refs = cluster.items(size)
    label = label or str(size)
    namespaces, floor = bench.namespaces(f"n{label}"), bench.namespaces(f"floor{label}")
    await cluster.create_namespaces(bench.kube, [*namespaces, *floor])
    opsync = await bench.start_opsync(namespaces, f"initial-{label}")
    await opsync.settle()
    workers = bench.options.workers
    async with cluster.watching(bench.kube, ONEPASSWORDITEMS, namespaces) as ready:
        ready.expect({(cluster.namespace_of(namespaces, ref), ref.title): cluster.is_ready for ref in refs})
        api_before, connect_before = await opsync.api_requests(), await bench.emulator.requests()
        reconciles_before = await opsync.reconciles(ITEM_CONTROLLER)
        meter = bench.cpu_meter(opsync)
        meter.start()
        started = time.perf_counter()
        bodies = [(cluster.namespace_of(namespaces, ref), cluster.onepassword_item(ref)) for ref in refs]
        applied = [t - started for t in await cluster.create_all(bench.kube, ONEPASSWORDITEMS, bodies, workers)]
        await ready.wait(120 + size * 0.5)
        ready_at = sorted(t - started for t in ready.seen.values())
    await opsync.settle()
    api_after, connect_after = await opsync.api_requests(), await bench.emulator.requests()
    reconciled = await opsync.reconciles(ITEM_CONTROLLER) - reconciles_before
    cpu = meter.read()
    memory = opsync.memory()

    floor_seconds, floor_answered, floor_cpu = await _floor(bench, refs, namespaces, floor, meter)
    result = InitialSync(
        items=size,
        apply_seconds=applied[-1],
        ready_seconds=ready_at[-1],
        floor_seconds=floor_seconds,
        cpu_seconds=cpu,
        floor_cpu_seconds=floor_cpu,
        applied=[round(t, 3) for t in applied],
        ready=[round(t, 3) for t in ready_at],
        connect_requests=_delta(connect_after, connect_before),
        api_requests=_delta(api_after, api_before),
        api_writes=writes(api_before, api_after),
        rss_mib=memory.rss_mib,
        peak_rss_mib=memory.peak_mib,
        floor_answered_seconds=floor_answered,
        item_reconciles=reconciled,
    )
    bench.log(
        f"initial sync N={size} ({label}): ready {result.ready_seconds:.1f} s (apply {result.apply_seconds:.1f} s), "
        f"floor {floor_seconds:.1f} s (last write answered {floor_answered:.1f} s), ratio {result.ratio:.2f}; "
        f"{reconciled} item reconciles; RSS {memory.rss_mib:.0f} MiB; CPU s {cpu} (floor {floor_cpu})"
    )
    return result, opsync, namespaces


async def _floor(
    bench: Bench, refs: Sequence[ItemRef], namespaces: Sequence[str], floor: Sequence[str], meter: CpuMeter
) -> tuple[float, float, dict[str, float]]:
    """Scenario 1's floor in the ``floor`` namespaces (which no opsync watches): the same OnePasswordItems
    created as the apply did, each with the very Secret and status opsync wrote for it (``cluster.floor_writes``).
    Seconds from the first create to the last item that the benchmark's watch saw ``Ready`` (the instrument,
    and its cost, that times opsync), seconds to the last status write answered, and the CPU spent."""
    made: dict[tuple[str, str], KubeObject] = {}
    statuses: dict[tuple[str, str], KubeObject] = {}
    for ns in namespaces:
        for secret in (await bench.kube.list(SECRETS, ns, label_selector=MANAGED_SELECTOR))["items"]:
            made[ns, secret["metadata"]["name"]] = secret
        for item in (await bench.kube.list(ONEPASSWORDITEMS, ns))["items"]:
            statuses[ns, item["metadata"]["name"]] = item.get("status") or {}
    assert len(made) == len(refs), f"opsync made {len(made)} Secrets for {len(refs)} items"
    entries = []
    for ref in refs:
        ns = cluster.namespace_of(namespaces, ref)
        secret = made[ns, ref.title]  # an item's Secret is named after it (no spec.secretName here)
        floor_ns = floor[namespaces.index(ns)]
        entries.append((floor_ns, cluster.onepassword_item(ref), cluster.copy_of(secret), statuses[ns, ref.title]))
    async with cluster.watching(bench.kube, ONEPASSWORDITEMS, floor) as ready:
        ready.expect({(entry[0], entry[1]["metadata"]["name"]): cluster.is_ready for entry in entries})
        meter.start()
        started = time.perf_counter()
        answered = max(await cluster.floor_writes(bench.kube, entries, bench.options.workers)) - started
        await ready.wait(120 + len(entries) * 0.5)
        seen = max(ready.seen.values()) - started
    return seen, answered, meter.read()


async def add_workloads(bench: Bench, opsync: Opsync, namespaces: Sequence[str], refs: Sequence[ItemRef]) -> None:
    """One auto-restart Deployment per item in ``refs``, reading its Secret; wait until opsync recorded them."""
    await cluster.create_all(bench.kube, DEPLOYMENTS, _workloads(namespaces, refs), bench.options.workers)
    await opsync.settle()


def _workloads(namespaces: Sequence[str], refs: Sequence[ItemRef]) -> list[tuple[str, KubeObject]]:
    """``app-<title>`` reading the Secret of each item in ``refs``, in the item's namespace of ``namespaces``."""
    return [(cluster.namespace_of(namespaces, ref), cluster.deployment(f"app-{ref.title}", ref.title)) for ref in refs]


async def idle(bench: Bench, opsync: Opsync, size: int) -> Idle:
    """Scenario 2: counters across ``idle_polls`` polls, read at poll boundaries."""
    polls = bench.options.idle_polls
    timeout = (polls + 2) * bench.options.poll_interval * 3 + 60
    await opsync.settle()
    first = await opsync.polls()

    def polled(count: int) -> Callable[[], Awaitable[bool]]:
        async def done() -> bool:
            return await opsync.polls() >= count

        return done

    await until(polled(first + 1), within=timeout, what="a poll", interval=0.05)
    api_before, connect_before = await opsync.api_requests(), await bench.emulator.requests()
    # A window without scrapes: /metrics at N = 2,000 costs about as much CPU as a quiet poll.
    cpu_before = opsync.cpu_seconds()
    await asyncio.sleep(polls * bench.options.poll_interval)
    cpu = opsync.cpu_seconds() - cpu_before
    await until(polled(first + 1 + polls), within=timeout, what=f"{polls} polls", interval=0.05)
    api_after, connect_after = await opsync.api_requests(), await bench.emulator.requests()
    result = Idle(
        items=size,
        vaults=cluster.VAULTS,
        polls=polls,
        connect_requests=_delta(connect_after, connect_before),
        api_requests=_delta(api_after, api_before),
        api_writes=writes(api_before, api_after),
        cpu_seconds=cpu,
    )
    per_poll = sum(result.connect_requests.values()) / polls
    bench.log(
        f"idle N={size}: {per_poll:.1f} Connect requests, {result.api_writes / polls:.1f} writes and "
        f"{cpu / polls * 1000:.0f} ms of opsync's CPU per poll"
    )
    return result


def changed_from(value: str | None, read: Callable[[KubeObject], str | None]) -> Callable[[KubeObject], bool]:
    """A ``Watch`` condition: ``read(obj)`` is no longer ``value``."""
    return lambda obj: read(obj) != value


def item_version(secret: KubeObject) -> str | None:
    """The Secret's ``item-version`` annotation (opsync and the Go operator write the same one)."""
    return (secret["metadata"].get("annotations") or {}).get(ITEM_VERSION_ANNOTATION)


async def propagation(
    bench: Bench,
    opsync: Opsync,
    namespaces: Sequence[str],
    floor: Sequence[str],
    size: int,
    changed: int,
    secret_watch: Watch,
    deploy_watch: Watch,
) -> Propagation:
    """Scenario 3 at K=``changed``: ``rounds`` rounds, each at a random moment of the poll cycle, each followed
    by its floor in the ``floor`` namespaces (the watches cover both sets of namespaces)."""
    options = bench.options
    refs = cluster.items(size)[:changed]
    keys = {ref: (cluster.namespace_of(namespaces, ref), ref.title) for ref in refs}
    deploy_keys = {ref: (ns, f"app-{name}") for ref, (ns, name) in keys.items()}
    floor_keys = {ref: (floor[namespaces.index(ns)], name) for ref, (ns, name) in keys.items()}
    floor_deploy_keys = {ref: (floor[namespaces.index(ns)], name) for ref, (ns, name) in deploy_keys.items()}
    result = Propagation(
        items=size,
        changed=changed,
        rounds=options.rounds,
        secret_seconds=[],
        restart_seconds=[],
        cpu_seconds={},
        spans=[],
        floor_spans=[],
        split=[],
        floor_cpu_seconds={},
        api_requests={},
    )
    timeout = 2 * options.poll_interval + 60 + changed * 0.5
    meter = bench.cpu_meter(opsync)
    api_before = await opsync.api_requests()
    for round_ in range(options.rounds):
        await _changed(secret_watch, deploy_watch, keys.values(), deploy_keys.values())
        await asyncio.sleep(bench.random.uniform(0, options.poll_interval))  # a random phase of the poll cycle
        meter.start()
        changed_at = await change_items(bench, refs, f"round-{changed}-{round_}")
        edits = max(changed_at.values()) - min(changed_at.values())
        bench.log(f"propagation K={changed} round {round_ + 1}: {changed} items edited in {edits:.2f} s")
        await secret_watch.wait(timeout)
        await deploy_watch.wait(timeout)
        result.secret_seconds += [secret_watch.seen[keys[ref]] - changed_at[ref] for ref in refs]
        result.restart_seconds += [deploy_watch.seen[deploy_keys[ref]] - changed_at[ref] for ref in refs]
        result.spans.append(_span(secret_watch, deploy_watch))
        result.split.append(split_over_polls(secret_watch.seen.values(), options.poll_interval))
        # The floor: the same Secret updates and restarts, by the benchmark, once opsync is idle (its status
        # patches and Events come after the restarts). Neither waits for the controller-manager's rollouts: its
        # client is capped at 20 requests/s (--kube-api-qps), so 500 rollouts take minutes and both rounds run
        # beside the same light, steady background.
        await opsync.settle()
        _add(result.cpu_seconds, meter.read())  # with what came after the restarts: the CPU the changes caused
        bench.log(f"propagation K={changed} round {round_ + 1}: opsync done and idle; the floor's round")
        made = [
            cluster.Change(
                namespace=floor_keys[ref][0],
                secret=ref.title,
                data=cached(secret_watch, keys[ref])["data"],
                item_version=item_version(cached(secret_watch, keys[ref])) or "",
                deployment=floor_deploy_keys[ref][1],
                restarted_at=cluster.restarted_at(cached(deploy_watch, deploy_keys[ref])) or "",
            )
            for ref in refs
        ]
        await _changed(secret_watch, deploy_watch, floor_keys.values(), floor_deploy_keys.values())
        meter.start()
        await cluster.floor_changes(bench.kube, made, options.workers)
        await secret_watch.wait(timeout)
        await deploy_watch.wait(timeout)
        _add(result.floor_cpu_seconds, meter.read())
        result.floor_spans.append(_span(secret_watch, deploy_watch))
        bench.log(f"propagation K={changed} round {round_ + 1}: the floor done")
    result.api_requests = _delta(await opsync.api_requests(), api_before)
    kept = len(kept_rounds(result.spans, result.split))
    bench.log(
        f"propagation N={size} K={changed}: Secret p99 {percentile(result.secret_seconds, 99):.1f} s, "
        f"restart p99 {percentile(result.restart_seconds, 99):.1f} s (interval {options.poll_interval} s); "
        f"over the {kept} of {options.rounds} rounds one poll found: first Secret to last restart "
        f"{kept_mean(result.spans, result.split):.2f} s, floor {kept_mean(result.floor_spans, result.split):.2f} s "
        f"(ratio {span_ratio(result.spans, result.floor_spans, result.split):.2f})"
    )
    return result


async def _changed(
    secret_watch: Watch,
    deploy_watch: Watch,
    secrets_: Iterable[tuple[str, str]],
    workloads: Iterable[tuple[str, str]],
) -> None:
    """Expect the Secrets' item-version and the Deployments' restart annotation to move from what they are."""
    restarted_at = cluster.restarted_at
    secret_watch.expect({key: changed_from(item_version(cached(secret_watch, key)), item_version) for key in secrets_})
    deploy_watch.expect({key: changed_from(restarted_at(cached(deploy_watch, key)), restarted_at) for key in workloads})


def _span(secret_watch: Watch, deploy_watch: Watch) -> float:
    """Seconds from the first expected Secret seen changed to the last expected object seen changed."""
    return round(max([*secret_watch.seen.values(), *deploy_watch.seen.values()]) - min(secret_watch.seen.values()), 3)


def split_over_polls(seen: Iterable[float], poll_interval: float) -> bool:
    """Whether a round's Secret updates (times seen) fell into two polls: a poll ran while the benchmark was
    still editing, and the next one found the rest. One poll's changes are written without a pause of half an
    interval; a split shows as that gap (a slow but steady round is never taken for one)."""
    times = sorted(seen)
    return any(later - earlier > poll_interval / 2 for earlier, later in itertools.pairwise(times))


def _add(total: dict[str, float], cpu: Mapping[str, float]) -> None:
    for name, used in cpu.items():
        total[name] = round(total.get(name, 0.0) + used, 2)


async def change_items(bench: Bench, refs: Sequence[ItemRef], value: str) -> dict[ItemRef, float]:
    """Set each item's password in 1Password, 16 edits at a time, in a random (seeded) order; when each edit
    was sent. Not in the order the items were made: an operator tracks them in that order too, and edits
    following it would hide how long a change waits behind others found in the same poll."""
    slots = asyncio.Semaphore(16)
    sent: dict[ItemRef, float] = {}

    async def change(ref: ItemRef) -> None:
        async with slots:
            sent[ref] = time.perf_counter()
            await bench.emulator.change(ref.vault, ref.title, {"password": value})

    await asyncio.gather(*(change(ref) for ref in bench.random.sample(list(refs), len(refs))))
    return sent


def cached(watch: Watch, key: tuple[str, str]) -> KubeObject:
    """The object ``watch`` holds under ``key`` (which must be there)."""
    obj = watch.informer.get(*key)
    assert obj is not None, f"{key} is not in the benchmark's cache"
    return obj


async def refresh(bench: Bench, namespaces: Sequence[str], size: int, refs: Sequence[ItemRef]) -> Refresh:
    """Scenario 6: ``refreshes`` on-demand refreshes, one at a time, cycling over ``refs`` (items with a
    Deployment), with an opsync whose poll interval is far longer than the scenario."""
    options = bench.options
    opsync = await bench.start_opsync(namespaces, "refresh", poll_interval=options.refresh_poll_interval)
    result = Refresh(items=size, poll_interval=options.refresh_poll_interval, secret_seconds=[], restart_seconds=[])
    try:
        await opsync.settle()  # its first poll (at start-up) and what it caused are over: no poll follows
        async with (
            cluster.watching(bench.kube, SECRETS, namespaces, label_selector=MANAGED_SELECTOR) as secret_watch,
            cluster.watching(bench.kube, DEPLOYMENTS, namespaces) as deploy_watch,
        ):
            for number in range(options.refreshes):
                ref = refs[number % len(refs)]
                namespace = cluster.namespace_of(namespaces, ref)
                key, deploy_key = (namespace, ref.title), (namespace, f"app-{ref.title}")
                secret_watch.expect({key: changed_from(item_version(cached(secret_watch, key)), item_version)})
                deploy_watch.expect(
                    {
                        deploy_key: changed_from(
                            cluster.restarted_at(cached(deploy_watch, deploy_key)), cluster.restarted_at
                        )
                    }
                )
                # The change in 1Password is the precondition, not timed: only the refresh brings it in.
                await bench.emulator.change(ref.vault, ref.title, {"password": f"refresh-{number}"})
                asked = time.perf_counter()
                patch = {"metadata": {"annotations": {REFRESH_ANNOTATION: f"bench-{bench.run_id}-{number}"}}}
                await bench.kube.patch(ONEPASSWORDITEMS, ref.title, patch, namespace)
                await secret_watch.wait(60)
                await deploy_watch.wait(60)
                result.secret_seconds.append(secret_watch.seen[key] - asked)
                result.restart_seconds.append(deploy_watch.seen[deploy_key] - asked)
    finally:
        await opsync.stop()
    bench.log(
        f"refresh N={size}: Secret p99 {percentile(result.secret_seconds, 99):.2f} s, restart p99 "
        f"{percentile(result.restart_seconds, 99):.2f} s over {len(result.secret_seconds)} refreshes "
        f"(poll interval {options.refresh_poll_interval} s)"
    )
    return result


async def restart(bench: Bench, namespaces: Sequence[str], size: int, unmanaged: int) -> Restart:
    """Scenarios 4 and 5: start opsync on objects already in sync; stop it again."""
    connect_before = await bench.emulator.requests()
    meter = bench.cpu_meter(None)
    meter.start()
    opsync = await bench.start_opsync(namespaces, f"restart-{unmanaged}")
    try:
        ready_seconds = time.perf_counter() - opsync.started
        idle_seconds = await opsync.settle()
        api = await opsync.api_requests()
        memory, cpu = opsync.memory(), {"opsync": opsync.cpu_seconds(), **meter.read()}
        connect_after = await bench.emulator.requests()
    finally:
        await opsync.stop()
    result = Restart(
        items=size,
        unmanaged=unmanaged,
        ready_seconds=ready_seconds,
        idle_seconds=idle_seconds,
        cpu_seconds=cpu,
        api_requests=dict(sorted(api.items())),
        api_writes=writes(Counter(), api),
        connect_requests=sum(connect_after.values()) - sum(connect_before.values()),
        rss_mib=memory.rss_mib,
        peak_rss_mib=memory.peak_mib,
    )
    bench.log(
        f"restart N={size} unmanaged={unmanaged}: ready {ready_seconds:.1f} s, idle {idle_seconds:.1f} s, "
        f"{result.api_writes} writes, RSS {memory.rss_mib:.0f} MiB (peak {memory.peak_mib:.0f})"
    )
    return result


async def add_unmanaged(bench: Bench, namespaces: Sequence[str], first: int, last: int) -> None:
    """Secrets ``unmanaged-<first..last-1>`` spread over ``namespaces`` (opsync must not cache them)."""
    bodies = [(namespaces[j % len(namespaces)], cluster.plain_secret(f"unmanaged-{j:05d}")) for j in range(first, last)]
    await cluster.create_all(bench.kube, SECRETS, bodies, 32)  # set-up, not measured: as fast as it goes


async def run_all(bench: Bench) -> Results:
    """The scenarios ``options.scenarios`` names, in the order of the module docstring."""
    options = bench.options
    chosen = set(options.scenarios)
    results = Results(options=asdict(options), started=rfc3339())
    started = time.perf_counter()
    if options.go_operator:  # first, on an untouched control plane; fresh namespaces of its own
        from bench import versus  # noqa: PLC0415 -- imports this module

        results.versus = [asdict(side) for side in await versus.run(bench, options.go_operator)]
    if "sync" not in chosen:
        results.wall_seconds = time.perf_counter() - started
        return results
    opsync: Opsync | None = None
    namespaces: list[str] = []
    size = options.largest
    changes = sorted({min(k, size) for k in options.changes})
    try:
        for n in sorted(options.sizes):
            repeats = max(1, options.sync_repeats) if n <= REPEATED_UP_TO else 1
            runs = []
            for r in range(repeats):  # the last repeat keeps the size's own namespaces, for scenarios 2-5
                if opsync is not None:
                    await opsync.stop()
                result, opsync, namespaces = await initial_sync(bench, n, "" if r == repeats - 1 else f"{n}r{r + 1}")
                runs.append(result)
            results.initial_sync.append(median_repeat(runs))
        assert opsync is not None
        if chosen & {"idle", "propagation", "refresh"}:
            await add_workloads(bench, opsync, namespaces, cluster.items(size)[: max(changes)])
            bench.log(f"{max(changes)} Deployments added; opsync settled")
        if "idle" in chosen:
            results.idle = await idle(bench, opsync, size)
        if "propagation" in chosen:
            floor = bench.namespaces(f"floor{size}")  # scenario 1's floor made the same Secrets there
            workloads = _workloads(floor, cluster.items(size)[: max(changes)])
            await cluster.create_all(bench.kube, DEPLOYMENTS, workloads, 32)  # set-up, not measured
            watched = [*namespaces, *floor]
            async with (
                cluster.watching(bench.kube, SECRETS, watched, label_selector=MANAGED_SELECTOR) as secret_watch,
                cluster.watching(bench.kube, DEPLOYMENTS, watched) as deploy_watch,
            ):
                bench.log(f"the floor's {len(workloads)} Deployments made; the benchmark's watches synced")
                for k in changes:
                    results.propagation.append(
                        await propagation(bench, opsync, namespaces, floor, size, k, secret_watch, deploy_watch)
                    )
            await opsync.settle()
            memory = opsync.memory()
            results.steady_memory = {"rss_mib": memory.rss_mib, "peak_rss_mib": memory.peak_mib}
    finally:
        if opsync is not None:
            await opsync.stop()
    if options.refreshes and "refresh" in chosen:
        results.refresh = await refresh(bench, namespaces, size, cluster.items(size)[: max(changes)])
    if "restart" in chosen:
        steps = max(1, options.unmanaged_steps)
        counts = [0, *(round(options.unmanaged * (s + 1) / steps) for s in range(steps))] if options.unmanaged else [0]
        for previous, count in zip([0, *counts], counts, strict=False):
            await add_unmanaged(bench, namespaces, previous, count)
            results.restarts.append(await restart(bench, namespaces, size, count))
    results.wall_seconds = time.perf_counter() - started
    return results
