"""The /metrics payload: controller-runtime's metric names, labels and buckets, scraped as text."""

from __future__ import annotations

import asyncio
import gc
import itertools

from prometheus_client.parser import text_string_to_metric_families

from opsync import metrics
from opsync.controller import Controller
from opsync.queue import WorkQueue
from opsync.reconcile import Request, Result, TerminalError
from opsync.testing import FakeClock
from tests.support.waiting import eventually

_names = itertools.count()
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def scrape() -> Samples:
    """Every sample of ``render_latest()``, keyed by (name, labels)."""
    body, _ = metrics.render_latest()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(samples: Samples, metric: str, /, **labels: str) -> float | None:
    return samples.get((metric, frozenset(labels.items())))


def test_render_latest_is_the_prometheus_text_format_with_process_metrics() -> None:
    body, content_type = metrics.render_latest()
    assert content_type.startswith("text/plain")
    names = {name for name, _ in scrape()}
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total", "python_info"} <= names
    assert not any(name.endswith("_created") for name in names)  # controller-runtime has no such series
    assert b"# TYPE controller_runtime_reconcile_time_seconds histogram" in body


def test_a_registered_controller_starts_every_series_at_zero() -> None:
    name = unique("ctrl")
    metrics.register_controller(name, 4)
    samples = scrape()
    for result in ("success", "error", "requeue", "requeue_after"):
        assert value(samples, "controller_runtime_reconcile_total", controller=name, result=result) == 0
    for counter in (
        "controller_runtime_reconcile_errors_total",
        "controller_runtime_terminal_reconcile_errors_total",
        "controller_runtime_reconcile_panics_total",
        "controller_runtime_reconcile_timeouts_total",
    ):
        assert value(samples, counter, controller=name) == 0
    assert value(samples, "controller_runtime_max_concurrent_reconciles", controller=name) == 4
    assert value(samples, "controller_runtime_active_workers", controller=name) == 0


def test_reconcile_time_has_controller_runtimes_buckets() -> None:
    name = unique("ctrl")
    metrics.RECONCILE_TIME.labels(controller=name).observe(0.3)
    bounds = {
        dict(labels)["le"]
        for sample, labels in scrape()
        if sample == "controller_runtime_reconcile_time_seconds_bucket" and ("controller", name) in labels
    }
    assert len(bounds) == 41  # 40 bounds and +Inf
    assert {"0.005", "0.3", "1.25", "60.0", "+Inf"} <= bounds
    assert value(scrape(), "controller_runtime_reconcile_time_seconds_count", controller=name) == 1


async def test_a_named_queue_reports_the_seven_workqueue_metrics() -> None:
    name, clock = unique("queue"), FakeClock(100.0)
    queue: WorkQueue[str] = WorkQueue(name, clock=clock)
    labels = {"name": name, "controller": name}
    queue.add("a")
    queue.add("b")
    queue.add("a")  # already waiting: not an add
    samples = scrape()
    assert value(samples, "workqueue_adds_total", **labels) == 2
    assert value(samples, "workqueue_depth", priority="", **labels) == 2

    clock.now += 1.5
    assert await queue.get() == "a"
    clock.now += 2.0
    assert await queue.get() == "b"
    clock.now += 1.0
    samples = scrape()
    assert value(samples, "workqueue_depth", priority="", **labels) == 0
    assert value(samples, "workqueue_queue_duration_seconds_count", **labels) == 2
    assert value(samples, "workqueue_queue_duration_seconds_sum", **labels) == 1.5 + 3.5
    assert value(samples, "workqueue_unfinished_work_seconds", **labels) == 3.0 + 1.0
    assert value(samples, "workqueue_longest_running_processor_seconds", **labels) == 3.0

    queue.done("a")
    queue.done("b")
    queue.add_after("a", 5.0)
    queue.add_rate_limited("b")
    samples = scrape()
    assert value(samples, "workqueue_work_duration_seconds_count", **labels) == 2
    assert value(samples, "workqueue_work_duration_seconds_sum", **labels) == 3.0 + 1.0
    assert value(samples, "workqueue_retries_total", **labels) == 2
    assert value(samples, "workqueue_unfinished_work_seconds", **labels) == 0
    assert value(samples, "workqueue_longest_running_processor_seconds", **labels) == 0
    bounds = {dict(key)["le"] for sample, key in samples if sample == "workqueue_queue_duration_seconds_bucket"}
    assert {"1e-08", "1000.0", "+Inf"} <= bounds


class Recorded:
    """A metrics provider that records instead of exporting."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, float]] = []
        self.queues: list[str] = []

    def controller_metrics(self, name: str, workers: int) -> Recorded.Controller:
        self.events.append(("controller", name, float(workers)))
        return Recorded.Controller(self, name)

    class Controller:
        def __init__(self, owner: Recorded, name: str) -> None:
            self.owner, self.name = owner, name

        def reconcile_started(self) -> None:
            self.owner.events.append(("started", self.name, 0.0))

        def reconcile_ended(self, result: str, seconds: float, *, terminal: bool = False, panic: bool = False) -> None:
            self.owner.events.append((f"ended {result} terminal={terminal} panic={panic}", self.name, 0.0))

        def reconcile_timed_out(self) -> None:
            self.owner.events.append(("timed out", self.name, 0.0))

    def queue_metrics(self, queue: metrics.TrackedQueue) -> Recorded.Queue:
        self.queues.append(queue.name)
        return Recorded.Queue(self, queue.name)

    class Queue:
        def __init__(self, owner: Recorded, name: str) -> None:
            self.owner, self.name = owner, name

        def added(self) -> None:
            self.owner.events.append(("added", self.name, 0.0))

        def retried(self) -> None:
            self.owner.events.append(("retried", self.name, 0.0))

        def waited(self, seconds: float) -> None:
            self.owner.events.append(("waited", self.name, seconds))

        def worked(self, seconds: float) -> None:
            self.owner.events.append(("worked", self.name, seconds))


async def test_a_queue_reports_to_the_provider_it_is_given_and_nowhere_else() -> None:
    name, clock, provider = unique("queue"), FakeClock(100.0), Recorded()
    queue: WorkQueue[str] = WorkQueue(name, clock=clock, metrics_provider=provider)
    queue.add("a")
    clock.advance(1.0)
    assert await queue.get() == "a"
    clock.advance(2.0)
    queue.done("a")
    queue.add_rate_limited("a")
    assert provider.queues == [name]
    assert provider.events == [
        ("added", name, 0.0),
        ("waited", name, 1.0),
        ("worked", name, 2.0),
        ("retried", name, 0.0),
    ]
    samples = scrape()
    assert value(samples, "workqueue_adds_total", name=name, controller=name) is None  # no series at all
    assert not any(dict(key).get("name") == name for sample, key in samples if sample == "workqueue_depth")
    silent: WorkQueue[str] = WorkQueue(unique("silent"), metrics_provider=None)
    silent.add("a")
    assert value(scrape(), "workqueue_adds_total", name=silent.name, controller=silent.name) is None


def test_a_key_due_after_a_delay_counts_in_depth_without_a_worker() -> None:
    name, clock = unique("queue"), FakeClock(100.0)
    queue: WorkQueue[str] = WorkQueue(name, clock=clock)
    queue.add_after("a", 5.0)
    assert value(scrape(), "workqueue_depth", name=name, controller=name, priority="") == 0
    clock.now += 5.0
    assert value(scrape(), "workqueue_depth", name=name, controller=name, priority="") == 1


def test_queues_sharing_a_name_report_one_summed_series() -> None:
    name = unique("queue")
    first: WorkQueue[str] = WorkQueue(name)
    second: WorkQueue[str] = WorkQueue(name)
    first.add("a")
    second.add("a")
    samples = scrape()
    depth = [v for (sample, labels), v in samples.items() if sample == "workqueue_depth" and ("name", name) in labels]
    assert depth == [2]


def test_unnamed_queues_report_nothing_and_a_dropped_queue_stops_reporting() -> None:
    unnamed: WorkQueue[str] = WorkQueue()
    unnamed.add_after("a", 0)
    assert value(scrape(), "workqueue_adds_total", name="", controller="") is None

    name = unique("queue")
    queue: WorkQueue[str] = WorkQueue(name)
    queue.add("a")
    assert value(scrape(), "workqueue_depth", name=name, controller=name, priority="") == 1
    del queue
    gc.collect()
    assert value(scrape(), "workqueue_depth", name=name, controller=name, priority="") is None


def test_rest_client_and_leader_election_series() -> None:
    host = unique("host")
    metrics.REST_CLIENT_REQUESTS.labels(code="200", method="GET", host=host).inc()
    metrics.LEADER_ELECTION_MASTER_STATUS.labels(name=host).set(1)
    samples = scrape()
    assert value(samples, "rest_client_requests_total", code="200", method="GET", host=host) == 1
    assert value(samples, "leader_election_master_status", name=host) == 1


async def test_a_controller_reports_to_the_provider_it_is_given() -> None:
    provider, name = Recorded(), unique("ctrl")
    outcomes: list[Exception | Result | None] = [KeyError("bug"), TerminalError("bad spec"), Result(requeue=True)]

    class Reconciler:
        async def reconcile(self, request: Request) -> Result | None:
            outcome = outcomes.pop(0) if outcomes else None
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

    controller = Controller(name, Reconciler(), metrics_provider=provider)
    stopping = asyncio.Event()
    task = asyncio.create_task(controller.run(stopping))
    controller.enqueue(Request("ns", "a"))
    controller.enqueue(Request("ns", "b"))
    await eventually(lambda: sum(event.startswith("ended") for event, _, _ in provider.events) == 4)
    stopping.set()
    await task
    ended = [event for event, who, _ in provider.events if event.startswith("ended") and who == name]
    assert ended == [
        "ended error terminal=False panic=True",
        "ended error terminal=True panic=False",
        "ended requeue terminal=False panic=False",
        "ended success terminal=False panic=False",
    ]
    assert provider.events[0] == ("controller", name, 1.0) and provider.queues == [name]
    assert value(scrape(), "controller_runtime_reconcile_total", controller=name, result="success") is None
