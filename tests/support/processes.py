"""``python -m opsync <command>`` as a child process, for tests that need a real one: exit codes, signals
(SIGTERM, SIGKILL, SIGSTOP), ``/proc`` of the process, two replicas.

    opsync = await OpsyncProcess.run(kubeconfig, emulator, namespace, tmp_path / "opsync.log").start()
    try:
        ...                                   # opsync.lines(), await opsync.sample("metric", label="x")
        assert await opsync.stop() == 0       # SIGTERM, as Kubernetes stops a pod
    finally:
        await opsync.kill()

Its output goes to files, not pipes: a pipe nobody reads would block the process once full.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from onepassword_access.emulator import Emulator
from opsync.envtest import free_ports

SDK_CORE_PROXY = Path(__file__).resolve().parents[1] / "sdk_core_proxy"


class OpsyncProcess:
    """``python -m opsync *argv`` with ``env``; stdout and stderr go to ``log`` (stderr to ``stderr`` if given)."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log: Path, *, stderr: Path | None = None) -> None:
        self.argv = [sys.executable, "-m", "opsync", *argv]
        self.env = dict(env)
        self.log = log
        self.stderr_log = stderr
        self.metrics_port: int | None = None
        self.process: asyncio.subprocess.Process | None = None

    @classmethod
    def run(
        cls,
        kubeconfig: str,
        emulator: Emulator,
        namespace: str,
        log: Path,
        *args: str,
        service_account: bool = False,
        **env: str,
    ) -> OpsyncProcess:
        """``opsync run`` against the test control plane and ``emulator``, in ``namespace``, polling every
        second, logging JSON lines and serving its metrics on a free port; ``args`` come last, so they win.

        ``service_account``: ``OP_SERVICE_ACCOUNT_TOKEN`` instead of Connect, the process's SDK answered by the
        emulator's SDK core (``tests/sdk_core_proxy``, through ``/__admin/sdk-core``: an ``admin=True`` emulator)."""
        port = free_ports(1)[0]
        argv = [
            "run",
            "--log-format=json",
            "--health-probe-bind-address=0",
            f"--metrics-bind-address=127.0.0.1:{port}",
            *args,
        ]
        access = (
            {
                "OP_SERVICE_ACCOUNT_TOKEN": emulator.service_account_token(),
                "OPSYNC_TEST_SDK_CORE": emulator.url,
                "PYTHONPATH": os.pathsep.join([str(SDK_CORE_PROXY), os.environ.get("PYTHONPATH", "")]).rstrip(
                    os.pathsep
                ),
            }
            if service_account
            else {"OP_CONNECT_HOST": emulator.url, "OP_CONNECT_TOKEN": emulator.token}
        )
        environment = {
            **os.environ,
            **access,
            "WATCH_NAMESPACE": namespace,
            "POLLING_INTERVAL": "1",
            "KUBECONFIG": kubeconfig,
            **env,
        }
        process = cls(argv, environment, log)
        process.metrics_port = port
        return process

    async def start(self) -> Self:
        with self.log.open("ab") as out:
            if self.stderr_log is None:
                self.process = await self._spawn(out, out)
            else:
                with self.stderr_log.open("ab") as err:
                    self.process = await self._spawn(out, err)
        return self

    async def _spawn(self, stdout: Any, stderr: Any) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *self.argv, env=self.env, stdin=asyncio.subprocess.DEVNULL, stdout=stdout, stderr=stderr
        )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` (SIGKILL, SIGSTOP, SIGCONT...) to the process."""
        assert self.process is not None
        self.process.send_signal(sig)

    async def kill(self) -> None:
        """SIGKILL it and reap it: no shutdown, no Lease release, as a node or OOM kill."""
        if self.process is not None and self.process.returncode is None:
            self.signal(signal.SIGKILL)
            await self.process.wait()

    async def wait(self, timeout: float = 60.0) -> int:
        """Wait for it to exit by itself; its exit code."""
        assert self.process is not None
        async with asyncio.timeout(timeout):
            return await self.process.wait()

    async def stop(self) -> int:
        """SIGTERM it (after a SIGCONT, in case it is stopped) and wait for it; return its exit code."""
        assert self.process is not None
        if self.process.returncode is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                await self.wait(60)
            except TimeoutError:
                await self.kill()
        return int(self.process.returncode or 0)

    def output(self) -> str:
        """What it wrote to ``log`` so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def errors(self) -> str:
        """What it wrote to ``stderr`` so far (given a separate file; else see ``output``)."""
        assert self.stderr_log is not None
        return self.stderr_log.read_text(errors="replace") if self.stderr_log.exists() else ""

    def lines(self) -> list[dict[str, Any]]:
        """Its JSON log lines so far."""
        return [json.loads(line) for line in self.output().splitlines() if line.startswith("{")]

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Its metrics now: (sample name, sorted labels) -> value; empty while it does not answer."""
        assert self.metrics_port is not None, "metrics are served by OpsyncProcess.run processes"
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            async with aiohttp.ClientSession() as session, session.get(url, timeout=aiohttp.ClientTimeout(5)) as r:
                text = await r.text()
        except (aiohttp.ClientError, TimeoutError):
            return {}
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    async def sample(self, metric: str, **labels: str) -> float:
        """One metric sample (0 when absent)."""
        return (await self.metrics()).get((metric, tuple(sorted(labels.items()))), 0.0)
