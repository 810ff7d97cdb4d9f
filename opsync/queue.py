"""client-go's rate-limited delaying work queue (``util/workqueue``), asyncio-native.

Invariants, for every key ``k`` (keys are hashable and compared by equality):

1. **Dedup.** While ``k`` waits to be handed out it is in the queue once; adding it again is a no-op.
2. **Single flight.** ``get`` never hands ``k`` out while a worker still holds it (between ``get`` and
   ``done``). Adds during that time mark it dirty, and ``done`` queues it again: any number of adds
   during one processing collapse into exactly one more processing.
3. **Fair order.** Ready keys are handed out first in, first out.
4. **Delays.** ``add_after(k, d)`` makes ``k`` ready ``d`` seconds from now (``d <= 0``: now, as ``add``).
   A key has at most one pending delayed add and the earliest ready time wins: a later ``add_after``
   never postpones it. As in client-go, the delayed add is independent of ``k``'s presence in the
   ready queue: when it comes due it is an ordinary ``add`` (deduplicated if ``k`` is still waiting).
5. **Backoff.** ``add_rate_limited(k)`` is ``add_after(k, rate_limiter.when(k))``; ``forget(k)`` resets
   ``k``'s failure history and ``num_requeues(k)`` reports it.
6. **Shutdown.** After ``shut_down`` adds are ignored and delayed adds are dropped; ``get`` still hands
   out the keys already ready, then raises :class:`ShutDown` at once. ``shut_down_with_drain`` also
   waits until every key handed out is ``done`` (or until a plain ``shut_down`` cancels the drain).

Keys whose delay has passed are moved to the ready queue whenever the queue is used (``get``, ``add``,
``len``, a metrics scrape) and by the timers of waiting ``get`` calls, so a waiting worker wakes when
the earliest delayed key is due; a heartbeat (client-go's 10 s ``maxWait``) guards against a clock
that disagrees with the event loop's. The clock is injectable for deterministic tests.

A queue with a name reports client-go's seven ``workqueue_*`` metrics (see :mod:`opsync.metrics`).
The queue is not thread-safe: use it, and scrape its metrics, from its event loop's thread.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

from opsync import metrics

__all__ = [
    "BucketRateLimiter",
    "ItemExponentialFailureRateLimiter",
    "MaxOfRateLimiter",
    "RateLimiter",
    "ShutDown",
    "WorkQueue",
    "default_controller_rate_limiter",
]

T = TypeVar("T", bound=Hashable)
T_contra = TypeVar("T_contra", bound=Hashable, contravariant=True)
Clock = Callable[[], float]

MAX_WAIT = 10.0
"""Longest a waiting ``get`` sleeps before looking at the delayed keys again (client-go's ``maxWait``)."""


class ShutDown(Exception):
    """Raised by :meth:`WorkQueue.get` once the queue is shut down and nothing is left to hand out."""


# --- rate limiters (client-go default_rate_limiters.go) ---------------------------------------------------


class RateLimiter(Protocol[T_contra]):
    """Decides how long a key waits before its next retry."""

    def when(self, item: T_contra) -> float:
        """The delay before ``item``'s next retry, in seconds; records the retry."""
        ...

    def forget(self, item: T_contra) -> None:
        """Drop ``item``'s history: it succeeded, or is no longer tracked."""
        ...

    def num_requeues(self, item: T_contra) -> int:
        """How many retries of ``item`` have been recorded since it was last forgotten."""
        ...


class ItemExponentialFailureRateLimiter(Generic[T]):
    """Per-key exponential backoff: ``base_delay * 2**failures``, capped at ``max_delay``."""

    def __init__(self, base_delay: float = 0.005, max_delay: float = 1000.0) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._failures: dict[T, int] = {}

    def when(self, item: T) -> float:
        """The next delay for ``item``, doubling with each call until ``forget``."""
        failures = self._failures.get(item, 0)
        self._failures[item] = failures + 1
        try:
            return min(self.base_delay * 2.0**failures, self.max_delay)
        except OverflowError:  # 2.0**1024 and beyond: long past the cap
            return self.max_delay

    def forget(self, item: T) -> None:
        """Reset ``item``'s backoff."""
        self._failures.pop(item, None)

    def num_requeues(self, item: T) -> int:
        """Failures of ``item`` since it was last forgotten."""
        return self._failures.get(item, 0)


class BucketRateLimiter(Generic[T]):
    """A token bucket shared by all keys (golang.org/x/time/rate ``Reserve``): ``burst`` tokens,
    refilled at ``qps`` per second. Each call takes a token, borrowing from the future when the
    bucket is empty, and returns how long until that token exists."""

    def __init__(self, qps: float = 10.0, burst: int = 100, *, clock: Clock = time.monotonic) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError("a token bucket needs qps > 0 and burst >= 1")
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)  # starts full; negative: tokens already promised
        self._last = clock()

    def when(self, item: T) -> float:
        """Reserve a token; the delay until it is available."""
        now = self._clock()
        elapsed = max(now - self._last, 0.0)  # a clock that steps back refills nothing
        self._last = now
        self._tokens = min(self._tokens + elapsed * self.qps, float(self.burst)) - 1.0
        return max(-self._tokens / self.qps, 0.0)

    def forget(self, item: T) -> None:
        """Nothing to forget: the bucket is shared."""

    def num_requeues(self, item: T) -> int:
        """Always 0: the bucket does not track keys."""
        return 0


class MaxOfRateLimiter(Generic[T]):
    """The longest delay of several limiters (every limiter records every retry)."""

    def __init__(self, *limiters: RateLimiter[T]) -> None:
        if not limiters:
            raise ValueError("MaxOfRateLimiter needs at least one limiter")
        self.limiters = limiters

    def when(self, item: T) -> float:
        """The longest of the limiters' delays."""
        return max(limiter.when(item) for limiter in self.limiters)

    def forget(self, item: T) -> None:
        """Forget ``item`` in every limiter."""
        for limiter in self.limiters:
            limiter.forget(item)

    def num_requeues(self, item: T) -> int:
        """The highest count any limiter reports."""
        return max(limiter.num_requeues(item) for limiter in self.limiters)


def default_controller_rate_limiter(clock: Clock = time.monotonic) -> MaxOfRateLimiter[T]:
    """client-go's default for controllers: per-key backoff 5 ms … 1000 s, and 10 qps / burst 100 overall."""
    return MaxOfRateLimiter(ItemExponentialFailureRateLimiter(0.005, 1000.0), BucketRateLimiter(10.0, 100, clock=clock))


# --- the queue ---------------------------------------------------------------------------------------------


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _wake_all(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        _wake(waiter)
    waiters.clear()


async def _wait_in(waiters: list[asyncio.Future[None]], while_: Callable[[], bool]) -> None:
    """Wait among ``waiters`` (woken by ``_wake_all``) for as long as ``while_()`` holds."""
    loop = asyncio.get_running_loop()
    while while_():
        woken: asyncio.Future[None] = loop.create_future()
        waiters.append(woken)
        try:
            await woken
        finally:
            if woken in waiters:
                waiters.remove(woken)


class WorkQueue(Generic[T]):
    """A deduplicating, single-flight, delaying, rate-limited work queue (see the module docstring)."""

    def __init__(
        self,
        name: str = "",
        *,
        rate_limiter: RateLimiter[T] | None = None,
        clock: Clock = time.monotonic,
        metrics_provider: metrics.QueueMetricsProvider | None = metrics.PROMETHEUS,
    ) -> None:
        """A named queue reports through ``metrics_provider`` (None: not at all); an unnamed one never does."""
        self.name = name
        self._limiter: RateLimiter[T] = (
            rate_limiter if rate_limiter is not None else default_controller_rate_limiter(clock)
        )
        self._clock = clock
        self._ready: deque[T] = deque()  # FIFO of keys to hand out; always dirty and not processing
        self._dirty: set[T] = set()  # keys that need processing (ready, or re-added while processing)
        self._queued_since: dict[T, float] = {}  # dirty key -> when it became ready (queue duration)
        self._processing: dict[T, float] = {}  # key -> when it was handed out
        # Delayed keys: a min-heap of (ready time, sequence, key) plus each key's live ready time; an
        # entry superseded by an earlier add_after stays in the heap and is skipped when popped.
        self._delayed: list[tuple[float, int, T]] = []
        self._ready_at: dict[T, float] = {}
        self._sequence = itertools.count()  # heap tie-breaker, so keys need not be orderable
        self._getters: deque[asyncio.Future[None]] = deque()
        self._drainers: list[asyncio.Future[None]] = []
        self._idlers: list[asyncio.Future[None]] = []  # wait_idle()'s, woken when the last key is done
        self._shutting_down = False
        self._draining = False
        self._metrics = metrics_provider.queue_metrics(self) if name and metrics_provider else None

    def add(self, item: T) -> None:
        """Queue ``item`` for processing (a no-op if it is already waiting, or the queue is shut down)."""
        if not self._shutting_down:
            self._promote_due()  # keys already due were ready first: they stay ahead
            self._mark_dirty(item, self._clock())

    def add_after(self, item: T, delay: float) -> None:
        """Queue ``item`` once ``delay`` seconds have passed; an earlier pending ready time wins."""
        if self._shutting_down:
            return
        if self._metrics:
            self._metrics.retried()
        if delay <= 0:
            self.add(item)
            return
        ready_at = self._clock() + delay
        pending = self._ready_at.get(item)
        if pending is not None and pending <= ready_at:
            return
        self._ready_at[item] = ready_at
        heapq.heappush(self._delayed, (ready_at, next(self._sequence), item))
        if self._delayed[0][0] == ready_at:
            self._wake_one()  # the new earliest key: a waiting get re-arms its timer

    def add_rate_limited(self, item: T) -> None:
        """Queue ``item`` after the delay its rate limiter decides (its next backoff step)."""
        self.add_after(item, self._limiter.when(item))

    def forget(self, item: T) -> None:
        """Reset ``item``'s backoff (it was processed successfully)."""
        self._limiter.forget(item)

    def num_requeues(self, item: T) -> int:
        """How many rate-limited requeues ``item`` has had since it was last forgotten."""
        return self._limiter.num_requeues(item)

    async def get(self) -> T:
        """Wait for the next ready key and hand it out; the caller must call :meth:`done` with it.

        Raises :class:`ShutDown` once the queue is shut down and no key is ready."""
        loop = asyncio.get_running_loop()
        while True:
            self._promote_due()
            if self._ready:
                return self._hand_out()
            if self._shutting_down:
                raise ShutDown
            waiter: asyncio.Future[None] = loop.create_future()
            self._getters.append(waiter)
            timer = loop.call_later(self._time_to_next_due(), _wake, waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # we were woken for a key we will not take: pass it on
                raise
            finally:
                timer.cancel()
                self._getters.remove(waiter)

    def done(self, item: T) -> None:
        """Mark ``item`` processed; if it was added meanwhile, queue it again."""
        started = self._processing.pop(item, None)
        if started is None:
            return  # not handed out (client-go ignores this too)
        if self._metrics:
            self._metrics.worked(self._clock() - started)
        if item in self._dirty:
            self._promote_due()  # keys already due were ready first: they stay ahead
            self._ready.append(item)
            self._wake_one()
        if not self._processing:
            self._processing = {}
            _wake_all(self._drainers)
            if not self._dirty:
                _wake_all(self._idlers)

    def shut_down(self) -> None:
        """Stop accepting keys and drop the delayed ones; ``get`` hands out what is ready, then raises
        :class:`ShutDown`. Also ends a pending :meth:`shut_down_with_drain`."""
        self._draining = False
        self._stop()
        _wake_all(self._drainers)

    async def shut_down_with_drain(self) -> None:
        """:meth:`shut_down`, then wait until every key handed out has been marked ``done``."""
        self._draining = True
        self._stop()
        await _wait_in(self._drainers, lambda: bool(self._processing) and self._draining)

    @property
    def busy(self) -> bool:
        """Whether a key is ready to be handed out, or being processed (keys delayed for later are not)."""
        self._promote_due()
        return bool(self._dirty or self._processing)

    async def wait_idle(self) -> None:
        """Return once no key is ready or being processed (at once if none is)."""
        await _wait_in(self._idlers, lambda: self.busy)

    def __len__(self) -> int:
        """The number of keys ready to be handed out now."""
        self._promote_due()
        return len(self._ready)

    def stats(self) -> metrics.QueueStats:
        """The live gauges of ``/metrics``: depth (client-go counts every dirty key) and in-flight work."""
        self._promote_due()
        now = self._clock()
        ages = [now - started for started in self._processing.values()]
        return metrics.QueueStats(len(self._dirty), sum(ages), max(ages, default=0.0))

    # --- internals ---

    def _mark_dirty(self, item: T, since: float) -> None:
        if item in self._dirty:
            return
        self._dirty.add(item)
        self._queued_since[item] = since
        if self._metrics:
            self._metrics.added()
        if item not in self._processing:
            self._ready.append(item)
            self._wake_one()

    def _hand_out(self) -> T:
        item = self._ready.popleft()
        now = self._clock()
        self._dirty.remove(item)
        self._processing[item] = now
        queued_since = self._queued_since.pop(item)
        if not self._dirty:
            # A set or dict never gives its table back: an idle queue does not keep the table of a
            # burst (an initial sync of thousands of keys). The same for _processing and _ready_at.
            self._dirty, self._queued_since = set(), {}
        if self._metrics:
            self._metrics.waited(now - queued_since)
        return item

    def _promote_due(self) -> None:
        """Move the delayed keys whose time has come to the ready queue, earliest first."""
        if not self._delayed:
            return
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            ready_at, _, item = heapq.heappop(self._delayed)
            if self._ready_at.get(item) == ready_at:  # else superseded by an earlier add_after
                del self._ready_at[item]
                if not self._ready_at:
                    self._ready_at = {}
                self._mark_dirty(item, ready_at)  # queue duration counts from when it was due

    def _time_to_next_due(self) -> float:
        if not self._delayed:
            return MAX_WAIT
        return min(max(self._delayed[0][0] - self._clock(), 0.0), MAX_WAIT)

    def _wake_one(self) -> None:
        for waiter in self._getters:
            if not waiter.done():
                waiter.set_result(None)
                return

    def _stop(self) -> None:
        self._shutting_down = True
        self._delayed.clear()
        self._ready_at.clear()
        for waiter in self._getters:
            _wake(waiter)
