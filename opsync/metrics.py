"""Every Prometheus metric opsync exports, with controller-runtime's names, types, labels and buckets.

This module is the one place a metric name is written. Everything is registered on :data:`REGISTRY`
(not prometheus_client's global registry), together with the process, platform and GC collectors, so
``/metrics`` serves what a controller-runtime manager serves (``process_*``, with ``python_*`` standing in
for ``go_*``).

Controllers and work queues report through the ``MetricsProvider`` they are given (by default
:data:`PROMETHEUS`), as client-go's workqueue ``MetricsProvider``. A queue's counters and histograms are
ordinary metrics updated as items move, while ``workqueue_depth``, ``workqueue_unfinished_work_seconds`` and
``workqueue_longest_running_processor_seconds`` are read from the live queues at scrape time (they
change with the clock, not with events). Queues sharing a name are summed (the longest running
processor is the maximum).

The ``*_created`` series prometheus_client adds to every counter and histogram are switched off for
the process: controller-runtime has no such series and they double the size of a scrape.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "ACTIVE_WORKERS",
    "LEADER_ELECTION_MASTER_STATUS",
    "MAX_CONCURRENT_RECONCILES",
    "RECONCILE_ERRORS",
    "RECONCILE_PANICS",
    "RECONCILE_RESULTS",
    "RECONCILE_TIME",
    "RECONCILE_TIMEOUTS",
    "RECONCILE_TOTAL",
    "REGISTRY",
    "REST_CLIENT_REQUESTS",
    "TERMINAL_RECONCILE_ERRORS",
    "WORKQUEUE_ADDS",
    "WORKQUEUE_QUEUE_DURATION",
    "WORKQUEUE_RETRIES",
    "WORKQUEUE_WORK_DURATION",
    "QueueStats",
    "TrackedQueue",
    "register_controller",
    "render_latest",
    "track_queue",
]

disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry()
"""The registry ``/metrics`` serves; every opsync metric lives here."""

ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# --- controllers (controller-runtime pkg/internal/controller/metrics) -------------------------------------

RECONCILE_RESULTS = ("success", "error", "requeue", "requeue_after")
"""The values of ``controller_runtime_reconcile_total``'s ``result`` label."""

# fmt: off
_RECONCILE_BUCKETS = (  # controller-runtime's, 5 ms … 60 s
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
    1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 40, 50, 60,
)
# fmt: on

RECONCILE_TOTAL = Counter(
    "controller_runtime_reconcile_total",
    "Total number of reconciliations per controller, by result",
    ["controller", "result"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "controller_runtime_reconcile_errors_total",
    "Total number of reconciliation errors per controller",
    ["controller"],
    registry=REGISTRY,
)
TERMINAL_RECONCILE_ERRORS = Counter(
    "controller_runtime_terminal_reconcile_errors_total",
    "Total number of terminal reconciliation errors (not retried) per controller",
    ["controller"],
    registry=REGISTRY,
)
RECONCILE_PANICS = Counter(
    "controller_runtime_reconcile_panics_total",
    "Total number of reconciliations that raised unexpectedly (Go: panicked) per controller",
    ["controller"],
    registry=REGISTRY,
)
RECONCILE_TIMEOUTS = Counter(
    "controller_runtime_reconcile_timeouts_total",
    "Total number of reconciliations that hit the reconcile timeout per controller",
    ["controller"],
    registry=REGISTRY,
)
RECONCILE_TIME = Histogram(
    "controller_runtime_reconcile_time_seconds",
    "Length of time per reconciliation per controller",
    ["controller"],
    buckets=_RECONCILE_BUCKETS,
    registry=REGISTRY,
)
MAX_CONCURRENT_RECONCILES = Gauge(
    "controller_runtime_max_concurrent_reconciles",
    "Maximum number of concurrent reconciles per controller",
    ["controller"],
    registry=REGISTRY,
)
ACTIVE_WORKERS = Gauge(
    "controller_runtime_active_workers",
    "Number of currently used workers per controller",
    ["controller"],
    registry=REGISTRY,
)


def register_controller(name: str, max_concurrent: int) -> None:
    """Create a controller's series at their starting values, as controller-runtime does when a
    controller starts, so dashboards and ``rate()`` see zeros rather than missing series."""
    for result in RECONCILE_RESULTS:
        RECONCILE_TOTAL.labels(controller=name, result=result)
    for counter in (RECONCILE_ERRORS, TERMINAL_RECONCILE_ERRORS, RECONCILE_PANICS, RECONCILE_TIMEOUTS):
        counter.labels(controller=name)
    MAX_CONCURRENT_RECONCILES.labels(controller=name).set(max_concurrent)
    ACTIVE_WORKERS.labels(controller=name).set(0)


# --- work queues (client-go util/workqueue, controller-runtime pkg/internal/metrics/workqueue.go) --------

_QUEUE_LABELS = ["name", "controller"]  # controller-runtime puts the controller name in both
_QUEUE_BUCKETS = tuple(10.0**exponent for exponent in range(-8, 4))  # 1e-8 … 1e3 s, client-go's buckets

WORKQUEUE_ADDS = Counter(
    "workqueue_adds_total",
    "Total number of items added to the workqueue (adds of an already waiting item excluded)",
    _QUEUE_LABELS,
    registry=REGISTRY,
)
WORKQUEUE_RETRIES = Counter(
    "workqueue_retries_total",
    "Total number of retries (delayed re-adds) handled by workqueue",
    _QUEUE_LABELS,
    registry=REGISTRY,
)
WORKQUEUE_QUEUE_DURATION = Histogram(
    "workqueue_queue_duration_seconds",
    "Seconds an item waits in the workqueue (from ready to handed out)",
    _QUEUE_LABELS,
    buckets=_QUEUE_BUCKETS,
    registry=REGISTRY,
)
WORKQUEUE_WORK_DURATION = Histogram(
    "workqueue_work_duration_seconds",
    "Seconds processing an item from the workqueue takes (handed out to done)",
    _QUEUE_LABELS,
    buckets=_QUEUE_BUCKETS,
    registry=REGISTRY,
)


@dataclass(frozen=True)
class QueueStats:
    """What a queue reports at scrape time."""

    depth: int  # items waiting to be handed out (client-go: dirty items)
    unfinished_work_seconds: float  # summed age of the items being processed
    longest_running_processor_seconds: float  # age of the oldest item being processed


class TrackedQueue(Protocol):
    """A queue whose live state :func:`track_queue` reports."""

    @property
    def name(self) -> str: ...

    def stats(self) -> QueueStats: ...


class _LiveQueues(Collector):
    """The clock-dependent work queue gauges, read from the live queues when scraped."""

    def __init__(self) -> None:
        # Weak: a queue that is gone stops reporting instead of being kept alive by its metrics.
        self.queues: weakref.WeakSet[TrackedQueue] = weakref.WeakSet()

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        by_name: dict[str, list[QueueStats]] = {}
        for queue in list(self.queues):
            by_name.setdefault(queue.name, []).append(queue.stats())
        return self._families(by_name)

    @staticmethod
    def _families(by_name: dict[str, list[QueueStats]] | None = None) -> list[Metric]:
        depth = GaugeMetricFamily("workqueue_depth", "Current depth of workqueue", labels=[*_QUEUE_LABELS, "priority"])
        unfinished = GaugeMetricFamily(
            "workqueue_unfinished_work_seconds",
            "Seconds of work in progress not yet observed by workqueue_work_duration_seconds; "
            "a value that keeps growing points at a stuck worker",
            labels=_QUEUE_LABELS,
        )
        longest = GaugeMetricFamily(
            "workqueue_longest_running_processor_seconds",
            "Seconds the longest-running item currently being processed has been running",
            labels=_QUEUE_LABELS,
        )
        for name, stats in sorted((by_name or {}).items()):
            depth.add_metric([name, name, ""], sum(s.depth for s in stats))
            unfinished.add_metric([name, name], sum(s.unfinished_work_seconds for s in stats))
            longest.add_metric([name, name], max(s.longest_running_processor_seconds for s in stats))
        return [depth, unfinished, longest]


_LIVE_QUEUES = _LiveQueues()
REGISTRY.register(_LIVE_QUEUES)


def track_queue(queue: TrackedQueue) -> None:
    """Report ``queue``'s depth and in-flight work on ``/metrics`` for as long as it exists."""
    _LIVE_QUEUES.queues.add(queue)


class QueueMetrics(Protocol):
    """What a work queue reports as items move (client-go's workqueue metrics)."""

    def added(self) -> None: ...

    def retried(self) -> None: ...

    def waited(self, seconds: float) -> None:
        """An item was handed out ``seconds`` after it became ready."""
        ...

    def worked(self, seconds: float) -> None:
        """An item was done ``seconds`` after it was handed out."""
        ...


class QueueMetricsProvider(Protocol):
    """Gives each named queue its metrics: client-go's ``workqueue.MetricsProvider``, passed to the queue
    rather than looked up globally, so a test or another registry can take the place of Prometheus."""

    def queue_metrics(self, queue: TrackedQueue) -> QueueMetrics: ...


class _PrometheusQueue:
    def __init__(self, name: str) -> None:
        self._adds = WORKQUEUE_ADDS.labels(name=name, controller=name)
        self._retries = WORKQUEUE_RETRIES.labels(name=name, controller=name)
        self._queue_duration = WORKQUEUE_QUEUE_DURATION.labels(name=name, controller=name)
        self._work_duration = WORKQUEUE_WORK_DURATION.labels(name=name, controller=name)

    def added(self) -> None:
        self._adds.inc()

    def retried(self) -> None:
        self._retries.inc()

    def waited(self, seconds: float) -> None:
        self._queue_duration.observe(seconds)

    def worked(self, seconds: float) -> None:
        self._work_duration.observe(seconds)


class ControllerMetrics(Protocol):
    """What a controller reports about its reconciles (controller-runtime's controller metrics)."""

    def reconcile_started(self) -> None: ...

    def reconcile_ended(self, result: str, seconds: float, *, terminal: bool = False, panic: bool = False) -> None:
        """``result`` is one of :data:`RECONCILE_RESULTS`; ``terminal``/``panic`` qualify an ``error``."""
        ...

    def reconcile_timed_out(self) -> None: ...


class MetricsProvider(QueueMetricsProvider, Protocol):
    """Gives controllers and their queues their metrics; a controller is handed one instead of using the
    global series itself."""

    def controller_metrics(self, name: str, workers: int) -> ControllerMetrics: ...


class _PrometheusController:
    def __init__(self, name: str, workers: int) -> None:
        register_controller(name, workers)
        self._name = name
        self._active = ACTIVE_WORKERS.labels(controller=name)
        self._time = RECONCILE_TIME.labels(controller=name)

    def reconcile_started(self) -> None:
        self._active.inc()

    def reconcile_ended(self, result: str, seconds: float, *, terminal: bool = False, panic: bool = False) -> None:
        name = self._name
        RECONCILE_TOTAL.labels(controller=name, result=result).inc()
        if result == "error":
            RECONCILE_ERRORS.labels(controller=name).inc()
        if terminal:
            TERMINAL_RECONCILE_ERRORS.labels(controller=name).inc()
        if panic:
            RECONCILE_PANICS.labels(controller=name).inc()
        self._active.dec()
        self._time.observe(seconds)

    def reconcile_timed_out(self) -> None:
        RECONCILE_TIMEOUTS.labels(controller=self._name).inc()


class PrometheusMetrics:
    """The series of this module on :data:`REGISTRY`, controller-runtime's names and labels."""

    def queue_metrics(self, queue: TrackedQueue) -> QueueMetrics:
        """The queue's counters and histograms; its live gauges are read from it at scrape time."""
        track_queue(queue)
        return _PrometheusQueue(queue.name)

    def controller_metrics(self, name: str, workers: int) -> ControllerMetrics:
        """The controller's series, created at their starting values (``register_controller``)."""
        return _PrometheusController(name, workers)


PROMETHEUS = PrometheusMetrics()
"""The provider controllers and queues use unless given another (or None: no metrics)."""


class _NoControllerMetrics:
    def reconcile_started(self) -> None:
        pass

    def reconcile_ended(self, result: str, seconds: float, *, terminal: bool = False, panic: bool = False) -> None:
        pass

    def reconcile_timed_out(self) -> None:
        pass


NO_CONTROLLER_METRICS: ControllerMetrics = _NoControllerMetrics()


# --- REST client and leader election ---------------------------------------------------------------------

REST_CLIENT_REQUESTS = Counter(
    "rest_client_requests_total",
    "Number of HTTP requests, partitioned by status code, method, and host",
    ["code", "method", "host"],
    registry=REGISTRY,
)
LEADER_ELECTION_MASTER_STATUS = Gauge(
    "leader_election_master_status",
    "1 while this process holds the leader election lease called 'name', 0 while it stands by",
    ["name"],
    registry=REGISTRY,
)


def render_latest() -> tuple[bytes, str]:
    """The current scrape of :data:`REGISTRY` in the Prometheus text format: (body, content type)."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
