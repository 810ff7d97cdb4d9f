"""``make demo``: opsync keeping Kubernetes Secrets in sync with 1Password, narrated, on this machine.

It does what a user would: starts ``opsync envtest`` (etcd, kube-apiserver, kube-controller-manager),
``opsync connect-emulator`` (1Password Connect serving the vault in examples/emulator-data.yaml) and
``opsync run``, applies examples/demo/ with kubectl, edits the item through the emulator's admin API and shows
the Secret and the Deployment following. It then runs until Ctrl-C; with ``DEMO_ONCE=1`` it exits after the
story (the test suite runs it so). Everything it started is stopped on exit. Secret values are never printed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

from opsync.envtest import EnvtestError, find_assets

ROOT = Path(__file__).resolve().parent.parent
NS = "demo"
TOKEN = "demo-operator-token"  # noqa: S105 - examples/emulator-data.yaml's fake read-only token
RESTARTED = "operator.1password.io/last-restarted"
T = TypeVar("T")


class DemoError(Exception):
    """A step did not happen; the message says which."""


def out(text: str, stream: TextIO = sys.stdout) -> None:
    stream.write(text + "\n")
    stream.flush()


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held together while chosen, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def http(url: str, body: dict[str, Any] | None = None) -> bytes:
    """GET (or POST ``body`` as JSON to) a loopback URL this script built."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - http://127.0.0.1 only
        return bytes(response.read())


def answers(url: str) -> bool:
    try:
        http(url)
    except OSError:  # not listening yet, or 503 (/readyz until the caches are synced)
        return False
    return True


def shape(secret: dict[str, Any], keys: list[str] | None = None) -> str:
    """The Secret's keys (or ``keys``) with the size of each value, never the value: ``password=<20 bytes>``."""
    data = secret.get("data") or {}
    return ", ".join(f"{key}=<{len(base64.b64decode(data[key]))} bytes>" for key in sorted(keys or data))


class Demo:
    def __init__(self) -> None:
        self.kubectl_path = str(find_assets() / "kubectl")
        self.opsync = str(Path(sys.executable).parent / "opsync")
        self.work = Path(tempfile.mkdtemp(prefix="opsync-demo-"))
        self.kubeconfig = str(self.work / "kubeconfig")
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.step = 0
        self.connect = self.metrics = ""

    def say(self, text: str) -> None:
        self.step += 1
        out(f"{self.step:2}. {text}")

    @staticmethod
    def detail(text: str) -> None:
        out(f"    {text}")

    # --- processes and the cluster ----------------------------------------------------------------------

    def start(self, *args: str, env: dict[str, str] | None = None) -> None:
        """Run ``opsync <args>`` in its own process group, its output in <work>/<subcommand>.log."""
        with open(self.work / f"{args[0]}.log", "wb") as log:
            self.children[args[0]] = subprocess.Popen(  # noqa: S603 - our own command
                [self.opsync, *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
                start_new_session=True,
            )

    def log(self, name: str) -> str:
        return (self.work / f"{name}.log").read_text(errors="replace")

    def check_children(self) -> None:
        for name, proc in self.children.items():
            if proc.poll() is not None:
                raise DemoError(f"`opsync {name}` exited with code {proc.returncode}")

    def wait_for(self, what: str, probe: Callable[[], T | None], timeout: float = 60) -> T:
        """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds or if a child exits."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_children()
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise DemoError(f"{what} did not happen within {timeout:.0f} s")
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM each child's process group (opsync first), SIGKILL what is left after 20 s."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for proc in reversed(self.children.values()):
            with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def kubectl(self, *args: str) -> str:
        command = [self.kubectl_path, "--kubeconfig", self.kubeconfig, "-n", NS, *args]
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=30)  # noqa: S603
        if done.returncode:
            raise DemoError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def get(self, kind: str, name: str) -> dict[str, Any]:
        """The object, or ``{}`` when there is none."""
        found = self.kubectl("get", kind, name, "-o", "json", "--ignore-not-found")
        return json.loads(found) if found.strip() else {}

    def replicasets(self) -> list[str]:
        return sorted(rs["metadata"]["name"] for rs in json.loads(self.kubectl("get", "rs", "-o", "json"))["items"])

    def ready(self, item: str) -> dict[str, Any] | None:
        """The item's ``Ready`` condition once it is ``True``."""
        conditions = self.get("onepassworditem", item).get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == "Ready" and c["status"] == "True"), None)

    def annotations(self, *, template: bool = False) -> dict[str, str]:
        """The Deployment's annotations (or its pod template's)."""
        obj = self.get("deployment", "web")
        meta = obj.get("spec", {}).get("template", {}).get("metadata", {}) if template else obj.get("metadata", {})
        return dict(meta.get("annotations") or {})

    # --- the story --------------------------------------------------------------------------------------

    def start_everything(self) -> None:
        self.say("Starting a local control plane: opsync envtest (etcd, kube-apiserver, kube-controller-manager)")
        self.start("envtest", "--kubeconfig", self.kubeconfig)
        pattern = re.compile(r"envtest ready in (\S+)s: server (\S+),")
        ready = self.wait_for("the control plane start", lambda: pattern.search(self.log("envtest")), timeout=180)
        self.detail(f"ready in {ready[1]} s, serving {ready[2]}")

        self.say("Starting the 1Password Connect emulator with the vault Demo (examples/emulator-data.yaml)")
        self.start("connect-emulator", "--data", "examples/emulator-data.yaml", "--port", "0", "--admin")
        url = re.compile(r"http://127\.0\.0\.1:\d+")
        self.connect = self.wait_for("the emulator start", lambda: url.search(self.log("connect-emulator")))[0]
        self.detail(f"serving {self.connect}; items db-credentials and api-key")

        self.say("Installing the CRDs and a namespace: kubectl apply --server-side -f crds/; kubectl create ns demo")
        self.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        self.kubectl("create", "namespace", NS)

        self.say(
            f"Starting opsync: opsync run with OP_CONNECT_HOST={self.connect}, OP_CONNECT_TOKEN_FILE, "
            f"WATCH_NAMESPACE={NS}, POLLING_INTERVAL=5"
        )
        token = self.work / "token"
        token.write_text(TOKEN)
        token.chmod(0o600)
        env = {key: value for key, value in os.environ.items() if not key.startswith(("OP_", "AUTO_RESTART"))}
        env.update(
            KUBECONFIG=self.kubeconfig,
            OP_CONNECT_HOST=self.connect,
            OP_CONNECT_TOKEN_FILE=str(token),
            WATCH_NAMESPACE=NS,
            POLLING_INTERVAL="5",
        )
        metrics, health = free_ports(2)
        self.metrics = f"http://127.0.0.1:{metrics}/metrics"
        self.start(
            "run",
            "--log-format=console",
            f"--metrics-bind-address=127.0.0.1:{metrics}",
            f"--health-probe-bind-address=127.0.0.1:{health}",
            env=env,
        )
        self.wait_for("opsync to become ready", lambda: answers(f"http://127.0.0.1:{health}/readyz"))
        self.detail(f"ready; metrics on {self.metrics}")

    def story(self) -> None:
        self.say("Applying a OnePasswordItem: kubectl apply -f examples/demo/item.yaml")
        self.kubectl("apply", "-f", str(ROOT / "examples/demo/item.yaml"))
        secret = self.wait_for("the Secret demo/db-credentials to appear", lambda: self.get("secret", "db-credentials"))
        self.detail(f"Secret demo/db-credentials appeared: {shape(secret)}")
        condition = self.wait_for("the item to be Ready", lambda: self.ready("db-credentials"))
        self.detail(f"OnePasswordItem demo/db-credentials: Ready=True ({condition['reason']})")

        self.say(
            "Applying a Deployment annotated with item-path, item-name and auto-restart: "
            "kubectl apply -f examples/demo/deployment.yaml"
        )
        self.kubectl("apply", "-f", str(ROOT / "examples/demo/deployment.yaml"))
        api_key = self.wait_for("the Secret demo/api-key to appear", lambda: self.get("secret", "api-key"))
        self.detail(f"Secret demo/api-key appeared: {shape(api_key)}")
        first = self.wait_for("the Deployment's first ReplicaSet", self.replicasets)
        # opsync rolls a workload for changes after it first recorded it: wait until it has.
        self.wait_for("opsync to record the Deployment", lambda: "opsync.dev/restart-versions" in self.annotations())
        self.detail(f"Deployment demo/web uses both Secrets; ReplicaSet {first[0]} (pods stay Pending: no kubelet)")

        self.say("Editing the item in 1Password: a new password for db-credentials (POST /__admin/items)")
        edit = {"vault": "Demo", "item": "db-credentials", "fields": {"password": secrets.token_urlsafe(24)}}
        version = json.loads(http(f"{self.connect}/__admin/items", edit))["version"]
        self.detail(f"item db-credentials is now at version {version}; opsync polls every 5 s")

        self.say("Waiting for the Secret to follow")
        after = self.wait_for(
            "the Secret demo/db-credentials to follow the item",
            lambda: (s := self.get("secret", "db-credentials")).get("data") != secret["data"] and s,
        )
        moved = [key for key, value in after["data"].items() if secret["data"].get(key) != value]
        versions = [s["metadata"]["annotations"]["operator.1password.io/item-version"] for s in (secret, after)]
        self.detail(
            f"Secret demo/db-credentials followed: {', '.join(moved)} changed, now {shape(after, moved)}; "
            f"item-version {versions[0]} -> {versions[1]}"
        )

        self.say("Waiting for the Deployment to roll")
        rolled = self.wait_for("the Deployment to roll", lambda: [rs for rs in self.replicasets() if rs not in first])
        restarted = self.annotations(template=True).get(RESTARTED)
        self.detail(f"Deployment demo/web rolled: {RESTARTED}={restarted}; new ReplicaSet {', '.join(rolled)}")
        counted = [
            line.removesuffix(".0")
            for line in http(self.metrics).decode().splitlines()
            if line.startswith(("opsync_secret_writes_total", "opsync_workload_restarts_total"))
            and not line.endswith(" 0.0")
        ]
        self.detail("metrics: " + ", ".join(counted))

    def keep_running(self) -> None:
        """Until Ctrl-C or SIGTERM (or a child exits), with hints for trying it by hand."""
        self.say("Running until Ctrl-C. Try it yourself:")
        self.detail(f"{self.kubectl_path} --kubeconfig {self.kubeconfig} -n {NS} get secrets,onepassworditems,rs")
        edit = json.dumps({"vault": "Demo", "item": "api-key", "fields": {"credential": "rotated"}})
        self.detail(f"curl -X POST {self.connect}/__admin/items -d '{edit}'   # then look at the ReplicaSets")
        self.detail(f"logs: {self.work}/*.log, metrics: {self.metrics}")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                self.check_children()
                time.sleep(1)


def interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    try:
        demo = Demo()
    except EnvtestError as error:  # no binaries: says to run `make envtest`
        out(f"demo: {error}", sys.stderr)
        return 1
    status = 1
    try:
        demo.start_everything()
        demo.story()
        if os.environ.get("DEMO_ONCE") == "1":
            demo.say("Done (DEMO_ONCE=1): stopping everything")
        else:
            demo.keep_running()
        status = 0
    except KeyboardInterrupt:
        out("\ninterrupted", sys.stderr)
        status = 130
    except (DemoError, OSError, subprocess.SubprocessError) as error:
        out(f"\ndemo failed: {error}", sys.stderr)
        for log in sorted(demo.work.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-15:]
            out("\n".join([f"--- last lines of {log}", *tail]), sys.stderr)
        out(f"logs kept in {demo.work}", sys.stderr)
    finally:
        demo.stop()
        if status != 1:  # logs are kept only when something failed
            shutil.rmtree(demo.work, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
