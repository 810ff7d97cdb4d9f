"""A real Kubernetes control plane for tests and the demo: etcd, kube-apiserver and kube-controller-manager.

``ControlPlane`` runs the binaries ``make envtest`` provides on free loopback ports with certificates it
generates (``openssl``), RBAC authorization, ServiceAccount token issuing and an admin identity (a client
certificate in ``system:masters``). It installs the CRDs its caller names, then hands out kubeconfigs and clients,
including ones acting as a ServiceAccount so tests can prove RBAC. ``opsync envtest`` runs one in the
foreground.

Binaries are looked up in ``KUBEBUILDER_ASSETS``, then ``OPSYNC_ENVTEST_ASSETS``, then the newest folder
under ``~/.cache/opsync/envtest/``. Every process runs in its own process group and is stopped by PID; on
Linux it is also killed if the Python process dies without cleaning up.

Over 400 lines on purpose: one control plane whose start-up order (certificates, etcd, apiserver, CRDs,
controller-manager), process supervision and clean-up read best in one place; only ``ControlPlane`` uses the
helpers here.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import functools
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import yaml

from opsync.resources import CRDS, SERVICEACCOUNTS

if TYPE_CHECKING:
    from opsync.client import Client

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")
# What a cluster needs for opsync's behaviour to be real: owner-reference garbage collection, namespace
# deletion, workload rollouts (Deployments/StatefulSets/DaemonSets own ReplicaSets/Pods), the `default`
# ServiceAccount, and the aggregated admin/edit/view ClusterRoles. No scheduler or kubelet: Pods stay Pending.
KCM_CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "daemonset-controller",
    "serviceaccount-controller",
    "clusterrole-aggregation-controller",
)
ADMIN_USER = "admin"
TOKEN_SECONDS = 24 * 3600
_LOOPBACK = "127.0.0.1"
_POLL = 0.1  # interval between readiness probes
_STOP_GRACE = 15.0  # seconds a server gets to exit after SIGTERM
_WORKDIR_PREFIX = "opsync-envtest-"  # followed by the owning process id
# free_ports() releases its ports before the servers bind them, so another process can take one in between.
_START_ATTEMPTS = 3


class EnvtestError(RuntimeError):
    """The control plane could not be found, started or reached."""


class PortTakenError(EnvtestError):
    """A server exited because another process took its port first; ``start`` tries again on new ports."""


def cache_root() -> Path:
    """Where ``make envtest`` puts one folder of binaries per Kubernetes version."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "opsync" / "envtest"


def _missing(folder: Path) -> list[str]:
    return [name for name in COMPONENTS if not os.access(folder / name, os.X_OK)]


def _version_key(folder: Path) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in folder.name.split("."))


def find_assets() -> Path:
    """The folder with etcd, kube-apiserver and kube-controller-manager, or an error saying how to get one."""
    for variable in ("KUBEBUILDER_ASSETS", "OPSYNC_ENVTEST_ASSETS"):
        value = os.environ.get(variable)
        if value:
            missing = _missing(Path(value))
            if missing:
                raise EnvtestError(f"{variable}={value} lacks {', '.join(missing)}: run `make envtest`")
            return Path(value)
    root = cache_root()
    found = sorted((d for d in root.glob("*") if d.is_dir() and not _missing(d)), key=_version_key)
    if not found:
        raise EnvtestError(
            f"no control-plane binaries (etcd, kube-apiserver, kube-controller-manager) in {root}/<version>/ "
            "and neither KUBEBUILDER_ASSETS nor OPSYNC_ENVTEST_ASSETS is set: run `make envtest`"
        )
    return found[-1]


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback TCP ports nobody listens on right now."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:  # all bound at once, so the kernel hands out distinct ports
            sock.bind((_LOOPBACK, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def _remove_orphaned_workdirs() -> None:
    """Delete temporary folders of control planes whose Python process died without cleaning up.

    Their servers died with it (see ``_parent_death_hook``), but etcd's data (~100 MB) stays behind.
    """
    for folder in Path(tempfile.gettempdir()).glob(f"{_WORKDIR_PREFIX}*-*"):
        pid = folder.name.removeprefix(_WORKDIR_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _parent_death_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes Linux SIGKILL the child when its parent dies, even by SIGKILL.

    Without it a test run killed from outside would leave ~1 GB of servers behind on a shared machine.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only makes the call
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return hook


_DIE_WITH_PARENT = _parent_death_hook()


class _Process:
    """One server in its own process group, its output appended to a log file."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=fd,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_DIE_WITH_PARENT,  # only calls prctl: no locks, no allocation after fork
            )
        finally:
            os.close(fd)

    def exited(self) -> str | None:
        """Why the process is not running although it was started, or None while it runs (or was never started)."""
        if self._proc is not None and self._proc.returncode is not None:
            return f"{self.name} exited with code {self._proc.returncode}; its log is {self.log}"
        return None

    def check_running(self) -> None:
        """Raise if the process exited (a server must never exit while the control plane is up);
        ``PortTakenError`` if it exited because its port was taken."""
        if (why := self.exited()) is not None:
            with contextlib.suppress(OSError):
                if "address already in use" in self.log.read_text(errors="replace"):
                    raise PortTakenError(why)
            raise EnvtestError(why)

    async def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after ``_STOP_GRACE`` seconds; no-op if not running."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), _STOP_GRACE)
        # Also reaps anything the server left in its group (they do not fork, but be sure).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


def _http(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    *,
    context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any]:
    """One JSON request to a loopback server (blocking: call through ``asyncio.to_thread``)."""
    conn: http.client.HTTPConnection
    if context is None:
        conn = http.client.HTTPConnection(_LOOPBACK, port, timeout=timeout)
    else:
        conn = http.client.HTTPSConnection(_LOOPBACK, port, timeout=timeout, context=context)
    try:
        payload = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(raw) if raw else None
    except ValueError:
        return response.status, raw.decode(errors="replace")


async def _openssl(*args: str | Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        "openssl", *map(str, args), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise EnvtestError(f"openssl {args[0]} failed: {err.decode(errors='replace').strip()}")


# A self-contained openssl config, so the host's openssl.cnf cannot add or clash with extensions.
_OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
[client]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
"""
_EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")  # fast to generate


async def _make_pki(pki: Path) -> None:
    """A throwaway CA, a localhost serving cert, the admin client cert and the ServiceAccount signing key."""
    cnf = pki / "openssl.cnf"
    cnf.write_text(_OPENSSL_CNF)
    await _openssl(
        "req", "-x509", "-config", cnf, "-extensions", "ca", *_EC_KEY, "-days", "3650",
        "-subj", "/CN=opsync-envtest-ca", "-keyout", pki / "ca.key", "-out", pki / "ca.crt",
    )  # fmt: skip
    for name, subject, extensions in (
        ("serving", "/CN=localhost", "server"),
        (ADMIN_USER, f"/O=system:masters/CN={ADMIN_USER}", "client"),
    ):
        await _openssl(
            "req", "-new", "-config", cnf, *_EC_KEY, "-subj", subject,
            "-keyout", pki / f"{name}.key", "-out", pki / f"{name}.csr",
        )  # fmt: skip
        await _openssl(
            "x509", "-req", "-in", pki / f"{name}.csr", "-CA", pki / "ca.crt", "-CAkey", pki / "ca.key",
            "-set_serial", str(secrets.randbits(63)), "-days", "3650",
            "-extfile", cnf, "-extensions", extensions, "-out", pki / f"{name}.crt",
        )  # fmt: skip
    await _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", pki / "sa.key")
    await _openssl("pkey", "-in", pki / "sa.key", "-pubout", "-out", pki / "sa.pub")


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on loopback; an async context manager.

    ``async with ControlPlane(crds=[...]) as plane:`` starts everything, waits until healthy and installs the CRDs;
    leaving the block stops every process and removes the temporary files. When the block raises, the
    component logs are copied to ``logs_root`` (default ``$OPSYNC_ENVTEST_LOGS`` or ``./.envtest-logs``).
    """

    def __init__(
        self,
        *,
        assets: str | Path | None = None,
        crds: Iterable[str | Path] = (),
        start_timeout: float = 180.0,
        logs_root: str | Path | None = None,
    ) -> None:
        """``crds``: CRD files or folders of them to install, given by the caller (an installed package has none)."""
        self._assets_arg = assets
        self._crds = [Path(p) for p in crds]
        self._installed_crds: list[dict[str, Any]] = []  # parsed once, at start: restore_crds runs after each test
        self._start_timeout = start_timeout
        self._logs_root = Path(logs_root or os.environ.get("OPSYNC_ENVTEST_LOGS") or Path.cwd() / ".envtest-logs")
        self._workdir: Path | None = None
        self._processes: dict[str, _Process] = {}
        self._admin_tls: ssl.SSLContext | None = None
        self._anonymous_tls: ssl.SSLContext | None = None
        self._etcd_port = 0
        self._api_port = 0
        self._kcm_port = 0
        self._waiting_for = ""
        self.assets = Path(assets) if assets else Path()  # resolved by start()
        self.kubeconfig_path = ""
        self.host = ""
        self.startup_seconds = 0.0

    # lifecycle

    async def __aenter__(self) -> ControlPlane:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop(keep_logs=exc is not None)

    async def start(self) -> None:
        """Start etcd, the apiserver and the controller-manager; install the CRDs. Cleans up if it fails."""
        if self._workdir is not None:
            raise EnvtestError("the control plane is already started")
        began = time.monotonic()
        self.assets = Path(self._assets_arg) if self._assets_arg else find_assets()
        missing = _missing(self.assets)
        if missing:
            raise EnvtestError(f"{self.assets} lacks {', '.join(missing)}: run `make envtest`")
        await asyncio.to_thread(_remove_orphaned_workdirs)
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                await self._start_once(keep_logs=attempt == _START_ATTEMPTS)
                break
            except PortTakenError:
                if attempt == _START_ATTEMPTS:
                    raise
        self.startup_seconds = time.monotonic() - began

    async def _start_once(self, *, keep_logs: bool) -> None:
        """One attempt on fresh ports; stopped again if it fails (a lost port race keeps logs only if asked)."""
        self._workdir = Path(tempfile.mkdtemp(prefix=f"{_WORKDIR_PREFIX}{os.getpid()}-"))
        try:
            async with asyncio.timeout(self._start_timeout):
                await self._start_all()
        except TimeoutError:
            kept = await self.stop(keep_logs=True)
            raise EnvtestError(
                f"{self._waiting_for} was not ready within {self._start_timeout:.0f}s; logs kept in {kept}"
            ) from None
        except PortTakenError:
            await self.stop(keep_logs=keep_logs)
            raise
        except BaseException:
            await self.stop(keep_logs=True)
            raise

    async def _start_all(self) -> None:
        work = self._dir()
        for sub in ("pki", "logs", "etcd", "kcm"):
            (work / sub).mkdir(mode=0o700)
        await _make_pki(work / "pki")
        self._admin_tls = self._tls_context(client_cert=True)
        self._anonymous_tls = self._tls_context(client_cert=False)
        self._etcd_port, peer_port, self._api_port, self._kcm_port = free_ports(4)
        self.host = f"https://{_LOOPBACK}:{self._api_port}"
        self.kubeconfig_path = str(self._write_kubeconfig("admin.kubeconfig", self._admin_user()))

        etcd = self._add("etcd", self._etcd_args(peer_port))
        await etcd.start()
        await self._wait_for("etcd", self._etcd_healthy)
        apiserver = self._add("kube-apiserver", self._apiserver_args())
        await apiserver.start()
        await self._wait_for("kube-apiserver", self._apiserver_ready)
        # CRDs before the controller-manager: its garbage collector discovers resources at start and only
        # re-discovers every 30 s, so owner references to custom resources work from the first test.
        await self._install_crds()
        kcm = self._add("kube-controller-manager", self._kcm_args())
        await kcm.start()
        await self._wait_for("kube-controller-manager", self._kcm_healthy)

    async def stop(self, *, keep_logs: bool = False) -> Path | None:
        """Stop every process (controller-manager, apiserver, etcd) and remove the temporary files.

        With ``keep_logs``, the component logs are first copied under ``logs_root``; returns that folder.
        Safe to call more than once.
        """
        for name in reversed(list(self._processes)):
            await self._processes.pop(name).stop()
        workdir, self._workdir = self._workdir, None
        if workdir is None:
            return None
        kept = await asyncio.to_thread(self._keep_logs, workdir) if keep_logs else None
        await asyncio.to_thread(shutil.rmtree, workdir, True)
        return kept

    def _keep_logs(self, workdir: Path) -> Path:
        dest = self._logs_root / f"{time.strftime('%Y%m%d-%H%M%S')}-{workdir.name.removeprefix(_WORKDIR_PREFIX)}"
        shutil.copytree(workdir / "logs", dest, dirs_exist_ok=True)
        return dest

    # what tests use

    async def client(self) -> Client:
        """A new admin ``opsync.client.Client`` (``system:masters``); the caller closes it."""
        from opsync.client import Client  # noqa: PLC0415 -- the client module is not needed to run a control plane

        return await Client.from_kubeconfig(self.kubeconfig_path)

    async def service_account_client(self, namespace: str, name: str) -> Client:
        """A new ``opsync.client.Client`` authenticated as ServiceAccount ``namespace/name`` (created if missing)."""
        from opsync.client import Client  # noqa: PLC0415

        path = await asyncio.to_thread(self.service_account_kubeconfig, namespace, name)
        return await Client.from_kubeconfig(path)

    def service_account_kubeconfig(self, namespace: str, name: str) -> str:
        """Write a kubeconfig whose user is ServiceAccount ``namespace/name``; return its path.

        As ``service_account_token``, which it calls: synchronous, so from async code prefer
        ``service_account_client`` or call it through ``asyncio.to_thread``.
        """
        user = {"token": self.service_account_token(namespace, name)}
        return str(self._write_kubeconfig(f"sa-{namespace}-{name}.kubeconfig", user))

    def service_account_token(self, namespace: str, name: str) -> str:
        """A 24 h token of ServiceAccount ``namespace/name`` (created if missing), minted with the TokenRequest
        API, as kubelet mounts one in a pod (with ``ca_file``). This makes two loopback requests synchronously
        (a few milliseconds): from async code call it through ``asyncio.to_thread``.
        """
        account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}
        self._admin("POST", SERVICEACCOUNTS.path(namespace), account, ok=(201, 409))
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                   "spec": {"expirationSeconds": TOKEN_SECONDS}}  # fmt: skip
        response = self._admin("POST", SERVICEACCOUNTS.path(namespace, name, "token"), request, ok=(201,))
        return str(response["status"]["token"])

    @property
    def ca_file(self) -> Path:
        """The CA that signed the API server's serving certificate (a pod's ``ca.crt``)."""
        return self._dir() / "pki" / "ca.crt"

    def exited(self) -> list[str]:
        """Which servers exited since they started, and how: none may while the control plane is up."""
        return [why for process in self._processes.values() if (why := process.exited()) is not None]

    async def restart_apiserver(self) -> None:
        """Stop the apiserver and start it again on the same port; return once it is ready.

        Open watches end (within ~2 s) and connections break, as in a real apiserver rollout. The new watch
        cache starts after the apiserver's own start-up writes, so a watch from any resourceVersion seen
        before the restart gets an ERROR event with code 410 (Expired): clients must relist.
        """
        apiserver = self._processes["kube-apiserver"]
        await apiserver.stop()
        self._processes["kube-apiserver"] = apiserver = _Process(apiserver.name, apiserver.argv, apiserver.log)
        await apiserver.start()
        async with asyncio.timeout(self._start_timeout):
            await self._wait_for("kube-apiserver", self._apiserver_ready)

    async def compact_etcd(self) -> int:
        """Compact etcd's history up to its current revision (as the apiserver does every 5 min); return it.

        Reads and watches of older resourceVersions that reach etcd then fail with 410 Gone. But the
        apiserver's watch cache keeps serving watches from resourceVersions inside its recent-event window,
        and exact-resourceVersion lists from its snapshots, until ``restart_apiserver()`` empties it.
        """
        status, body = await asyncio.to_thread(_http, self._etcd_port, "POST", "/v3/maintenance/status", {})
        if status != 200:
            raise EnvtestError(f"etcd status failed: HTTP {status}")
        revision = int(body["header"]["revision"])
        compaction = {"revision": str(revision), "physical": True}
        status, _ = await asyncio.to_thread(_http, self._etcd_port, "POST", "/v3/kv/compaction", compaction)
        if status != 200:
            raise EnvtestError(f"etcd compaction failed: HTTP {status}")
        return revision

    # process arguments

    def _etcd_args(self, peer_port: int) -> list[str]:
        client_url = f"http://{_LOOPBACK}:{self._etcd_port}"
        peer_url = f"http://{_LOOPBACK}:{peer_port}"
        return [
            str(self.assets / "etcd"),
            "--name=default",
            f"--data-dir={self._dir() / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            "--unsafe-no-fsync=true",  # throwaway data on a shared disk: durability buys nothing here
            "--log-level=warn",
        ]

    def _apiserver_args(self) -> list[str]:
        pki = self._dir() / "pki"
        return [
            str(self.assets / "kube-apiserver"),
            f"--etcd-servers=http://{_LOOPBACK}:{self._etcd_port}",
            f"--bind-address={_LOOPBACK}",
            f"--advertise-address={_LOOPBACK}",
            f"--secure-port={self._api_port}",
            f"--tls-cert-file={pki / 'serving.crt'}",
            f"--tls-private-key-file={pki / 'serving.key'}",
            f"--cert-dir={pki}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-issuer={self.host}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=RBAC",
            # Pods would need their ServiceAccount to exist first; there is no kubelet to run them anyway.
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            "--endpoint-reconciler-type=none",  # no Service endpoints for a loopback-only apiserver
            # On SIGTERM, end open watches after 2 s instead of waiting up to a minute for them to close.
            "--shutdown-watch-termination-grace-period=2s",
            "--profiling=false",
        ]

    def _kcm_args(self) -> list[str]:
        pki = self._dir() / "pki"
        return [
            str(self.assets / "kube-controller-manager"),
            f"--kubeconfig={self.kubeconfig_path}",
            f"--controllers={','.join(KCM_CONTROLLERS)}",
            "--use-service-account-credentials=false",  # every controller acts as admin: no token controller
            "--leader-elect=false",
            f"--bind-address={_LOOPBACK}",
            f"--secure-port={self._kcm_port}",
            f"--tls-cert-file={pki / 'serving.crt'}",
            f"--tls-private-key-file={pki / 'serving.key'}",
            f"--cert-dir={self._dir() / 'kcm'}",
            "--profiling=false",
        ]

    # helpers

    def _dir(self) -> Path:
        if self._workdir is None:
            raise EnvtestError("the control plane is not running")
        return self._workdir

    def _add(self, name: str, argv: list[str]) -> _Process:
        process = _Process(name, argv, self._dir() / "logs" / f"{name}.log")
        self._processes[name] = process
        return process

    def _tls_context(self, *, client_cert: bool) -> ssl.SSLContext:
        pki = self._dir() / "pki"
        context = ssl.create_default_context(cafile=self.ca_file)
        if client_cert:
            context.load_cert_chain(pki / f"{ADMIN_USER}.crt", pki / f"{ADMIN_USER}.key")
        return context

    def _admin_user(self) -> dict[str, str]:
        pki = self._dir() / "pki"
        return {
            "client-certificate-data": _b64(pki / f"{ADMIN_USER}.crt"),
            "client-key-data": _b64(pki / f"{ADMIN_USER}.key"),
        }

    def _write_kubeconfig(self, filename: str, user: dict[str, str]) -> Path:
        cluster = {"server": self.host, "certificate-authority-data": _b64(self.ca_file)}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "envtest", "cluster": cluster}],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": "user"}}],
            "current-context": "envtest",
        }
        path = self._dir() / filename
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds credentials
        with os.fdopen(fd, "w") as file:
            yaml.safe_dump(config, file)
        return path

    def _admin(self, method: str, path: str, body: Any = None, *, ok: Sequence[int] = (200,)) -> Any:
        """A blocking admin request to the apiserver; raises unless the status is in ``ok``."""
        status, response = _http(self._api_port, method, path, body, context=self._admin_tls)
        if status not in ok:
            reason = response.get("message", "") if isinstance(response, dict) else ""
            raise EnvtestError(f"{method} {path}: HTTP {status} {reason}".strip())
        return response

    async def _wait_for(self, name: str, ready: Callable[[], Awaitable[bool]]) -> None:
        """Poll ``ready`` until it holds; fail early if any server exited (the caller bounds the time)."""
        self._waiting_for = name
        while True:
            for process in self._processes.values():
                process.check_running()
            with contextlib.suppress(OSError, ssl.SSLError, http.client.HTTPException):
                if await ready():
                    return
            await asyncio.sleep(_POLL)

    async def _etcd_healthy(self) -> bool:
        status, body = await asyncio.to_thread(_http, self._etcd_port, "GET", "/health", timeout=2.0)
        return status == 200 and isinstance(body, dict) and body.get("health") == "true"

    async def _apiserver_ready(self) -> bool:
        status, _ = await asyncio.to_thread(
            _http, self._api_port, "GET", "/readyz", context=self._admin_tls, timeout=5.0
        )
        return status == 200

    async def _kcm_healthy(self) -> bool:
        # /healthz is always allowed: the CA check is enough, no client certificate needed.
        status, _ = await asyncio.to_thread(
            _http, self._kcm_port, "GET", "/healthz", context=self._anonymous_tls, timeout=5.0
        )
        return status == 200

    def _crd_documents(self) -> list[dict[str, Any]]:
        files = [f for p in self._crds for f in (sorted(p.glob("*.yaml")) if p.is_dir() else [p])]
        return [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]

    async def _install_crds(self, documents: list[dict[str, Any]] | None = None) -> None:
        if documents is None:
            self._installed_crds = documents = self._crd_documents()
        for crd in documents:
            await asyncio.to_thread(self._admin, "POST", CRDS.path(), crd, ok=(201,))
        for crd in documents:
            await self._wait_for(f"CRD {crd['metadata']['name']}", functools.partial(self._crd_served, crd))

    async def restore_crds(self) -> list[str]:
        """Install again every CRD of ``crds`` that was deleted (or is being deleted) since the start; the
        names of those restored, so that one test deleting a shared CRD cannot break every test after it."""
        gone = [crd for crd in self._installed_crds if await self._crd_deleted(crd)]
        async with asyncio.timeout(self._start_timeout):
            for crd in gone:  # a CRD being deleted still exists until its objects are gone
                await self._wait_for(
                    f"CRD {crd['metadata']['name']} to be gone", functools.partial(self._crd_absent, crd)
                )
            await self._install_crds(gone)
        return [crd["metadata"]["name"] for crd in gone]

    async def _crd_found(self, crd: dict[str, Any]) -> dict[str, Any] | None:
        found = await asyncio.to_thread(self._admin, "GET", CRDS.path(name=crd["metadata"]["name"]), ok=(200, 404))
        return found if isinstance(found, dict) and found.get("kind") == "CustomResourceDefinition" else None

    async def _crd_deleted(self, crd: dict[str, Any]) -> bool:
        found = await self._crd_found(crd)
        return found is None or "deletionTimestamp" in found["metadata"]

    async def _crd_absent(self, crd: dict[str, Any]) -> bool:
        return await self._crd_found(crd) is None

    async def _crd_served(self, crd: dict[str, Any]) -> bool:
        """Established, and its objects listed: until its storage is ready the apiserver answers 429."""
        found = await self._crd_found(crd)
        conditions = ((found or {}).get("status") or {}).get("conditions") or []
        if not any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
            return False
        spec = crd["spec"]
        version = next(v["name"] for v in spec["versions"] if v.get("served", True))
        path = f"/apis/{spec['group']}/{version}/{spec['names']['plural']}?limit=1"
        status, _ = await asyncio.to_thread(_http, self._api_port, "GET", path, context=self._admin_tls)
        return status == 200


# `opsync envtest`


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``opsync envtest``."""
    parser.add_argument("--kubeconfig", required=True, help="write the admin kubeconfig here (overwritten)")
    parser.add_argument(
        "--crds", action="append", metavar="PATH", help="CRD file or folder to install (repeatable; default: none)"
    )
    parser.add_argument("--assets", help="folder with the binaries (default: see `make envtest`)")


def main(args: argparse.Namespace) -> int:
    """Run a control plane until SIGINT or SIGTERM; print one line once it is ready."""
    try:
        return asyncio.run(_serve(args))
    except EnvtestError as error:
        sys.stderr.write(f"opsync envtest: {error}\n")
        return 1


async def _serve(args: argparse.Namespace) -> int:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    async with ControlPlane(assets=args.assets, crds=args.crds or ()) as plane:
        await asyncio.to_thread(shutil.copyfile, plane.kubeconfig_path, args.kubeconfig)
        os.chmod(args.kubeconfig, 0o600)
        sys.stdout.write(
            f"envtest ready in {plane.startup_seconds:.1f}s: server {plane.host}, kubeconfig {args.kubeconfig}\n"
        )
        sys.stdout.flush()
        await stopping.wait()
    return 0
