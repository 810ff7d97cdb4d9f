"""WorkQueue and rate limiters: examples plus hypothesis property tests of client-go's invariants.

Time-dependent tests run on a ``FakeTimeLoop``: an event loop whose clock (also the queue's clock) only
moves when the test advances it, so the queue's own timers fire deterministically and nothing waits.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from opsync.queue import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    RateLimiter,
    ShutDown,
    WorkQueue,
    default_controller_rate_limiter,
)

R = TypeVar("R")


class FakeTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose time stands still until the test moves it."""

    def __init__(self) -> None:
        self.now = 0.0
        super().__init__()

    def time(self) -> float:
        return self.now


class Harness:
    """Drives a FakeTimeLoop from synchronous test code; never blocks on real time."""

    def __init__(self) -> None:
        self.loop = FakeTimeLoop()

    def clock(self) -> float:
        return self.loop.now

    def queue(self, name: str = "", rate_limiter: RateLimiter[str] | None = None) -> WorkQueue[str]:
        return WorkQueue(name, rate_limiter=rate_limiter, clock=self.clock)

    def settle(self) -> None:
        """Run every callback that is ready (including timers due at the current fake time)."""

        async def spin() -> None:
            for _ in range(12):
                await asyncio.sleep(0)

        self.loop.run_until_complete(spin())

    def start(self, coro: Coroutine[Any, Any, R]) -> asyncio.Task[R]:
        task = self.loop.create_task(coro)
        self.settle()
        return task

    def run(self, coro: Coroutine[Any, Any, R]) -> R:
        """Run ``coro``, which must finish without the fake clock moving."""
        task = self.start(coro)
        assert task.done(), "blocked"
        return task.result()

    def advance(self, seconds: float) -> None:
        self.loop.now += seconds
        self.settle()

    def close(self) -> None:
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        self.settle()
        self.loop.close()


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    yield harness
    harness.close()


def take(h: Harness, queue: WorkQueue[str]) -> str:
    """get + done of the next ready key."""
    item = h.run(queue.get())
    queue.done(item)
    return item


# --- the basic queue ---------------------------------------------------------------------------------------


def test_keys_are_handed_out_in_order_and_once_while_waiting(h: Harness) -> None:
    queue = h.queue()
    for key in ("a", "b", "a", "c", "b"):
        queue.add(key)
    assert len(queue) == 3
    assert [take(h, queue) for _ in range(3)] == ["a", "b", "c"]
    assert len(queue) == 0


def test_a_key_being_processed_is_not_handed_to_a_second_worker(h: Harness) -> None:
    queue = h.queue()
    queue.add("a")
    assert h.run(queue.get()) == "a"
    queue.add("a")
    second = h.start(queue.get())
    assert not second.done()
    assert len(queue) == 0
    queue.done("a")
    h.settle()
    assert second.result() == "a"


def test_adds_during_processing_collapse_into_one_more_run_after_done(h: Harness) -> None:
    queue = h.queue()
    queue.add("a")
    item = h.run(queue.get())
    for _ in range(5):
        queue.add("a")
    queue.done(item)
    assert len(queue) == 1
    assert take(h, queue) == "a"
    assert len(queue) == 0


def test_an_idle_queue_does_not_keep_the_memory_of_a_burst(h: Harness) -> None:
    """A dict or set keeps its grown table when emptied; a queue that was handed an initial sync of
    thousands of keys (ready, delayed and in flight at once) gives those tables back once it is idle."""
    queue = h.queue()
    tracemalloc.start()
    try:
        # CPython keeps up to 2,000 freed tuples of each size for reuse: fill that cache first, so the
        # delayed keys' (time, sequence, key) entries it takes back are not counted as held.
        warm = [(float(i), i, str(i)) for i in range(3000)]
        del warm
        before = tracemalloc.get_traced_memory()[0]
        keys = [f"namespace/item-{i}" for i in range(4000)]
        for key in keys[:2000]:
            queue.add(key)
        for key in keys[2000:]:
            queue.add_after(key, 1.0)
        h.advance(1.0)
        in_flight = [h.run(queue.get()) for _ in keys]
        for key in in_flight:
            queue.done(key)
        assert len(queue) == 0
        del keys, in_flight
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 32 * 1024, f"the idle queue still holds {held} bytes"


def test_done_for_a_key_not_handed_out_changes_nothing(h: Harness) -> None:
    queue = h.queue()
    queue.add("a")
    queue.done("a")
    queue.done("b")
    assert len(queue) == 1
    assert take(h, queue) == "a"


def test_a_waiting_worker_wakes_on_add(h: Harness) -> None:
    queue = h.queue()
    worker = h.start(queue.get())
    assert not worker.done()
    queue.add("a")
    h.settle()
    assert worker.result() == "a"


def test_a_cancelled_worker_passes_its_wake_up_on(h: Harness) -> None:
    queue = h.queue()
    first, second = h.start(queue.get()), h.start(queue.get())
    queue.add("a")  # wakes the first worker...
    first.cancel()  # ...which is cancelled before it can take the key
    h.settle()
    assert first.cancelled()
    assert second.result() == "a"


# --- delays --------------------------------------------------------------------------------------------------


def test_add_after_wakes_a_waiting_worker_when_due(h: Harness) -> None:
    queue = h.queue()
    worker = h.start(queue.get())
    queue.add_after("a", 2.0)
    h.advance(1.5)
    assert not worker.done()
    h.advance(0.5)
    assert worker.result() == "a"


def test_delayed_key_becomes_ready_without_a_waiting_worker(h: Harness) -> None:
    queue = h.queue()
    queue.add_after("a", 1.0)
    assert len(queue) == 0
    h.advance(1.0)
    assert len(queue) == 1


@pytest.mark.parametrize("delay", [0.0, -3.0])
def test_add_after_without_a_positive_delay_is_add(h: Harness, delay: float) -> None:
    queue = h.queue()
    queue.add_after("a", delay)
    assert len(queue) == 1


@pytest.mark.parametrize("delays", [(5.0, 2.0), (2.0, 5.0)])
def test_the_earliest_ready_time_wins_and_the_later_one_is_dropped(h: Harness, delays: tuple[float, float]) -> None:
    queue = h.queue()
    for delay in delays:
        queue.add_after("a", delay)
    h.advance(1.9)
    assert len(queue) == 0
    h.advance(0.1)
    assert take(h, queue) == "a"
    h.advance(10.0)
    assert len(queue) == 0


def test_a_superseded_ready_time_does_not_fire_a_newer_delay_early(h: Harness) -> None:
    queue = h.queue()
    queue.add_after("a", 5.0)
    queue.add_after("a", 2.0)  # supersedes the entry due at t=5
    h.advance(2.0)
    assert take(h, queue) == "a"
    queue.add_after("a", 6.0)  # due at t=8
    h.advance(3.0)  # t=5: the superseded entry comes up and must be ignored
    assert len(queue) == 0
    h.advance(3.0)
    assert take(h, queue) == "a"


def test_a_delayed_add_is_independent_of_an_immediate_one(h: Harness) -> None:
    # client-go: the pending AddAfter still fires after the key was added and processed meanwhile.
    queue = h.queue()
    queue.add_after("a", 3.0)
    queue.add("a")
    assert take(h, queue) == "a"
    h.advance(3.0)
    assert take(h, queue) == "a"


def test_keys_due_together_come_out_in_the_order_they_were_delayed(h: Harness) -> None:
    queue: WorkQueue[Any] = WorkQueue(clock=h.clock)
    unorderable = [("t", 1), 7, frozenset({"x"})]  # heap ties must not compare the keys
    for key in unorderable:
        queue.add_after(key, 1.0)
    h.advance(1.0)
    got = []
    for _ in unorderable:
        item = h.run(queue.get())
        queue.done(item)
        got.append(item)
    assert got == unorderable


def test_a_waiting_worker_rearms_for_an_earlier_key(h: Harness) -> None:
    queue = h.queue()
    worker = h.start(queue.get())
    queue.add_after("late", 8.0)
    queue.add_after("early", 1.0)
    h.advance(1.0)
    assert worker.result() == "early"


async def test_delayed_key_arrives_on_the_real_clock() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("a", 0.01)
    async with asyncio.timeout(5):
        assert await queue.get() == "a"


# --- rate limiting -------------------------------------------------------------------------------------------


def test_add_rate_limited_backs_off_exponentially_and_forget_resets(h: Harness) -> None:
    queue = h.queue()  # the default controller limiter, on the fake clock
    for failure, delay in enumerate([0.005, 0.01, 0.02, 0.04]):
        queue.add_rate_limited("a")
        assert queue.num_requeues("a") == failure + 1
        h.advance(delay * 0.99)
        assert len(queue) == 0
        h.advance(delay * 0.02)
        assert take(h, queue) == "a"
    queue.forget("a")
    assert queue.num_requeues("a") == 0
    queue.add_rate_limited("a")
    h.advance(0.005)
    assert len(queue) == 1


@given(
    base=st.floats(1e-4, 10.0),
    cap=st.floats(1e-3, 1e4),
    failures=st.integers(0, 40),
)
def test_exponential_limiter_doubles_up_to_the_cap(base: float, cap: float, failures: int) -> None:
    limiter: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter(base, cap)
    delays = [limiter.when("a") for _ in range(failures)]
    assert delays == [min(base * 2**n, cap) for n in range(failures)]
    assert limiter.num_requeues("a") == failures
    assert limiter.when("b") == min(base, cap)  # keys back off independently
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == min(base, cap)


def test_exponential_defaults_reach_1000s_on_the_19th_failure_and_never_overflow() -> None:
    limiter: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter()
    delays = [limiter.when("a") for _ in range(2000)]
    assert delays[0] == 0.005
    assert delays[17] == pytest.approx(655.36)
    assert delays[18] == 1000.0
    assert delays[-1] == 1000.0


@given(qps=st.floats(0.5, 1000.0), burst=st.integers(1, 200), calls=st.integers(0, 400))
def test_bucket_grants_the_burst_then_one_token_per_interval(qps: float, burst: int, calls: int) -> None:
    limiter: BucketRateLimiter[str] = BucketRateLimiter(qps, burst, clock=lambda: 0.0)
    delays = [limiter.when(str(n)) for n in range(calls)]
    assert delays == [max(n + 1 - burst, 0) / qps for n in range(calls)]


def test_bucket_refills_at_qps_up_to_the_burst() -> None:
    now = [0.0]
    limiter: BucketRateLimiter[str] = BucketRateLimiter(10.0, 100, clock=lambda: now[0])
    assert [limiter.when("k") for _ in range(100)] == [0.0] * 100
    assert limiter.when("k") == pytest.approx(0.1)  # borrowed: the bucket owes one token
    now[0] += 0.2  # pays the debt and refills one token
    assert limiter.when("k") == 0.0
    assert limiter.when("k") == pytest.approx(0.1)
    now[0] += 3600.0  # idle for an hour: full again, but no more than the burst
    assert [limiter.when("k") for _ in range(100)] == [0.0] * 100
    assert limiter.when("k") == pytest.approx(0.1)
    assert limiter.num_requeues("k") == 0


def test_max_of_takes_the_longest_delay_and_forgets_everywhere() -> None:
    slow: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter(1.0, 100.0)
    fast: ItemExponentialFailureRateLimiter[str] = ItemExponentialFailureRateLimiter(0.5, 100.0)
    limiter = MaxOfRateLimiter(fast, slow)
    assert [limiter.when("a") for _ in range(3)] == [1.0, 2.0, 4.0]
    assert limiter.num_requeues("a") == 3
    limiter.forget("a")
    assert (fast.num_requeues("a"), slow.num_requeues("a")) == (0, 0)


def test_default_controller_limiter_is_backoff_and_a_10qps_burst_100_bucket() -> None:
    limiter: MaxOfRateLimiter[str] = default_controller_rate_limiter(clock=lambda: 0.0)
    assert [limiter.when(f"k{n}") for n in range(100)] == [0.005] * 100
    assert limiter.when("k100") == pytest.approx(0.1)  # the 101st retry waits for the bucket
    assert limiter.when("k0") == pytest.approx(0.2)


# --- shutdown ------------------------------------------------------------------------------------------------


def test_shut_down_hands_out_what_is_ready_then_raises(h: Harness) -> None:
    queue = h.queue()
    queue.add("a")
    queue.add_after("later", 1.0)
    queue.shut_down()
    queue.add("b")
    queue.add_after("c", 0.0)
    assert take(h, queue) == "a"
    h.advance(5.0)  # the delayed key was dropped
    with pytest.raises(ShutDown):
        h.run(queue.get())


def test_shut_down_wakes_waiting_workers(h: Harness) -> None:
    queue = h.queue()
    workers = [h.start(queue.get()) for _ in range(3)]
    queue.shut_down()
    h.settle()
    for worker in workers:
        assert isinstance(worker.exception(), ShutDown)


def test_shut_down_with_drain_waits_for_keys_in_flight(h: Harness) -> None:
    queue = h.queue()
    queue.add("a")
    queue.add("b")
    first, second = h.run(queue.get()), h.run(queue.get())
    drain = h.start(queue.shut_down_with_drain())
    queue.done(first)
    h.settle()
    assert not drain.done()
    queue.done(second)
    h.settle()
    assert drain.done()


def test_shut_down_ends_a_pending_drain(h: Harness) -> None:
    queue = h.queue()
    queue.add("a")
    h.run(queue.get())
    drain = h.start(queue.shut_down_with_drain())
    queue.shut_down()
    h.settle()
    assert drain.done()


def test_a_key_re_added_before_shutdown_is_still_processed_after_done(h: Harness) -> None:
    queue = h.queue()
    queue.add("a")
    h.run(queue.get())
    queue.add("a")
    drain = h.start(queue.shut_down_with_drain())
    queue.done("a")
    h.settle()
    assert drain.done()
    assert take(h, queue) == "a"
    with pytest.raises(ShutDown):
        h.run(queue.get())


def test_wait_idle_returns_once_no_key_is_ready_or_in_hand(h: Harness) -> None:
    queue = h.queue()
    assert h.run(queue.wait_idle()) is None  # idle already
    queue.add("a")
    queue.add("b")
    idle = h.start(queue.wait_idle())
    first = h.run(queue.get())
    queue.done(first)  # "b" is still ready
    h.settle()
    assert queue.busy
    assert not idle.done()
    second = h.run(queue.get())
    queue.add(second)  # re-added while in hand: one more run to go
    queue.done(second)
    h.settle()
    assert not idle.done()
    queue.done(h.run(queue.get()))
    h.settle()
    assert idle.done()
    assert not queue.busy


def test_keys_delayed_for_later_are_not_work_in_hand(h: Harness) -> None:
    queue = h.queue()
    queue.add_after("a", 5.0)
    assert not queue.busy
    h.advance(5.0)
    assert queue.busy  # due: ready to be handed out


# --- the invariants, as a state machine against a model --------------------------------------------------------

KEYS = st.sampled_from("abcd")
BASE, CAP = 1.0, 8.0  # the machine's backoff: 1, 2, 4, 8, 8, ... seconds


class QueueMachine(RuleBasedStateMachine):
    """Random adds, delays, backoffs, workers, done and shutdown, checked against a plain model of
    client-go's semantics after every step."""

    def __init__(self) -> None:
        super().__init__()
        self.h = Harness()
        self.queue = self.h.queue(rate_limiter=ItemExponentialFailureRateLimiter(BASE, CAP))
        # The model.
        self.ready: list[str] = []  # in hand-out order
        self.dirty: set[str] = set()
        self.held: set[str] = set()  # handed out, not yet done
        self.delayed: dict[str, tuple[float, int]] = {}  # key -> (ready time, push order)
        self.pushes = 0
        self.failures: dict[str, int] = {}
        self.shut = False
        self.workers: list[asyncio.Task[str]] = []  # waiting get() calls
        self.drain: asyncio.Task[None] | None = None
        self.drain_released = False
        self.idle_waiter: asyncio.Task[None] | None = None
        self.idle_seen = False  # the model was idle at a step since idle_waiter started

    def teardown(self) -> None:
        self.h.close()

    # --- model helpers ---

    def _add(self, key: str) -> None:
        if self.shut or key in self.dirty:
            return
        self.dirty.add(key)
        if key not in self.held:
            self.ready.append(key)

    def _add_after(self, key: str, delay: float) -> None:
        if self.shut:
            return
        if delay <= 0:
            self._add(key)
            return
        ready_at = self.h.clock() + delay
        if key in self.delayed and self.delayed[key][0] <= ready_at:
            return
        self.delayed[key] = (ready_at, self.pushes)
        self.pushes += 1

    def _step(self) -> None:
        """Let the loop run, then account for what the waiting workers (and a drain) did."""
        self.h.settle()
        now = self.h.clock()
        for key in sorted((k for k, (at, _) in self.delayed.items() if at <= now), key=self.delayed.__getitem__):
            del self.delayed[key]
            self._add(key)
        finished = [worker for worker in self.workers if worker.done()]
        self.workers = [worker for worker in self.workers if not worker.done()]
        got = [worker.result() for worker in finished if worker.exception() is None]
        assert len(got) == min(len(finished), len(self.ready))
        assert sorted(got) == sorted(self.ready[: len(got)])
        for key in got:
            assert key not in self.held  # never two workers on one key
            self._hand_out(key)
        stopped = [worker for worker in finished if worker.exception() is not None]
        for worker in stopped:
            assert isinstance(worker.exception(), ShutDown)
        assert not stopped or (self.shut and not self.ready)
        assert not self.workers or not self.ready  # nobody waits while a key is ready
        if self.shut and not self.ready:
            assert not self.workers
        if self.drain is not None:
            self.drain_released |= not self.held
            assert self.drain.done() == self.drain_released
        if self.idle_waiter is not None:
            self.idle_seen |= not (self.dirty or self.held)
            assert self.idle_waiter.done() == self.idle_seen

    def _hand_out(self, key: str) -> None:
        self.ready.remove(key)
        self.dirty.discard(key)
        self.held.add(key)

    # --- rules ---

    @initialize()
    def start(self) -> None:
        self._step()

    @rule(key=KEYS)
    def add(self, key: str) -> None:
        self.queue.add(key)
        self._add(key)
        self._step()

    @rule(key=KEYS, delay=st.sampled_from([-1.0, 0.0, 0.5, 1.0, 2.0, 5.0]))
    def add_after(self, key: str, delay: float) -> None:
        self.queue.add_after(key, delay)
        self._add_after(key, delay)
        self._step()

    @rule(key=KEYS)
    def add_rate_limited(self, key: str) -> None:
        self.queue.add_rate_limited(key)
        failures = self.failures.get(key, 0)
        self.failures[key] = failures + 1
        self._add_after(key, min(BASE * 2**failures, CAP))
        self._step()

    @rule(key=KEYS)
    def forget(self, key: str) -> None:
        self.queue.forget(key)
        self.failures.pop(key, None)
        self._step()

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 3.0, 11.0]))
    def advance(self, seconds: float) -> None:
        self.h.advance(seconds)
        self._step()

    @precondition(lambda self: len(self.workers) < 3)
    @rule()
    def start_worker(self) -> None:
        self.workers.append(self.h.loop.create_task(self.queue.get()))
        self._step()

    @precondition(lambda self: bool(self.ready))
    @rule()
    def get(self) -> None:
        key = self.h.run(self.queue.get())
        assert key == self.ready[0]  # first in, first out
        self._hand_out(key)
        self._step()

    @precondition(lambda self: bool(self.held))
    @rule(data=st.data())
    def done(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.held)))
        self.queue.done(key)
        self.held.remove(key)
        if key in self.dirty:  # re-added while processing: exactly one more run
            self.ready.append(key)
        self._step()

    @rule(key=KEYS)
    def done_unknown(self, key: str) -> None:
        if key not in self.held:
            self.queue.done(key)
        self._step()

    @rule()
    def shut_down(self) -> None:
        self.queue.shut_down()
        self.shut, self.drain_released = True, True  # also ends a pending drain
        self.delayed.clear()
        self._step()

    @precondition(lambda self: self.drain is None)
    @rule()
    def shut_down_with_drain(self) -> None:
        self.drain = self.h.loop.create_task(self.queue.shut_down_with_drain())
        self.shut, self.drain_released = True, False
        self.delayed.clear()
        self._step()

    @precondition(lambda self: self.idle_waiter is None or self.idle_waiter.done())
    @rule()
    def wait_idle(self) -> None:
        self.idle_waiter = self.h.loop.create_task(self.queue.wait_idle())
        self.idle_seen = False
        self._step()

    @invariant()
    def busy_is_a_key_ready_or_in_hand(self) -> None:
        assert self.queue.busy == bool(self.dirty or self.held)

    @invariant()
    def lengths_and_requeues_agree(self) -> None:
        assert len(self.queue) == len(self.ready)
        assert len(set(self.ready)) == len(self.ready)  # (the model itself never duplicates)
        for key in "abcd":
            assert self.queue.num_requeues(key) == self.failures.get(key, 0)


QueueMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestQueueMachine = QueueMachine.TestCase
