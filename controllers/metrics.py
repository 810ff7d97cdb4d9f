"""The operator's own Prometheus metrics, next to the framework's on the same registry.

Labels never carry a vault name, an item title, a field, nor a value: only bounded sets (endpoint templates,
HTTP codes, reasons, kinds), and in ``opsync_item_condition`` the namespace and name of a OnePasswordItem,
which are Kubernetes object names anyone who may list the items sees, so that an alert can say *which* item
fails (as External Secrets Operator's ``externalsecret_status_condition``).
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterator, Mapping

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controllers.constants import READY_CONDITION
from onepassword_access.client import Exchange
from opsync.metrics import REGISTRY
from opsync.reconcile import Request

CONNECT_REQUESTS = Counter(
    "opsync_connect_requests_total",
    "Requests sent to 1Password Connect, by endpoint template and HTTP status code ('<error>': no answer)",
    ["endpoint", "code"],
    registry=REGISTRY,
)
SDK_CALLS = Counter(
    "opsync_sdk_calls_total",
    "Calls to the 1Password SDK (service accounts), by operation and outcome (ok, rate_limited, error)",
    ["operation", "outcome"],
    registry=REGISTRY,
)
POLL_DURATION = Histogram(
    "opsync_poll_duration_seconds",
    "How long one poll of 1Password for changed items took",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
POLLS = Counter(
    "opsync_polls_total",
    "Polls of 1Password by result: ok, failed (some vault could not be read), skipped (rate limited)",
    ["result"],
    registry=REGISTRY,
)


class _Timestamp(Collector):
    """A gauge that is absent until first set.

    The poller runs on the leader only: a standby replica (or a leader before its first complete poll) has
    no such time, and a 0 there would make every staleness alert fire on a healthy standby.
    """

    def __init__(self, name: str, documentation: str) -> None:
        self.name, self.documentation = name, documentation
        self.value: float | None = None

    def set(self, value: float) -> None:
        self.value = value

    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterator[Metric]:
        if self.value is not None:
            yield GaugeMetricFamily(self.name, self.documentation, value=self.value)


LAST_SUCCESSFUL_POLL = _Timestamp(
    "opsync_last_successful_poll_timestamp_seconds",
    "Unix time of the end of the last poll that reached every vault; absent until this replica, as leader, made one",
)
REGISTRY.register(LAST_SUCCESSFUL_POLL)


ItemState = tuple[str, str]  # the Ready condition's status ("true", "false") and reason


class _ItemStates(Collector):
    """``opsync_items`` and ``opsync_item_condition``, read at scrape time from what the item reconciler holds.

    A labelled ``Gauge`` would keep a child object per series, two per item (about 1.3 KiB an item,
    docs/benchmarks.md, "Memory"), for state the reconciler keeps anyway; the counts by state are taken in the
    same pass over the items that writes their series, so nothing is recounted on each change. ``collect`` runs
    on the event loop, as every change to that state does, so it never sees the dict in the middle of a change
    (``opsync.health.add_metrics_route`` writes the text in a thread, from the samples returned here).
    """

    def __init__(self) -> None:
        self._states: Mapping[Request, ItemState] = {}

    def track(self, states: Mapping[Request, ItemState]) -> None:
        """Report these (one item reconciler per process; the last one made wins, as tests make several)."""
        self._states = states

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        items, conditions = self._families()
        counts: collections.Counter[ItemState] = collections.Counter()
        for request, state in self._states.items():
            counts[state] += 1
            ready = state[0] == "true"
            for status, value in (("True", ready), ("False", not ready)):
                conditions.add_metric([request.namespace, request.name, READY_CONDITION, status], float(value))
        for (ready_label, reason), count in counts.items():
            items.add_metric([ready_label, reason], count)
        yield items
        yield conditions

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "opsync_items",
                "OnePasswordItems by the status and reason of their Ready condition",
                labels=["ready", "reason"],
            ),
            GaugeMetricFamily(
                "opsync_item_condition",
                "Conditions of each OnePasswordItem: 1 on the series of the status it has, 0 on the other",
                labels=["namespace", "name", "condition", "status"],
            ),
        )


ITEM_STATES = _ItemStates()
REGISTRY.register(ITEM_STATES)
SECRET_WRITES = Counter(
    "opsync_secret_writes_total",
    "Writes of Secrets, by reason (create, update, takeover, repair, delete)",
    ["reason"],
    registry=REGISTRY,
)
WORKLOAD_RESTARTS = Counter(
    "opsync_workload_restarts_total",
    "Rollouts opsync started because a Secret a workload uses changed, by workload kind",
    ["kind"],
    registry=REGISTRY,
)

# Series that exist from the start, so that dashboards and rate() see zeros rather than nothing.
for _reason in ("create", "update", "takeover", "repair", "delete"):
    SECRET_WRITES.labels(reason=_reason)
for _kind in ("Deployment", "StatefulSet", "DaemonSet"):
    WORKLOAD_RESTARTS.labels(kind=_kind)
for _result in ("ok", "failed", "skipped"):
    POLLS.labels(result=_result)


_ID_SEGMENT = re.compile(r"(?<=/)(vaults|items|files)/[^/?]+")


def endpoint_template(path: str) -> str:
    """``/v1/vaults/{id}/items/{id}`` for ``/v1/vaults/abc/items/def``: a label without ids or titles."""
    return _ID_SEGMENT.sub(lambda m: f"{m.group(1)}/{{id}}", path.split("?", 1)[0])


def count_connect_request(exchange: Exchange) -> None:
    """A ``ConnectClient`` observer: count the attempt in ``opsync_connect_requests_total``."""
    code = "<error>" if exchange.status is None else str(exchange.status)
    CONNECT_REQUESTS.labels(endpoint=endpoint_template(exchange.path), code=code).inc()
