"""opsync and the Connect emulator as child processes, and what the benchmarks read from them.

Both run as ``python -m opsync ...`` so that opsync's memory is its own (``/proc/<pid>/status``) and neither
competes with the benchmark driver's event loop. What they did is read from their own counters:

- opsync: its Prometheus endpoint (``rest_client_requests_total`` by method, the work-queue gauges);
- the emulator: ``GET /__admin/requests`` (requests per route, the admin API itself not counted).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from opsync.envtest import ControlPlane, free_ports

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)
POLL = 0.2  # seconds between two looks at a condition being waited for

Samples = dict[str, list[tuple[dict[str, str], float]]]


async def until(condition: Callable[[], Awaitable[bool]], *, within: float, what: str, interval: float = POLL) -> None:
    """Wait until the async ``condition()`` is true; TimeoutError naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {within:.0f} s")
        await asyncio.sleep(interval)


OPSYNC = (sys.executable, "-m", "opsync")
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# $1: the pod's namespace; $2 and $3: files holding the token and the cluster's CA; the rest: the command line.
# /var/run is a tmpfs of this mount namespace only (propagation private): nothing outside the process sees it.
_POD_FILES = (
    f"mount -t tmpfs tmpfs /var/run && mkdir -p {SERVICE_ACCOUNT_DIR} && "
    f'printf %s "$1" > {SERVICE_ACCOUNT_DIR}/namespace && cp "$2" {SERVICE_ACCOUNT_DIR}/token && '
    f'cp "$3" {SERVICE_ACCOUNT_DIR}/ca.crt && shift 3 && exec "$@"'
)


@dataclass(frozen=True)
class InCluster:
    """What kubelet gives a pod to reach the API server: a ServiceAccount token, the cluster's CA and the pod's
    namespace, as files under ``SERVICE_ACCOUNT_DIR``, and ``KUBERNETES_SERVICE_HOST``/``_PORT``. A command
    started through ``program`` loads its in-cluster configuration as in a pod. The files are never written on
    the host (other processes on the machine may read that directory): the command runs in a private mount
    namespace (``unshare``, as root) where a tmpfs over ``/var/run`` holds them, gone with the process."""

    server: str
    """The API server's URL, ``https://host:port``."""
    token_file: Path
    ca_file: Path

    @classmethod
    async def service_account(
        cls, control_plane: ControlPlane, namespace: str, name: str, directory: Path
    ) -> InCluster:
        """As a pod of ServiceAccount ``namespace/name`` (created if missing), its token in ``directory``."""
        token = await asyncio.to_thread(control_plane.service_account_token, namespace, name)
        token_file = directory / f"token-{namespace}-{name}"
        await asyncio.to_thread(token_file.write_text, token)
        return cls(control_plane.host, token_file, control_plane.ca_file)

    def program(self, namespace: str, command: Sequence[str]) -> list[str]:
        """``command`` run as in a pod of ``namespace``."""
        pod = [namespace, str(self.token_file), str(self.ca_file)]
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _POD_FILES, "sh", *pod, *command]

    def env(self) -> dict[str, str]:
        """The variables kubelet sets, and no kubeconfig (an empty ``KUBECONFIG`` is none, for opsync and Go)."""
        url = urlsplit(self.server)
        host, port = url.hostname or "", str(url.port)
        return {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port, "KUBECONFIG": ""}


class Child:
    """A child process (``python -m opsync`` unless ``program`` says otherwise) with its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        program: Sequence[str] = OPSYNC,
    ) -> None:
        self.name = name
        self._argv = [*program, *argv]
        self._env = {**os.environ, **env}
        self.log_path = log_path
        self._log: IO[bytes] | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.started = 0.0  # time.perf_counter() at spawn

    @property
    def pid(self) -> int:
        """The child's process id."""
        assert self.process is not None, f"{self.name} was not started"
        return self.process.pid

    async def spawn(self) -> None:
        """Start the process (returns at once)."""
        self._log = self.log_path.open("ab")
        self.started = time.perf_counter()
        self.process = await asyncio.create_subprocess_exec(
            *self._argv, env=self._env, stdout=self._log, stderr=asyncio.subprocess.STDOUT
        )

    def check_running(self) -> None:
        """Raise if the process has exited."""
        if self.process is not None and self.process.returncode is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")

    async def stop(self, within: float = 60.0) -> None:
        """SIGTERM and wait (SIGKILL after ``within`` seconds)."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), within)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass(frozen=True)
class Memory:
    """Resident memory of a process, MiB: now and the peak so far."""

    rss_mib: float
    peak_mib: float


def memory(pid: int) -> Memory:
    """``VmRSS`` and ``VmHWM`` from ``/proc/<pid>/status``."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024  # kB
    return Memory(round(fields["VmRSS"], 1), round(fields["VmHWM"], 1))


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14, 15


def control_plane_pids(host: str) -> dict[str, int]:
    """The pids of the kube-apiserver serving ``host`` (``https://127.0.0.1:<port>``) and of its etcd."""
    port = host.rsplit(":", 1)[1]
    commands = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                commands[int(entry.name)] = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue  # gone meanwhile
    apiserver = next(
        pid
        for pid, argv in commands.items()
        if argv[0].endswith(b"kube-apiserver") and f"--secure-port={port}".encode() in argv
    )
    etcd_url = next(arg.split(b"=", 1)[1] for arg in commands[apiserver] if arg.startswith(b"--etcd-servers="))
    etcd = next(
        pid
        for pid, argv in commands.items()
        if argv[0].endswith(b"etcd") and b"--listen-client-urls=" + etcd_url in argv
    )
    return {"kube-apiserver": apiserver, "etcd": etcd}


class CpuMeter:
    """CPU seconds used by a set of processes (and this one) between ``start`` and ``read``."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self._start: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {"bench": time.process_time(), **{name: cpu_seconds(pid) for name, pid in self.pids.items()}}

    def start(self) -> None:
        """Start counting."""
        self._start = self._now()

    def read(self) -> dict[str, float]:
        """CPU seconds per process since ``start``."""
        return {name: round(value - self._start[name], 2) for name, value in self._now().items()}


def operator_env(connect_url: str, token: str, namespaces: Sequence[str], poll_interval: int) -> dict[str, str]:
    """The settings an operator under test reads: the Go operator's variables, which opsync reads too (it is a
    drop-in), so both sides of ``bench.versus`` get the very same ones."""
    return {
        "OP_CONNECT_HOST": connect_url,
        "OP_CONNECT_TOKEN": token,
        "WATCH_NAMESPACE": ",".join(namespaces),
        "POLLING_INTERVAL": str(poll_interval),
        "AUTO_RESTART": "true",
    }


class Operator(Child):
    """An operator process with a Prometheus endpoint and a ``/readyz`` probe on loopback ports: opsync, or the
    Go operator for the side-by-side comparison (``bench.versus``). Both expose controller-runtime's metric
    names (``rest_client_requests_total``, ``workqueue_depth``, ``controller_runtime_active_workers``...)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        program: Sequence[str],
        metrics_port: int,
        health_port: int,
    ) -> None:
        super().__init__(name, argv, env, log_path, program=program)
        self.metrics_port, self.health_port = metrics_port, health_port
        self._session: aiohttp.ClientSession | None = None

    async def _get(self, port: int, path: str) -> tuple[int, str]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=HTTP_TIMEOUT)
        try:
            async with self._session.get(f"http://127.0.0.1:{port}{path}") as response:
                return response.status, await response.text()
        except (aiohttp.ClientError, TimeoutError):
            return 0, ""

    async def wait_ready(self, within: float = 300.0) -> float:
        """Wait for ``/readyz`` (opsync: caches synced); seconds since the process was spawned."""

        async def ready() -> bool:
            self.check_running()
            return (await self._get(self.health_port, "/readyz"))[0] == 200

        await until(ready, within=within, what=f"{self.name} /readyz")
        return time.perf_counter() - self.started

    async def samples(self) -> Samples:
        """Every metric sample, by sample name (``rest_client_requests_total``...)."""
        status, text = await self._get(self.metrics_port, "/metrics")
        if status != 200:
            self.check_running()
            raise RuntimeError(f"{self.name} /metrics answered {status}")
        found: Samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                found.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
        return found

    async def api_requests(self) -> Counter[str]:
        """API-server requests sent so far, by HTTP method (watches are GETs)."""
        return _by_method(await self.samples())

    async def settle(self, within: float = 600.0) -> float:
        """Wait until the operator is done: no key queued or being reconciled in any controller (delayed retries
        aside) and no API-server write (Events are written in the background) over three looks in a row;
        seconds since the process was spawned."""
        streak, last_writes = 0, -1

        async def settled() -> bool:
            nonlocal streak, last_writes
            samples = await self.samples()
            busy = [v for _, v in samples.get("workqueue_depth", [])] + [
                v for _, v in samples.get("controller_runtime_active_workers", [])
            ]
            written = writes(Counter(), _by_method(samples))
            streak = streak + 1 if not any(busy) and written == last_writes else 0
            last_writes = written
            return streak >= 3

        await until(settled, within=within, what=f"{self.name} idle")
        return time.perf_counter() - self.started

    async def reconciles(self, controller: str | None = None) -> int:
        """Reconciles finished so far, every result together: of ``controller``, or of every controller."""
        samples = (await self.samples()).get("controller_runtime_reconcile_total", [])
        return int(sum(value for labels, value in samples if controller in (None, labels.get("controller"))))

    def memory(self) -> Memory:
        """This process's resident memory."""
        return memory(self.pid)

    def cpu_seconds(self) -> float:
        """CPU time this process has used so far."""
        return cpu_seconds(self.pid)

    async def stop(self, within: float = 60.0) -> None:
        """SIGTERM and wait; closes the scraping session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        await super().stop(within)


class Opsync(Operator):
    """``opsync run`` against a kubeconfig or, with ``in_cluster`` instead, as in a pod, and a Connect URL, scoped
    to ``namespaces``, probes on loopback."""

    def __init__(
        self,
        *,
        kubeconfig: str | None = None,
        connect_url: str,
        token: str,
        namespaces: Sequence[str],
        poll_interval: int,
        workers: int,
        log_path: Path,
        in_cluster: InCluster | None = None,
    ) -> None:
        if (kubeconfig is None) == (in_cluster is None):
            raise ValueError("give exactly one of kubeconfig and in_cluster")
        metrics_port, health_port = free_ports(2)
        argv = [
            "run",
            *([f"--kubeconfig={kubeconfig}"] if kubeconfig is not None else []),
            f"--metrics-bind-address=127.0.0.1:{metrics_port}",
            f"--health-probe-bind-address=127.0.0.1:{health_port}",
            f"--workers={workers}",
            "--log-level=warn",
            "--log-format=json",
        ]
        env = operator_env(connect_url, token, namespaces, poll_interval)
        program: Sequence[str] = OPSYNC
        if in_cluster is not None:
            env |= in_cluster.env()
            program = in_cluster.program(namespaces[0], OPSYNC)
        super().__init__(
            "opsync", argv, env, log_path, program=program, metrics_port=metrics_port, health_port=health_port
        )
        self.workers = workers

    async def polls(self) -> int:
        """Polls of 1Password finished or skipped so far."""
        return int(sum(v for _, v in (await self.samples()).get("opsync_polls_total", [])))


def _by_method(samples: Samples) -> Counter[str]:
    counts: Counter[str] = Counter()
    for labels, value in samples.get("rest_client_requests_total", []):
        counts[labels["method"]] += int(value)
    return counts


def writes(before: Counter[str], after: Counter[str]) -> int:
    """API-server writes between two ``api_requests`` readings."""
    return sum(after[m] - before[m] for m in WRITE_METHODS)


class ConnectEmulator(Child):
    """``opsync connect-emulator`` on a free loopback port, with ``data`` written next to its log."""

    def __init__(self, data: Mapping[str, Any], token: str, log_path: Path) -> None:
        (self.port,) = free_ports(1)
        data_path = log_path.with_suffix(".json")
        data_path.write_text(json.dumps(data))
        super().__init__(
            "connect-emulator",
            ["connect-emulator", f"--data={data_path}", f"--port={self.port}", "--admin"],
            {},
            log_path,
        )
        self.token = token
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        """The Connect base URL."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self, within: float = 120.0) -> None:
        """Spawn and wait until it answers ``/heartbeat``."""
        await self.spawn()
        self._session = aiohttp.ClientSession(base_url=self.url, timeout=HTTP_TIMEOUT)

        async def up() -> bool:
            self.check_running()
            try:
                async with self.session.get("/heartbeat") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await until(up, within=within, what="connect emulator")

    @property
    def session(self) -> aiohttp.ClientSession:
        """The admin session (after ``start``)."""
        assert self._session is not None, "the emulator was not started"
        return self._session

    async def requests(self) -> Counter[str]:
        """Connect requests served so far, by route (``GET /v1/vaults/{vault}``...)."""
        async with self.session.get("/__admin/requests") as response:
            response.raise_for_status()
            return Counter({route: int(n) for route, n in (await response.json()).items()})

    async def change(self, vault: str, item: str, fields: Mapping[str, str]) -> int:
        """Edit an item as a 1Password user would (one write); its new version."""
        body = {"vault": vault, "item": item, "fields": dict(fields)}
        async with self.session.post("/__admin/items", json=body) as response:
            response.raise_for_status()
            return int((await response.json())["version"])

    async def stop(self, within: float = 30.0) -> None:
        """SIGTERM and wait; closes the admin session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        await super().stop(within)
