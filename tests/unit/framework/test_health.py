"""The probe endpoints answer like controller-runtime's healthz package."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from opsync.health import Checks, HttpServer, add_metrics_route, parse_bind_address


class Toggle:
    """A check whose outcome the test controls."""

    def __init__(self, healthy: bool = True) -> None:
        self.healthy = healthy

    def __call__(self) -> None:
        if not self.healthy:
            raise RuntimeError("the secret reason")


async def async_pass() -> None:
    await asyncio.sleep(0)


@pytest.fixture
async def probes() -> AsyncIterator[tuple[TestClient[web.Request, web.Application], Toggle]]:
    readyz = Checks("/readyz")
    toggle = Toggle()
    readyz.add("cache", toggle)
    readyz.add("connect", async_pass)
    app = web.Application()
    readyz.add_routes(app)
    Checks("/healthz").add_routes(app)  # nothing registered: behaves like a ping check
    async with TestClient(TestServer(app)) as client:
        yield client, toggle


async def get(client: TestClient[web.Request, web.Application], path: str) -> tuple[int, str]:
    response = await client.get(path)
    return response.status, await response.text()


async def test_all_passing_is_ok(probes: tuple[TestClient[web.Request, web.Application], Toggle]) -> None:
    client, _ = probes
    assert await get(client, "/readyz") == (200, "ok")


async def test_failure_lists_checks_and_withholds_the_reason(
    probes: tuple[TestClient[web.Request, web.Application], Toggle],
) -> None:
    client, toggle = probes
    toggle.healthy = False
    status, body = await get(client, "/readyz")
    assert status == 500
    assert body.splitlines() == [
        "[-]cache failed: reason withheld",
        "[+]connect ok",
        "readyz check failed",
    ]
    assert "secret reason" not in body


async def test_verbose_lists_checks_on_success(probes: tuple[TestClient[web.Request, web.Application], Toggle]) -> None:
    client, _ = probes
    status, body = await get(client, "/readyz?verbose")
    assert status == 200
    assert body.splitlines() == ["[+]cache ok", "[+]connect ok", "readyz check passed"]


async def test_exclude_skips_a_failing_check(probes: tuple[TestClient[web.Request, web.Application], Toggle]) -> None:
    client, toggle = probes
    toggle.healthy = False
    assert await get(client, "/readyz?exclude=cache") == (200, "ok")
    status, body = await get(client, "/readyz?exclude=cache&exclude=nope&verbose")
    assert status == 200
    assert body.splitlines() == [
        "[+]cache excluded: ok",
        "[+]connect ok",
        "warn: some health checks cannot be excluded: no matches for 'nope'",
        "readyz check passed",
    ]


async def test_single_check_endpoint(probes: tuple[TestClient[web.Request, web.Application], Toggle]) -> None:
    client, toggle = probes
    assert await get(client, "/readyz/cache") == (200, "ok")
    toggle.healthy = False
    status, body = await get(client, "/readyz/cache")
    assert status == 500
    assert body.startswith("internal server error:")
    assert await get(client, "/readyz/connect") == (200, "ok")
    assert (await client.get("/readyz/unknown")).status == 404


async def test_no_checks_behaves_like_ping(probes: tuple[TestClient[web.Request, web.Application], Toggle]) -> None:
    client, _ = probes
    assert await get(client, "/healthz") == (200, "ok")
    assert await get(client, "/healthz/ping") == (200, "ok")
    assert await get(client, "/healthz?verbose") == (200, "[+]ping ok\nhealthz check passed\n")


async def test_a_hanging_check_fails_instead_of_hanging() -> None:
    checks = Checks("/readyz", timeout=0.05)
    checks.add("stuck", asyncio.Event().wait)
    app = web.Application()
    checks.add_routes(app)
    async with TestClient(TestServer(app)) as client:
        status, body = await get(client, "/readyz")
    assert status == 500
    assert "[-]stuck failed" in body


def test_duplicate_and_invalid_names_are_refused() -> None:
    checks = Checks("/healthz")
    checks.add("ping", async_pass)
    with pytest.raises(ValueError):
        checks.add("ping", async_pass)
    with pytest.raises(ValueError):
        checks.add("a/b", async_pass)


async def test_metrics_route_serves_the_registry() -> None:
    registry = CollectorRegistry()
    Counter("opsync_test_things", "things", registry=registry).inc(3)
    app = web.Application()
    add_metrics_route(app, registry)
    async with TestClient(TestServer(app)) as client:
        status, body = await get(client, "/metrics")
    assert status == 200
    assert "opsync_test_things_total 3.0" in body


class ThreadNoting(Collector):
    """A custom collector that notes the thread it is collected on and the thread its value is written on."""

    def __init__(self) -> None:
        self.collected_on: set[int] = set()
        self.written_on: set[int] = set()

    def collect(self) -> Iterator[Metric]:
        self.collected_on.add(threading.get_ident())
        family = GaugeMetricFamily("opsync_test_noted", "a value that notes where it is written")
        family.add_metric([], Noted(self.written_on))  # type: ignore[arg-type]  # formatted through __float__
        yield family


@dataclass
class Noted:
    threads: set[int]

    def __float__(self) -> float:
        self.threads.add(threading.get_ident())
        return 1.0


@pytest.mark.parametrize("accept", ["", "application/openmetrics-text; version=1.0.0"])
async def test_metrics_are_collected_on_the_event_loop_and_written_off_it(accept: str) -> None:
    """Collectors read state only the event loop changes, so they run on it; writing the text (most of a
    scrape with a series per item) runs in a worker thread, so a scrape does not stall the loop."""
    registry = CollectorRegistry()
    noting = ThreadNoting()
    registry.register(noting)
    app = web.Application()
    add_metrics_route(app, registry)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/metrics", headers={"Accept": accept} if accept else {})
        body = await response.text()
    assert response.status == 200
    assert "opsync_test_noted 1.0" in body
    assert noting.collected_on == {threading.get_ident()}
    assert noting.written_on and threading.get_ident() not in noting.written_on


@pytest.mark.parametrize(
    ("address", "parsed"),
    [
        (":8081", (None, 8081)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:8080", ("::1", 8080)),
        ("0", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_bind_address(address: str | None, parsed: tuple[str | None, int] | None) -> None:
    assert parse_bind_address(address) == parsed


def test_parse_bind_address_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_bind_address("8080")


async def test_http_server_binds_port_zero_and_stops() -> None:
    checks = Checks("/healthz")
    app = web.Application()
    checks.add_routes(app)
    server = HttpServer("health probe", "127.0.0.1:0", app)
    await server.start()
    port = server.port
    assert port
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert (response.status, await response.text()) == (200, "ok")
    finally:
        await server.stop()
    assert server.port is None
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://127.0.0.1:{port}/healthz")


async def test_disabled_server_does_not_listen() -> None:
    server = HttpServer("metrics", "0", web.Application())
    await server.start()
    assert server.port is None
    await server.stop()
