"""Run opsync in-process against the test control plane and a Connect emulator.

    async with run_operator(control_plane, emulator, backend, namespaces=[namespace], auto_restart=True) as op:
        ...  # op.requests.writes() lists the writes opsync sent to the API server

The operator is what ``opsync run`` builds (``controllers.main.build_operator``), with its own Kubernetes
client (its requests recorded through the client's observers), probes and metrics servers off, and a
one-second poll unless told otherwise. Leaving the block stops it the way SIGTERM does. Any ``Settings``
field can be overridden by keyword.

``backend`` (the ``backend`` fixture: both, one after the other) says how opsync reaches the emulator:
``CONNECT`` (its Connect API) or ``SDK`` (a service-account token, the real 1Password SDK with the emulator's
SDK core in place of the native one). Scenario tests take the fixture, so they run against both.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from controllers.config import Settings
from controllers.main import Operator, access_backend, build_operator, sign_in
from onepassword_access.backend import Backend
from onepassword_access.emulator import Emulator
from opsync import metrics
from opsync.client import ApiRequest, Client, count_request
from opsync.envtest import ControlPlane
from opsync.resources import KubeObject
from tests.support.waiting import eventually

READ_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class BackendKind:
    """One way opsync reaches 1Password, and how its traffic shows in ``Emulator.request_counts``."""

    name: str
    poll_call: str
    """The call a quiet poll makes (per vault with Connect, once with the SDK)."""
    get_item: str
    list_items: str
    poll_match: str
    """A ``Faults.match`` selecting the poller's calls only."""
    per_vault_polls: bool

    def quiet_poll_calls(self, vaults: int) -> int:
        """Calls one quiet poll costs with ``vaults`` vaults tracked."""
        return vaults if self.per_vault_polls else 1

    def __str__(self) -> str:
        return self.name


CONNECT = BackendKind(
    "connect",
    poll_call="GET /v1/vaults/{vault}",
    get_item="GET /v1/vaults/{vault}/items/{item}",
    list_items="GET /v1/vaults/{vault}/items",
    poll_match="^/v1/vaults(/[^/]+)?$",  # a vault, or all (a poll reading vaults for the first time lists them)
    per_vault_polls=True,
)
SDK = BackendKind(
    "sdk",
    poll_call="SDK VaultsList",
    get_item="SDK ItemsGet",
    list_items="SDK ItemsList",
    poll_match="^sdk:VaultsList$",
    per_vault_polls=False,
)
BACKENDS = (CONNECT, SDK)


@dataclass
class RequestLog:
    """A ``Client`` observer recording (method, path) of every request."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    statuses: list[int | None] = field(default_factory=list)
    """The HTTP status of each of ``requests`` (None: no answer)."""

    def __call__(self, request: ApiRequest) -> None:
        self.requests.append((request.method, request.path))
        self.statuses.append(request.status)

    def writes(self) -> list[tuple[str, str]]:
        """The requests that were not reads (watches are GETs)."""
        return [(method, path) for method, path in self.requests if method not in READ_METHODS]


@dataclass
class RunningOperator:
    """An operator running in this event loop."""

    operator: Operator
    settings: Settings
    client: Client
    requests: RequestLog
    backend: Backend
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    async def idle(self) -> bool:
        """Whether no controller has a key waiting or being reconciled (delayed retries aside)."""
        return all(
            controller.queue.stats().depth == 0
            and not metrics.REGISTRY.get_sample_value(
                "controller_runtime_active_workers", {"controller": controller.name}
            )
            for controller in self.operator.controllers
        )

    async def settled(self, timeout: float = 30.0) -> None:
        """Wait until ``idle``."""
        await eventually(self.idle, timeout=timeout, message="the operator kept working")

    async def caught_up(self, objects: Sequence[KubeObject], timeout: float = 30.0) -> None:
        """Wait until the operator's caches hold ``objects`` (read from the API server) or newer, then until
        it is idle: every reaction to them has happened."""

        async def seen() -> bool:
            return all(self._has_seen(obj) for obj in objects)

        await eventually(seen, timeout=timeout, message="the operator's caches did not catch up")
        await self.settled(timeout)

    def _has_seen(self, obj: KubeObject) -> bool:
        meta = obj["metadata"]
        for informer in self.operator.manager.cache.informers:
            if (informer.resource.api_version, informer.resource.kind) != (obj["apiVersion"], obj["kind"]):
                continue
            cached = informer.get(meta.get("namespace") or "", meta["name"])
            if cached is not None and int(cached["metadata"]["resourceVersion"]) >= int(meta["resourceVersion"]):
                return True
        return False

    async def polls(self) -> float:
        """How many polls have finished or been skipped (in this process)."""
        get = metrics.REGISTRY.get_sample_value
        return sum(get("opsync_polls_total", {"result": r}) or 0.0 for r in ("ok", "failed", "skipped"))

    async def wait_for_polls(self, count: int = 2, timeout: float = 30.0) -> None:
        """Wait until ``count`` more polls have finished."""
        target = await self.polls() + count

        async def done() -> bool:
            return await self.polls() >= target

        await eventually(done, timeout=timeout, message=f"{count} polls did not happen")

    async def stop(self, timeout: float = 60.0) -> None:
        """Stop as on SIGTERM and wait until everything has shut down; raise what the operator raised."""
        self.stopping.set()
        if self.task is not None:
            async with asyncio.timeout(timeout):
                await self.task


def operator_settings(
    emulator: Emulator, namespaces: Sequence[str] | None, backend: BackendKind = CONNECT, **overrides: Any
) -> Settings:
    """Settings for a test operator: the emulator's first token, no servers, a one-second poll."""
    credentials: dict[str, Any] = (
        {"service_account_token": emulator.service_account_token()}
        if backend is SDK
        else {"connect_host": emulator.url, "connect_token": emulator.token}
    )
    values: dict[str, Any] = {
        **credentials,
        "watch_namespaces": tuple(namespaces or ()),
        "polling_interval": 1,
        "metrics_bind_address": "0",
        "health_probe_bind_address": "0",
        "workers": 2,
    }
    values.update(overrides)
    return Settings.model_validate(values)


@contextlib.asynccontextmanager
async def run_operator(
    control_plane: ControlPlane,
    emulator: Emulator,
    backend: BackendKind = CONNECT,
    *,
    namespaces: Sequence[str] | None = None,
    kubeconfig: str | None = None,
    sync_timeout: float = 60.0,
    **overrides: Any,
) -> AsyncIterator[RunningOperator]:
    """Run opsync (scoped to ``namespaces``, all when None) until the block ends; yields once its caches synced.

    ``kubeconfig``: whom opsync acts as (default: the control plane's admin).
    """
    settings = operator_settings(emulator, namespaces, backend, **overrides)
    requests = RequestLog()
    client = await Client.from_kubeconfig(
        kubeconfig or control_plane.kubeconfig_path, field_manager="opsync", observers=[count_request, requests]
    )
    access = access_backend(settings)
    try:
        with emulator.sdk_core.installed():
            await sign_in(access)
            operator = build_operator(settings, client, access)
            running = RunningOperator(operator, settings, client, requests, access)
            running.task = asyncio.create_task(operator.run(running.stopping), name="opsync under test")
            await _until_synced(running, sync_timeout)
            try:
                yield running
            finally:
                await running.stop()
    finally:
        await access.close()
        await client.close()


async def _until_synced(running: RunningOperator, timeout: float) -> None:
    async def synced() -> bool:
        if running.task is not None and running.task.done():
            running.task.result()  # raises what stopped the operator
            raise AssertionError("the operator stopped during start-up")
        return running.operator.manager.cache.has_synced() and running.operator.manager.is_leader

    await eventually(synced, timeout=timeout, message="the operator's caches did not sync")


TOKEN = "opsync-test-token"


Vaults = dict[str, list[dict[str, Any]]]
"""Vault name -> items, as in the emulator's data file."""


def emulator_data(vaults: Vaults) -> dict[str, Any]:
    """An emulator data mapping: vault name -> items (as in the emulator's data file), one all-vaults token."""
    return {
        "tokens": [{"token": TOKEN, "name": "opsync"}],
        "vaults": [{"name": name, "items": items} for name, items in vaults.items()],
    }
