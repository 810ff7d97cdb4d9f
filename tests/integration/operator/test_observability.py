"""The monitoring kit: the per-item condition metric, the poll timestamp on leader and standby, and the chart's
alerts (PrometheusRule) and Grafana dashboard, whose every expression must parse (promql-parser, the Rust
PromQL parser's Python binding) and name only metrics, and labels, that a running opsync serves.

Two ``opsync run`` processes elect a leader against the real control plane and the Connect emulator.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync.client import Client
from opsync.envtest import ControlPlane
from tests.integration.chart.test_chart import CHART, helm
from tests.support.harness import emulator_data, eventually
from tests.support.objects import opi, wait_for_ready
from tests.support.processes import OpsyncProcess

pytestmark = pytest.mark.integration

VAULT, TITLE, FIELD, VALUE = "team-vault", "prod-database", "password", "s3cret-value"
SECRET_WORDS = {VAULT, TITLE, FIELD, VALUE}  # none may be a label value
# Labels Prometheus adds to every scraped series (the ServiceMonitor's target labels).
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}
# Grafana's variables, as a query sees them once Grafana has substituted them.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$job": "opsync", "${datasource}": "prom"}

Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    items = [{"title": TITLE, "fields": [{"label": FIELD, "value": VALUE}]}]
    async with Emulator(emulator_data({VAULT: items})) as emu:
        yield emu


@dataclass
class Pair:
    leader: OpsyncProcess
    standby: OpsyncProcess


@pytest.fixture
async def pair(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, tmp_path: Path
) -> AsyncIterator[Pair]:
    """A leader that synced one good and one failing item, and a standby, both serving /metrics."""
    await kube.create(ONEPASSWORDITEMS, opi("app-db", f"vaults/{VAULT}/items/{TITLE}"), namespace)
    await kube.create(ONEPASSWORDITEMS, opi("app-missing", f"vaults/{VAULT}/items/nothing"), namespace)
    election = ("--leader-elect", f"--leader-election-namespace={namespace}")
    kubeconfig = control_plane.kubeconfig_path
    leader = OpsyncProcess.run(kubeconfig, emulator, namespace, tmp_path / "leader.log", *election)
    standby = OpsyncProcess.run(kubeconfig, emulator, namespace, tmp_path / "standby.log", *election)
    await leader.start()
    try:
        await wait_for_ready(kube, namespace, "app-db", "True", "Synced")
        await wait_for_ready(kube, namespace, "app-missing", "False", "ItemNotFound")
        await standby.start()
        try:

            async def serving() -> bool:
                leading = await leader.metrics()
                return bool(await standby.metrics()) and leading.get(timestamp_key()) is not None

            await eventually(serving, timeout=60, message="the leader polled and the standby serves /metrics")
            yield Pair(leader, standby)
        finally:
            await standby.stop()
    finally:
        await leader.stop()


def timestamp_key() -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("opsync_last_successful_poll_timestamp_seconds", ())


def series(metrics: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for (sample, labels), value in metrics.items() if sample == name}


async def test_each_item_has_a_condition_series_and_only_the_leader_a_poll_timestamp(
    pair: Pair, kube: Client, namespace: str
) -> None:
    leader, standby = await pair.leader.metrics(), await pair.standby.metrics()

    def condition(name: str, status: str) -> tuple[tuple[str, str], ...]:
        return (("condition", "Ready"), ("name", name), ("namespace", namespace), ("status", status))

    assert series(leader, "opsync_item_condition") == {
        condition("app-db", "True"): 1.0,
        condition("app-db", "False"): 0.0,
        condition("app-missing", "True"): 0.0,
        condition("app-missing", "False"): 1.0,
    }
    assert leader[("leader_election_master_status", (("name", "c26807fd.onepassword.com"),))] == 1.0
    assert leader[timestamp_key()] > 0
    # A healthy standby: not leading, no poll time (a staleness alert must not fire on it), no item states.
    assert standby[("leader_election_master_status", (("name", "c26807fd.onepassword.com"),))] == 0.0
    assert timestamp_key() not in standby
    assert series(standby, "opsync_item_condition") == {}
    # What identifies the item in 1Password never becomes a label.
    for metrics in (leader, standby):
        assert {value for _, labels in metrics for _, value in labels} & SECRET_WORDS == set()

    await kube.delete(ONEPASSWORDITEMS, "app-missing", namespace)

    async def forgotten() -> bool:
        names = {dict(labels)["name"] for labels in series(await pair.leader.metrics(), "opsync_item_condition")}
        return names == {"app-db"}

    await eventually(forgotten, message="a deleted item's condition series are removed")


# the chart's alerts and dashboard


async def chart_expressions() -> dict[str, str]:
    """Where -> PromQL expression, for every alert of the PrometheusRule and every query of the dashboard."""
    values = {"prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}}
    rendered = await helm("template", "opsync", str(CHART), "-f", "-", stdin=yaml.safe_dump(values))
    objects = [o for o in yaml.safe_load_all(rendered.stdout) if o]
    rule = next(o for o in objects if o["kind"] == "PrometheusRule")
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    found = {f"alert {r['alert']}": str(r["expr"]) for r in rules if "alert" in r}
    configmap = next(o for o in objects if o["kind"] == "ConfigMap" and "opsync.json" in o.get("data", {}))
    dashboard = json.loads(configmap["data"]["opsync.json"])
    assert dashboard == json.loads((CHART / "dashboards" / "opsync.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            found[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":  # label_values(METRIC, LABEL): the metric is PromQL
            metric, label = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variable["query"]["query"]).groups()  # type: ignore[union-attr]
            found[f"variable {variable['name']}"] = f"count by ({label}) ({metric})"
    return {where: substitute(expr) for where, expr in found.items()}


def substitute(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def selectors(expr: Any) -> Iterator[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        return True

    promql_parser.walk(expr, visit)
    yield from found


def matcher_labels(selector: promql_parser.VectorSelector) -> set[str]:
    return {m.name for m in selector.matchers.matchers if m.name != "__name__"}


async def test_every_alert_and_dashboard_query_parses_and_names_served_metrics_and_labels(pair: Pair) -> None:
    served: dict[str, set[str]] = {}  # sample name -> its label names
    for metrics in (await pair.leader.metrics(), await pair.standby.metrics()):
        for name, labels in metrics:
            served.setdefault(name, set()).update(label for label, _ in labels)
    expressions = await chart_expressions()
    assert len([w for w in expressions if w.startswith("alert ")]) == 6
    problems = []
    for where, text in expressions.items():
        try:
            parsed = promql_parser.parse(text)
        except ValueError as err:
            problems.append(f"{where}: does not parse: {err}: {text}")
            continue
        names = list(selectors(parsed))
        if not names:
            problems.append(f"{where}: names no metric: {text}")
        for selector in names:
            if selector.name not in served:
                problems.append(f"{where}: {selector.name} is not in /metrics")
            elif unknown := matcher_labels(selector) - served[selector.name] - TARGET_LABELS:
                problems.append(f"{where}: {selector.name} has no label {sorted(unknown)}")
    assert problems == []


async def test_every_alert_selects_the_job_the_service_monitor_scrapes() -> None:
    """The ServiceMonitor scrapes the metrics Service, and prometheus-operator names the job after it."""
    values = {"prometheusRule": {"enabled": True}, "metrics": {"serviceMonitor": {"enabled": True}}}
    rendered = await helm("template", "opsync", str(CHART), "-f", "-", stdin=yaml.safe_dump(values))
    objects = [o for o in yaml.safe_load_all(rendered.stdout) if o]
    monitor = next(o for o in objects if o["kind"] == "ServiceMonitor")
    assert "jobLabel" not in monitor["spec"]
    (service,) = [
        o
        for o in objects
        if o["kind"] == "Service"
        and monitor["spec"]["selector"]["matchLabels"].items() <= o["metadata"]["labels"].items()
    ]
    rule = next(o for o in objects if o["kind"] == "PrometheusRule")
    for r in (r for group in rule["spec"]["groups"] for r in group["rules"]):
        jobs = {
            m.value
            for selector in selectors(promql_parser.parse(str(r["expr"])))
            for m in selector.matchers.matchers
            if m.name == "job"
        }
        assert jobs == {service["metadata"]["name"]}, r["alert"]


def test_the_check_catches_a_broken_expression_and_an_unknown_metric() -> None:
    with pytest.raises(ValueError, match="parenthesis"):
        promql_parser.parse("sum(rate(opsync_polls_total[5m])")
    parsed = promql_parser.parse(substitute('rate(opsync_no_such_metric{job=~"$job", code="500"}[$__rate_interval])'))
    assert [(s.name, matcher_labels(s)) for s in selectors(parsed)] == [("opsync_no_such_metric", {"job", "code"})]
