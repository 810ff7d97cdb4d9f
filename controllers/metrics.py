"""The operator's own Prometheus metrics, next to the framework's on the same registry.

Labels never carry an item, vault or Secret name, nor a value: only bounded sets (endpoint templates, HTTP
codes, reasons, kinds). Namespaces would be fine but are not needed by any of these.
"""

from __future__ import annotations

import re

from prometheus_client import Counter, Gauge, Histogram

from onepassword_access.client import Exchange
from opsync.metrics import REGISTRY

CONNECT_REQUESTS = Counter(
    "opsync_connect_requests_total",
    "Requests sent to 1Password Connect, by endpoint template and HTTP status code ('<error>': no answer)",
    ["endpoint", "code"],
    registry=REGISTRY,
)
ITEMS = Gauge(
    "opsync_items",
    "OnePasswordItems by the status and reason of their Ready condition",
    ["ready", "reason"],
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
LAST_SUCCESSFUL_POLL = Gauge(
    "opsync_last_successful_poll_timestamp_seconds",
    "Unix time of the end of the last poll that reached every vault",
    registry=REGISTRY,
)
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
