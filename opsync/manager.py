"""The manager: runs the cache, controllers and other runnables; leader election; probes; metrics; shutdown.

Lifecycle of ``Manager.run``:

1. The probe and metrics servers start first, so probes answer while caches sync (``/readyz`` fails
   until every informer has synced).
2. The cache, always-on runnables and event recorders start at once, on every replica: a standby keeps
   warm caches and can take over quickly.
3. Leader-only runnables (controllers by default) start once this replica holds the Lease (at once
   without leader election).
4. On SIGTERM/SIGINT (or ``stopping``), within ``graceful_shutdown_timeout`` (negative: no limit):
   runnables stop taking work and finish what is in flight, then event recorders flush, then the cache
   stops; the Lease is released; the servers stop last. Whatever is still running at the deadline is
   cancelled.

If a runnable fails, the manager shuts down the same way and ``run`` raises that error. If the Lease is
lost without being released, nothing is drained (another replica may already be leading): everything is
cancelled at once and ``run`` raises ``LeaderElectionLost`` so the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from aiohttp import web

from opsync import metrics
from opsync.cache import Cache
from opsync.client import Client
from opsync.events import EventRecorder
from opsync.health import Checks, HttpServer, add_metrics_route
from opsync.leader import LeaderElectionConfig, LeaderElectionLost, LeaderElector

log = logging.getLogger(__name__)

_LEADER_ELECTION = "leader-election"
_CACHE = "cache"


class Runnable(Protocol):
    """Something the manager runs: ``run`` returns after ``stopping`` is set and its work is drained."""

    name: str

    async def run(self, stopping: asyncio.Event) -> None: ...


@runtime_checkable
class ReportsWork(Protocol):
    """A runnable that says whether it has work in hand (``Controller`` does); the manager's Event
    recorders hold their Events while one has (``opsync.events``)."""

    @property
    def busy(self) -> bool: ...

    async def wait_idle(self) -> None: ...


class _Tasks:
    """The manager's background tasks, by name: started, awaited phase by phase, cancelled on exit."""

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.errors: list[BaseException] = []

    def start(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks[name] = task
        return task

    def running(self) -> set[asyncio.Task[None]]:
        return {task for task in self._tasks.values() if not task.done()}

    def first_failure(self, done: set[asyncio.Future[Any]]) -> tuple[str, BaseException] | None:
        """The name and error of a task among ``done`` that failed."""
        for name, task in self._tasks.items():
            if task in done and not task.cancelled() and (error := task.exception()) is not None:
                return name, error
        return None

    async def stop(self, names: Iterable[str], deadline: float | None) -> None:
        """Wait for the named tasks until ``deadline`` (loop time), cancel what is left, keep their errors."""
        tasks = [self._tasks[name] for name in names if name in self._tasks]
        if not tasks:
            return
        timeout = None if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time())
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            log.warning("%s did not stop within the graceful shutdown timeout; cancelling it", task.get_name())
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in tasks:
            if not task.cancelled() and (error := task.exception()) is not None:
                log.error("%s failed while stopping", task.get_name(), exc_info=error)
                self.errors.append(error)

    async def cancel_all(self) -> None:
        running = self.running()
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


class Manager:
    """Owns a client's cache and runs everything built on it; see the module docstring for the lifecycle."""

    def __init__(
        self,
        client: Client,
        *,
        namespaces: Sequence[str] | None = None,
        leader_election: LeaderElectionConfig | None = None,
        health_probe_bind_address: str | None = ":8081",
        metrics_bind_address: str | None = ":8080",
        graceful_shutdown_timeout: float = 30.0,
    ) -> None:
        self.client = client
        self.cache = Cache(client, namespaces=namespaces)
        self.graceful_shutdown_timeout = graceful_shutdown_timeout
        self._elector = LeaderElector(client, leader_election) if leader_election else None
        self._leader_only: list[Runnable] = []
        self._always: list[Runnable] = []
        self._recorders: dict[str, EventRecorder] = {}
        self._leading = False
        self._started = False

        self._healthz = Checks("/healthz")
        self._readyz = Checks("/readyz")
        self._readyz.add("cache-sync", self._cache_synced)
        probes = web.Application()
        self._healthz.add_routes(probes)
        self._readyz.add_routes(probes)
        self._health_server = HttpServer("health probe", health_probe_bind_address, probes)
        metrics_app = web.Application()
        add_metrics_route(metrics_app, metrics.REGISTRY)
        self._metrics_server = HttpServer("metrics", metrics_bind_address, metrics_app)

    @property
    def is_leader(self) -> bool:
        """Whether leader-only runnables are running here (always true once started without election)."""
        return self._elector.is_leader if self._elector else self._leading

    @property
    def health_probe_port(self) -> int | None:
        """The port ``/healthz`` and ``/readyz`` are served on, once listening."""
        return self._health_server.port

    @property
    def metrics_port(self) -> int | None:
        """The port ``/metrics`` is served on, once listening."""
        return self._metrics_server.port

    def add(self, runnable: Runnable, *, leader_only: bool = True) -> None:
        """Run ``runnable`` with the manager: only while leading (the default), or on every replica."""
        if self._started:
            raise RuntimeError("runnables must be added before the manager runs")
        if runnable.name in self._task_names():
            raise ValueError(f"a runnable named {runnable.name!r} was already added")
        (self._leader_only if leader_only else self._always).append(runnable)

    def event_recorder(self, component: str) -> EventRecorder:
        """The Event recorder reporting as ``component``; the manager runs and flushes it."""
        if component not in self._recorders:
            if self._started:
                raise RuntimeError("event recorders must be created before the manager runs")
            recorder = EventRecorder(self.client, component, idle=self.wait_idle)
            if recorder.name in self._task_names():
                raise ValueError(f"a runnable named {recorder.name!r} was already added")
            self._recorders[component] = recorder
        return self._recorders[component]

    async def wait_idle(self) -> None:
        """Return once no runnable has work in hand (``ReportsWork``): what the Event recorders wait for."""
        running = (*self._always, *(self._leader_only if self.is_leader else ()))  # a standby's queues fill
        working = [r for r in running if isinstance(r, ReportsWork)]
        while busy := [r for r in working if r.busy]:
            for runnable in busy:  # one may take work again while another is awaited: look at all again
                await runnable.wait_idle()

    def _task_names(self) -> set[str]:
        """The names the manager's tasks go by (runnables, recorders and its own)."""
        runnables = (*self._leader_only, *self._always, *self._recorders.values())
        return {_CACHE, _LEADER_ELECTION, *(r.name for r in runnables)}

    def add_healthz_check(self, name: str, check: Callable[[], Awaitable[object] | None]) -> None:
        """A liveness check served at ``/healthz`` and ``/healthz/<name>``."""
        self._healthz.add(name, check)

    def add_readyz_check(self, name: str, check: Callable[[], Awaitable[object] | None]) -> None:
        """A readiness check served at ``/readyz`` and ``/readyz/<name>`` (``cache-sync`` is built in)."""
        self._readyz.add(name, check)

    def _cache_synced(self) -> None:
        if not self.cache.has_synced():
            raise RuntimeError("informers have not synced yet")

    async def run(self, stopping: asyncio.Event | None = None) -> None:
        """Run until ``stopping`` is set (or, when it is not given, until SIGTERM/SIGINT).

        Raises the error of a failed runnable, or ``LeaderElectionLost``. Cancelling the task running this
        cancels everything without releasing the Lease, like a crash.
        """
        if self._started:
            raise RuntimeError("a manager runs only once")
        self._started = True
        signals: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if stopping is None:
            stopping = asyncio.Event()
            signals = _handle_signals(stopping)
        with signals:
            await self._health_server.start()
            try:
                await self._metrics_server.start()
                await self._run(stopping)
            finally:
                await self._metrics_server.stop()
                await self._health_server.stop()
        log.info("manager stopped")

    async def _run(self, stopping: asyncio.Event) -> None:
        tasks = _Tasks()
        work, recorders, cache, lease = (asyncio.Event() for _ in range(4))
        try:
            tasks.start(_CACHE, self.cache.run(cache))
            for runnable in self._always:
                tasks.start(runnable.name, runnable.run(work))
            for recorder in self._recorders.values():
                tasks.start(recorder.name, recorder.run(recorders))
            if self._elector:
                tasks.start(_LEADER_ELECTION, self._elector.run(lease))
            failure = await self._supervise(stopping, tasks, work)
            if isinstance(failure, LeaderElectionLost):
                raise failure
            log.info("stopping", extra={"timeout": self.graceful_shutdown_timeout})
            timeout = self.graceful_shutdown_timeout
            deadline = None if timeout < 0 else asyncio.get_running_loop().time() + timeout
            for event, names in (
                (work, [r.name for r in (*self._leader_only, *self._always)]),
                (recorders, [recorder.name for recorder in self._recorders.values()]),
                (cache, [_CACHE]),
            ):
                event.set()
                await tasks.stop(names, deadline)
            lease.set()  # the elector releases the Lease now that leader-only work has stopped
            await tasks.stop([_LEADER_ELECTION], None)
            errors = [failure] if failure else []
            errors += tasks.errors
            if errors:
                raise errors[0]
        finally:
            await tasks.cancel_all()

    async def _supervise(self, stopping: asyncio.Event, tasks: _Tasks, work: asyncio.Event) -> BaseException | None:
        """Start leader-only work when elected; return on ``stopping`` or with the first runnable failure."""
        stopped = asyncio.ensure_future(stopping.wait())
        elected = asyncio.ensure_future(self._elector.elected.wait() if self._elector else asyncio.sleep(0))
        pending: set[asyncio.Future[Any]] = {stopped, elected, *tasks.running()}
        try:
            while True:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if stopped in done:
                    return None
                if elected in done:
                    log.info("starting leader-only runnables", extra={"count": len(self._leader_only)})
                    self._leading = True
                    pending |= {tasks.start(r.name, r.run(work)) for r in self._leader_only}
                failed = tasks.first_failure(done)
                if failed is not None:
                    log.error("%s failed; stopping the manager", failed[0], exc_info=failed[1])
                    return failed[1]
        finally:
            stopped.cancel()
            elected.cancel()


@contextlib.contextmanager
def _handle_signals(stopping: asyncio.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stopping`` (where the loop can handle signals: Unix, main thread)."""
    loop = asyncio.get_running_loop()
    installed = []

    def on_signal(sig: signal.Signals) -> None:
        log.info("received %s: shutting down", sig.name)
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
