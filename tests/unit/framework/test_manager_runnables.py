"""The manager's lifecycle with plain runnables and no informers (no API server is contacted).

Leader election and controllers against a real control plane: tests/integration/framework/test_manager.py.
"""

from __future__ import annotations

import asyncio
from typing import cast

import aiohttp
import pytest

from opsync.client import Client
from opsync.manager import Manager
from tests.support.waiting import eventually

UNUSED_CLIENT = cast(Client, object())  # nothing here talks to the API server


class Recorder:
    """A runnable that logs its lifecycle; ``hold`` keeps it busy after it was told to stop."""

    def __init__(self, name: str, log: list[str], hold: asyncio.Event | None = None) -> None:
        self.name = name
        self.log = log
        self.hold = hold

    async def run(self, stopping: asyncio.Event) -> None:
        self.log.append(f"start {self.name}")
        try:
            await stopping.wait()
            self.log.append(f"stopping {self.name}")
            if self.hold is not None:
                await self.hold.wait()
            self.log.append(f"stopped {self.name}")
        except asyncio.CancelledError:
            self.log.append(f"cancelled {self.name}")
            raise


def manager(**options: object) -> Manager:
    defaults: dict[str, object] = {"health_probe_bind_address": "0", "metrics_bind_address": "0"}
    return Manager(UNUSED_CLIENT, **{**defaults, **options})  # type: ignore[arg-type]


async def get(port: int | None, path: str) -> tuple[int, str]:
    assert port is not None
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


async def test_runs_runnables_serves_probes_and_stops_servers_last() -> None:
    log: list[str] = []
    m = manager(health_probe_bind_address="127.0.0.1:0", metrics_bind_address="127.0.0.1:0")
    m.add(Recorder("controller", log))
    m.add(Recorder("side-car", log), leader_only=False)
    m.add_readyz_check("extra", lambda: None)
    stopping = asyncio.Event()
    task = asyncio.create_task(m.run(stopping))
    await eventually(lambda: len(log) == 2 and m.metrics_port is not None)
    assert m.is_leader  # no leader election: leading from the start
    assert await get(m.health_probe_port, "/readyz?verbose") == (
        200,
        "[+]cache-sync ok\n[+]extra ok\nreadyz check passed\n",
    )
    assert await get(m.health_probe_port, "/healthz") == (200, "ok")
    status, body = await get(m.metrics_port, "/metrics")
    assert status == 200 and "process_cpu_seconds_total" in body
    health_port = m.health_probe_port
    stopping.set()
    async with asyncio.timeout(10):
        await task
    for name in ("controller", "side-car"):
        assert [line for line in log if line.endswith(name)] == [f"start {name}", f"stopping {name}", f"stopped {name}"]
    assert m.health_probe_port is None
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://127.0.0.1:{health_port}/healthz")


async def test_work_still_running_at_the_graceful_timeout_is_cancelled() -> None:
    log: list[str] = []
    m = manager(graceful_shutdown_timeout=0.05)
    m.add(Recorder("stuck", log, hold=asyncio.Event()))
    stopping = asyncio.Event()
    task = asyncio.create_task(m.run(stopping))
    await eventually(lambda: log == ["start stuck"])
    stopping.set()
    async with asyncio.timeout(10):
        await task
    assert log == ["start stuck", "stopping stuck", "cancelled stuck"]


async def test_a_failing_runnable_stops_the_others_gracefully_and_fails_run() -> None:
    class Broken:
        name = "broken"

        async def run(self, stopping: asyncio.Event) -> None:
            raise RuntimeError("cannot start")

    log: list[str] = []
    m = manager()
    m.add(Recorder("healthy", log))
    m.add(Broken())
    with pytest.raises(RuntimeError, match="cannot start"):
        async with asyncio.timeout(10):
            await m.run(asyncio.Event())
    assert log[-1] == "stopped healthy"


async def test_cancelling_run_cancels_everything() -> None:
    log: list[str] = []
    m = manager(health_probe_bind_address="127.0.0.1:0")
    m.add(Recorder("work", log))
    task = asyncio.create_task(m.run(asyncio.Event()))
    await eventually(lambda: log == ["start work"] and m.health_probe_port is not None)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log == ["start work", "cancelled work"]
    assert m.health_probe_port is None


def test_names_are_unique_and_runnables_are_added_before_running() -> None:
    m = manager()
    m.add(Recorder("a", []))
    with pytest.raises(ValueError):
        m.add(Recorder("a", []), leader_only=False)
    with pytest.raises(ValueError):
        m.add(Recorder("cache", []))  # the manager's own task


async def test_a_manager_runs_once_and_takes_no_runnables_after_starting() -> None:
    m = manager()
    stopping = asyncio.Event()
    stopping.set()
    await m.run(stopping)
    with pytest.raises(RuntimeError):
        m.add(Recorder("late", []))
    with pytest.raises(RuntimeError):
        await m.run(stopping)


async def test_event_recorders_are_shared_per_component() -> None:
    m = manager()
    assert m.event_recorder("opsync") is m.event_recorder("opsync")
    assert m.event_recorder("opsync") is not m.event_recorder("other")


class Working:
    """A runnable with work in hand (``ReportsWork``) until ``finish()``; ``run`` is never called here."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._finished = asyncio.Event()

    async def run(self, stopping: asyncio.Event) -> None:
        await stopping.wait()

    @property
    def busy(self) -> bool:
        return not self._finished.is_set()

    async def wait_idle(self) -> None:
        await self._finished.wait()

    def finish(self) -> None:
        self._finished.set()


async def test_wait_idle_returns_once_no_runnable_has_work_in_hand() -> None:
    m = manager()
    first, second = Working("first"), Working("second")
    m.add(first, leader_only=False)
    m.add(second, leader_only=False)
    m.add(Recorder("plain", []))  # says nothing about its work: never waited for
    idle = asyncio.create_task(m.wait_idle())
    first.finish()
    await asyncio.sleep(0)
    assert not idle.done()
    second.finish()
    async with asyncio.timeout(5):
        await idle


async def test_wait_idle_ignores_leader_only_work_while_not_leading() -> None:
    m = manager()
    m.add(Working("controller"))  # leader-only: on a standby its queue fills, and nothing works it off
    async with asyncio.timeout(5):
        await m.wait_idle()
