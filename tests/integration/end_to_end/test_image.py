"""The built image (``make image``): unpacked from its OCI archive and started with an OCI runtime, as UID 65532
on a read-only root filesystem: ``opsync version``, then ``opsync run`` as the chart runs it, against the
control plane and the Connect emulator, until a Secret is synced.

Opt-in: ``OPSYNC_IMAGE_ARCHIVE`` names the archive (``make image-test`` builds it and sets it). Needs root,
``umoci``, ``skopeo`` and an OCI runtime (``OPSYNC_OCI_RUNTIME``, default ``runc``; hack/image-tools.sh
installs them). The container shares the host's network, so it reaches the control plane and the emulator on
127.0.0.1; cgroups are left out of its configuration (the runtimes here cannot manage this machine's hybrid
cgroup hierarchy, and nothing here needs limits).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import os
import shutil
import textwrap
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from opsync import __version__
from opsync.client import Client, NotFoundError
from opsync.envtest import ControlPlane, free_ports
from opsync.resources import SECRETS
from tests.integration.chart.test_chart import TOKEN_FILE, container, installed_chart
from tests.support.dockerfile import image_config as dockerfile_image_config
from tests.support.harness import TOKEN, emulator_data, eventually
from tests.support.objects import opi

ARCHIVE = os.environ.get("OPSYNC_IMAGE_ARCHIVE", "")
RUNTIME = os.environ.get("OPSYNC_OCI_RUNTIME", "runc")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not ARCHIVE, reason="set OPSYNC_IMAGE_ARCHIVE to a built image (make image-test)"),
]
COMMAND_TIMEOUT = 120.0
KUBECONFIG = "/etc/opsync/kubeconfig"


async def run(*argv: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(COMMAND_TIMEOUT):
        stdout, stderr = await process.communicate()
    assert process.returncode == 0, f"{' '.join(argv)}: {stderr.decode()}"
    return stdout.decode()


class Image:
    """The archive unpacked once: its root filesystem and the runtime configuration umoci derived from it."""

    def __init__(self, root: Path, config: dict[str, Any], image_config: dict[str, Any]) -> None:
        self.root = root
        self.config = config
        self.image_config = image_config

    def bundle(self, where: Path, args: Sequence[str], env: Mapping[str, str], mounts: Mapping[str, Path]) -> Path:
        """A bundle running ``args`` (after the image's entrypoint) with ``env`` added and files bind-mounted
        read-only at the given paths; the root stays read-only and /tmp is a tmpfs, as in the chart."""
        config = copy.deepcopy(self.config)
        process = config["process"]
        process["terminal"] = False
        process["args"] = [*self.image_config["Entrypoint"], *args]
        process["env"] = [*process["env"], *(f"{k}={v}" for k, v in env.items())]
        config["root"] = {"path": str(self.root), "readonly": True}
        config["mounts"] = [m for m in config["mounts"] if not m["destination"].startswith("/sys/fs/cgroup")]
        config["mounts"].append(
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "size=64m"]}
        )
        for destination, source in mounts.items():
            config["mounts"].append(
                {"destination": destination, "type": "bind", "source": str(source), "options": ["rbind", "ro"]}
            )
        linux = config["linux"]
        linux["namespaces"] = [n for n in linux["namespaces"] if n["type"] != "network"]
        for key in ("resources", "cgroupsPath"):
            linux.pop(key, None)
        where.mkdir(parents=True, exist_ok=True)
        (where / "config.json").write_text(json.dumps(config))
        return where


@pytest.fixture(scope="module")
async def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    assert os.geteuid() == 0, "the image test runs containers: run it as root"
    for tool in ("skopeo", "umoci", RUNTIME):
        assert shutil.which(tool), f"{tool} is missing: run hack/image-tools.sh"
    work = tmp_path_factory.mktemp("image")
    await run("skopeo", "copy", "--quiet", f"oci-archive:{ARCHIVE}", f"oci:{work / 'layout'}:opsync")
    await run("umoci", "unpack", "--image", f"{work / 'layout'}:opsync", str(work / "bundle"))
    return Image(
        work / "bundle" / "rootfs",
        json.loads((work / "bundle" / "config.json").read_text()),
        json.loads(await run("skopeo", "inspect", "--config", f"oci-archive:{ARCHIVE}"))["config"],
    )


def process_name(bundle: Path) -> str:
    """The container's name: one per bundle."""
    return f"opsync-test-{bundle.parent.name}-{bundle.name}"[-60:]


@asynccontextmanager
async def started(bundle: Path, log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """The container running in the background, its output in ``log``; killed and deleted on exit."""
    name = process_name(bundle)
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            RUNTIME, "run", "--bundle", str(bundle), name, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            await asyncio.create_subprocess_exec(RUNTIME, "kill", name, "KILL")
            async with asyncio.timeout(COMMAND_TIMEOUT):
                await process.wait()
        await (await asyncio.create_subprocess_exec(RUNTIME, "delete", "--force", name)).wait()


async def run_to_end(image: Image, where: Path, *args: str) -> str:
    log = where / "output.log"
    async with started(image.bundle(where, args, {}, {}), log) as process:
        async with asyncio.timeout(COMMAND_TIMEOUT):
            code = await process.wait()
    output = log.read_text()
    assert code == 0, output
    return output


def test_the_image_is_configured_as_the_dockerfile_says(image: Image) -> None:
    dockerfile = dockerfile_image_config()
    assert image.image_config["User"] == dockerfile["User"] == "65532:65532"
    assert image.image_config["Entrypoint"] == dockerfile["Entrypoint"]
    assert image.image_config["Cmd"] == dockerfile["Cmd"] == ["run"]
    assert image.image_config["WorkingDir"] == dockerfile["WorkingDir"]
    assert set(dockerfile["Env"]) <= set(image.image_config["Env"])
    assert image.config["process"]["user"]["uid"] == 65532


async def test_the_entrypoint_prints_the_version(image: Image, tmp_path: Path) -> None:
    assert await run_to_end(image, tmp_path, "version") == f"opsync {__version__}\n"


async def test_it_runs_as_65532_on_a_read_only_root_with_public_cas_and_no_shell_or_compiler(
    image: Image, tmp_path: Path
) -> None:
    # The image's own interpreter probes the container it runs in (the entrypoint is `python3.11 -m opsync`;
    # this replaces only the module).
    probe = textwrap.dedent("""
        import os, shutil, ssl, tempfile
        try:
            open("/opt/opsync/x", "w")
            root = "writable"
        except OSError as e:
            root = e.strerror
        tempfile.NamedTemporaryFile().close()  # /tmp is writable
        tools = ("sh", "bash", "dash", "busybox", "gcc", "cc", "apt-get", "dpkg", "pip", "awk")
        authorities = len(ssl.create_default_context().get_ca_certs()) > 100  # Connect over public TLS
        print(os.getuid(), os.getgid(), root, [t for t in tools if shutil.which(t)], authorities)
    """)
    config = image.image_config
    assert config["Entrypoint"][-2:] == ["-m", "opsync"]
    where = tmp_path / "probe"
    image_with_probe = Image(image.root, image.config, {**config, "Entrypoint": config["Entrypoint"][:-2]})
    output = await run_to_end(image_with_probe, where, "-c", probe)
    assert output == "65532 65532 Read-only file system [] True\n"


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    items = [{"title": "db", "fields": [{"label": "password", "value": "from-the-image"}]}]
    async with Emulator(emulator_data({"k8s": items})) as emu:
        yield emu


async def test_opsync_run_in_the_image_syncs_an_item_as_the_chart_runs_it(
    image: Image, control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, tmp_path: Path
) -> None:
    metrics_port, health_port = free_ports(2)
    values = {
        "replicas": 0,
        "watchNamespace": [namespace],
        "connect": {"host": emulator.url},
        "metrics": {"port": metrics_port},
        "probes": {"port": health_port},
    }
    async with installed_chart(control_plane, namespace, values) as chart:
        # The chart's own container arguments and environment; what the kubelet would provide comes from files.
        operator = container(chart.objects)
        env = {e["name"]: e["value"] for e in operator["env"] if "value" in e}
        env |= {"POD_NAMESPACE": namespace, "KUBECONFIG": KUBECONFIG}
        # Owned by the pod's user, as the kubelet makes mounted Secrets with fsGroup 65532.
        token, kubeconfig = tmp_path / "token", tmp_path / "kubeconfig"
        token.write_text(TOKEN)
        shutil.copyfile(chart.kubeconfig, kubeconfig)
        for file in (token, kubeconfig):
            os.chown(file, 65532, 65532)
            file.chmod(0o400)
        bundle = image.bundle(tmp_path / "bundle", operator["args"], env, {TOKEN_FILE: token, KUBECONFIG: kubeconfig})
        await kube.create(ONEPASSWORDITEMS, opi("db", "vaults/k8s/items/db"), namespace)
        log = tmp_path / "opsync.log"
        async with started(bundle, log) as process:

            async def synced() -> bool:
                assert process.returncode is None, log.read_text()
                try:
                    secret = await kube.get(SECRETS, "db", namespace)
                except NotFoundError:
                    return False
                return secret.get("data", {}).get("password") == base64.b64encode(b"from-the-image").decode()

            await eventually(synced, timeout=60, message=lambda: log.read_text()[-2000:])
            # The chart's metrics port serves, from inside the container.
            timeout = aiohttp.ClientTimeout(total=10)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response,
            ):
                assert 'opsync_secret_writes_total{reason="create"} 1.0' in await response.text()
            # Stopped as the kubelet stops it: SIGTERM, then a clean exit.
            await run(RUNTIME, "kill", process_name(bundle), "TERM")
            async with asyncio.timeout(30):
                assert await process.wait() == 0, log.read_text()[-2000:]
