"""Fixtures backed by one real control plane per test session (``opsync.envtest``).

- ``control_plane``: the started ``ControlPlane`` (etcd, kube-apiserver with RBAC, kube-controller-manager,
  the CRDs from ``crds/``). Missing binaries fail the run with how to get them: integration tests are never
  skipped.
- ``api_client``: an admin ``kubernetes_asyncio`` ``ApiClient``; ``kube``: an admin ``opsync.client.Client``.
- ``namespace``: a fresh namespace for one test, deleted afterwards.
- ``backend``: how opsync reaches 1Password (``operator_harness.BackendKind``); a test taking it runs twice,
  through Connect and through a service account (the SDK), against the same emulator store.
- ``emulator``: a Connect emulator for one test, serving ``connect_data``: by default the ``vaults`` fixture,
  which each test module that uses the emulator defines (vault name -> items), with one all-vaults token.

After each test that used the control plane, a server of it found dead fails that test, naming the server and
its log, and so does a session CRD found deleted, which is installed again (``control_plane_intact``). When any
test fails, the component logs are kept in ``.envtest-logs/`` (or ``$OPSYNC_ENVTEST_LOGS``) with the failed test
ids, and the folder is named in the terminal summary.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from onepassword_access.emulator import Emulator
from opsync.envtest import ControlPlane, EnvtestError
from tests.support.harness import BACKENDS, BackendKind, Vaults, emulator_data

if TYPE_CHECKING:
    from opsync.client import Client

REPO = Path(__file__).resolve().parents[2]
FAILED = pytest.StashKey[list[str]]()
KEPT_LOGS = pytest.StashKey[Path]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember failed tests (setup, call or teardown) so the session keeps the component logs."""
    report: pytest.TestReport = yield
    if report.failed:
        item.session.stash.setdefault(FAILED, []).append(item.nodeid)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> Generator[None, None, None]:
    """After the short summary (the tail of a CI log is often all one sees): where the logs are, and how the
    machine was when the failures happened, since a starved or full machine fails tests by their deadlines."""
    yield
    kept = terminalreporter.config.stash.get(KEPT_LOGS, None)
    if kept is not None:
        terminalreporter.write_line(f"control-plane logs kept in {kept}")
        terminalreporter.write_line(f"machine at the end: {_machine()}")


def _machine() -> str:
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):  # /proc/meminfo is Linux's
        line = [line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemAvailable:")]
        memory = f", {int(line[0].split()[1]) // 1024} MiB of memory available"
    temp = tempfile.gettempdir()
    free = shutil.disk_usage(temp).free // 2**20
    return f"load average {load} on {os.cpu_count()} CPUs{memory}, {free} MiB free in {temp}"


@pytest.fixture(scope="session")
async def control_plane(request: pytest.FixtureRequest) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(crds=[REPO / "crds"], logs_root=REPO / ".envtest-logs")
    try:
        await plane.start()
    except EnvtestError as error:
        message = f"no control plane for the integration tests: {error}"
        raise pytest.fail.Exception(message, pytrace=False) from None
    yield plane
    failed = request.session.stash.get(FAILED, [])
    kept = await plane.stop(keep_logs=bool(failed))
    if kept is not None:
        (kept / "failed-tests.txt").write_text("".join(f"{nodeid}\n" for nodeid in failed))
        request.config.stash[KEPT_LOGS] = kept


@pytest.fixture(autouse=True)
async def control_plane_intact(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fail the test after which the shared control plane is found broken, saying how, rather than leaving
    every later test to fail by its deadline: a server that died (with its log), or one of the session's CRDs
    deleted (installed again here, so the tests after it run as usual)."""
    yield
    if "control_plane" not in request.fixturenames:
        return
    plane = cast(ControlPlane, request.getfixturevalue("control_plane"))
    if exited := plane.exited():
        pytest.fail("the control plane broke: " + "; ".join(exited), pytrace=False)
    if restored := await plane.restore_crds():
        pytest.fail(f"the test deleted the session's CRDs {', '.join(restored)}; installed again", pytrace=False)


@pytest.fixture(scope="session")
async def api_client(control_plane: ControlPlane) -> AsyncIterator[k8s.ApiClient]:
    api = await k8s_config.new_client_from_config(config_file=control_plane.kubeconfig_path)
    async with api:
        yield api


@pytest.fixture(scope="session")
async def kube(control_plane: ControlPlane) -> AsyncIterator[Client]:
    client = await control_plane.client()
    yield client
    await client.close()


@pytest.fixture(params=BACKENDS, ids=str)
def backend(request: pytest.FixtureRequest) -> BackendKind:
    return cast(BackendKind, request.param)


@pytest.fixture
async def namespace(request: pytest.FixtureRequest, api_client: k8s.ApiClient) -> AsyncIterator[str]:
    """A new namespace named after the test; deleted (not awaited to be gone) afterwards."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem}-{secrets.token_hex(3)}"
    core = k8s.CoreV1Api(api_client)
    await core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    yield name
    await core.delete_namespace(name)


@pytest.fixture
def connect_data(vaults: Vaults) -> dict[str, Any]:
    """The emulator's data: the test module's ``vaults`` and one all-vaults token (``operator_harness.TOKEN``)."""
    return emulator_data(vaults)


@pytest.fixture
async def emulator(connect_data: dict[str, Any]) -> AsyncIterator[Emulator]:
    """A Connect emulator serving ``connect_data`` for one test."""
    async with Emulator(connect_data) as emu:
        yield emu
