"""The controller: workers run a reconciler on each key its sources enqueue (controller-runtime's
``pkg/controller``).

Sources (``opsync.source``) feed a ``WorkQueue`` of ``Request`` keys, and ``workers`` tasks reconcile them
one key at a time. What happens after a reconcile follows controller-runtime exactly:

============================  ==================================  =====================================
reconcile outcome             queue                               ``controller_runtime_reconcile_total``
============================  ==================================  =====================================
raises (or times out)         ``add_rate_limited`` (backoff)      ``error`` (+ ``reconcile_errors_total``)
raises ``TerminalError``      ``forget``, no retry                ``error`` (+ ``terminal_...``)
``Result(requeue_after=d)``   ``forget`` then ``add_after(d)``    ``requeue_after``
``Result(requeue=True)``      ``add_rate_limited``                ``requeue``
``None`` / ``Result()``       ``forget``                          ``success``
============================  ==================================  =====================================

An exception other than an I/O failure (see ``Reconciler``) is a bug: it also counts in
``controller_runtime_reconcile_panics_total``, as a recovered panic does in controller-runtime. The
controller knows nothing of a manager: ``opsync.builder`` adds it to one, and it runs as any runnable.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import aiohttp

from opsync import metrics
from opsync.aio import first_completed
from opsync.client import ApiError
from opsync.logging import log_context
from opsync.queue import RateLimiter, ShutDown, WorkQueue
from opsync.reconcile import Reconciler, Request, Result, TerminalError
from opsync.source import Source

log = logging.getLogger(__name__)

# What a reconcile that fails at I/O raises: an ordinary failure, not a bug (see ``Reconciler``).
_IO_ERRORS = (OSError, TimeoutError, aiohttp.ClientError, ApiError)


class ReconcileTimeoutError(TimeoutError):
    """The reconcile ran longer than the controller's ``reconcile_timeout`` and was cancelled."""


class CacheSyncTimeoutError(TimeoutError):
    """The controller's informers did not sync within ``cache_sync_timeout``."""


class Controller:
    """Runs ``workers`` reconcilers over a work queue fed by informers (and by ``enqueue``)."""

    def __init__(
        self,
        name: str,
        reconciler: Reconciler,
        *,
        workers: int = 1,
        reconcile_timeout: float | None = None,
        rate_limiter: RateLimiter[Request] | None = None,
        cache_sync_timeout: float = 120.0,
        metrics_provider: metrics.MetricsProvider | None = metrics.PROMETHEUS,
    ) -> None:
        """``metrics_provider``: what the controller and its work queue report to (None: nothing)."""
        if workers < 1:
            raise ValueError("a controller needs at least one worker")
        self.name = name
        self.queue: WorkQueue[Request] = WorkQueue(name, rate_limiter=rate_limiter, metrics_provider=metrics_provider)
        self.workers = workers
        self.reconcile_timeout = reconcile_timeout
        self.cache_sync_timeout = cache_sync_timeout
        self._reconciler = reconciler
        self._sources: list[Source] = []
        self._metrics = (
            metrics_provider.controller_metrics(name, workers) if metrics_provider else metrics.NO_CONTROLLER_METRICS
        )

    def watch(self, source: Source) -> None:
        """Reconcile what ``source`` delivers; ``run`` waits for it to sync. Call before ``run``."""
        source.start(self.queue)
        self._sources.append(source)

    @property
    def busy(self) -> bool:
        """Whether a key is queued or in a reconcile (the manager's Event recorders yield to this)."""
        return self.queue.busy

    async def wait_idle(self) -> None:
        """Return once no key is queued or in a reconcile."""
        await self.queue.wait_idle()

    def enqueue(self, request: Request) -> None:
        """Ask for a reconcile of ``request`` (for producers outside the informers, such as a poller)."""
        self.queue.add(request)

    async def run(self, stopping: asyncio.Event) -> None:
        """Wait for the informers to sync, reconcile until ``stopping`` is set, then let in-flight
        reconciles finish. Keys still waiting are dropped: the next leader lists everything anyway."""
        if not await self._wait_for_sync(stopping):
            self.queue.shut_down()
            return
        log.info("starting workers", extra={"controller": self.name, "workers": self.workers})
        async with asyncio.TaskGroup() as workers:
            for number in range(self.workers):
                workers.create_task(self._work(stopping), name=f"{self.name}-worker-{number}")
            await stopping.wait()
            log.info("stopping: waiting for in-flight reconciles", extra={"controller": self.name})
            await self.queue.shut_down_with_drain()
        log.info("all workers finished", extra={"controller": self.name})

    async def _wait_for_sync(self, stopping: asyncio.Event) -> bool:
        """True once every informer has synced; False if ``stopping`` came first."""

        async def all_synced() -> list[Any]:
            return await asyncio.gather(*(source.wait_for_sync() for source in self._sources))

        synced = asyncio.ensure_future(all_synced())
        done = await first_completed(synced, stopping.wait(), timeout=self.cache_sync_timeout)
        if stopping.is_set():
            return False
        if synced not in done:
            raise CacheSyncTimeoutError(
                f"controller {self.name}: informers did not sync within {self.cache_sync_timeout:g}s"
            )
        synced.result()  # an informer that failed outright fails the controller
        return True

    async def _work(self, stopping: asyncio.Event) -> None:
        while True:
            try:
                request = await self.queue.get()
            except ShutDown:
                return
            try:
                if not stopping.is_set():
                    await self._process(request)
            finally:
                self.queue.done(request)

    async def _process(self, request: Request) -> None:
        with log_context(controller=self.name, key=str(request), reconcileID=str(uuid.uuid4())):
            self._metrics.reconcile_started()
            started = time.monotonic()
            outcome, terminal, panic = "error", False, False
            try:
                result = await self._reconcile(request)
            except TerminalError as err:
                self.queue.forget(request)
                terminal = True
                log.error("reconcile failed and will not be retried: %s", err)
            except Exception as err:  # any exception is a failed reconcile: retry with backoff
                self.queue.add_rate_limited(request)
                if isinstance(err, _IO_ERRORS):
                    log.exception("reconciler error")
                else:
                    panic = True
                    log.exception("reconciler raised unexpectedly (a bug)")
            else:
                outcome = self._requeue(request, result or Result())
                log.debug("reconciled", extra={"result": outcome})
            finally:
                self._metrics.reconcile_ended(outcome, time.monotonic() - started, terminal=terminal, panic=panic)

    async def _reconcile(self, request: Request) -> Result | None:
        if self.reconcile_timeout is None:
            return await self._reconciler.reconcile(request)
        deadline = asyncio.timeout(self.reconcile_timeout)
        try:
            async with deadline:
                return await self._reconciler.reconcile(request)
        except TimeoutError:
            if not deadline.expired():
                raise  # the reconciler's own timeout (a slow request...), not ours
            self._metrics.reconcile_timed_out()
            raise ReconcileTimeoutError(f"reconcile did not finish within {self.reconcile_timeout:g}s") from None

    def _requeue(self, request: Request, result: Result) -> str:
        """Queue the follow-up ``result`` asks for; the ``result`` label of the reconcile."""
        if result.requeue_after is not None and result.requeue_after > 0:
            self.queue.forget(request)
            self.queue.add_after(request, result.requeue_after)
            return "requeue_after"
        if result.requeue:
            self.queue.add_rate_limited(request)
            return "requeue"
        self.queue.forget(request)
        return "success"
