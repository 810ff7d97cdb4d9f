"""One item cannot take opsync down for every tenant (issue 16): answers are bounded.

Connect: opsync runs as its own process under a 256 MiB data limit (the chart's memory limit) while one item
has a 50 MiB file and another 100,000 fields: both go ``Ready=False`` with a clear reason, the big file is
never downloaded (refused from its metadata), the big item is refused after its first 4 MiB, and an ordinary
item in the same vault keeps syncing, also after it changes.

The service-account backend (the SDK, whose native core reads 1Password's answers itself): the same items
get the same reasons, with the item bound applied to what the SDK hands over (docs/security.md says what
that bounds). In-process, since the emulated SDK core replaces the native one in this process only, so
memory is not measured here.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.emulator import Emulator
from onepassword_access.limits import MAX_FILE_BYTES, MAX_ITEM_BYTES, MIB
from opsync.client import Client
from opsync.envtest import ControlPlane
from opsync.resources import SECRETS
from tests.support.harness import SDK, emulator_data, run_operator
from tests.support.objects import get_or_none, opi, wait_for_data, wait_for_ready
from tests.support.processes import OpsyncProcess

pytestmark = pytest.mark.integration

VAULT = "big"
MEMORY_LIMIT = 256 * MIB
# Sets the data limit (heap and anonymous mappings: what an OOM kill under a memory limit is about), then
# becomes `python -m opsync run ...`.
LIMITED = (
    "import os, resource, sys; "
    f"resource.setrlimit(resource.RLIMIT_DATA, ({MEMORY_LIMIT}, {MEMORY_LIMIT})); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    items = [
        {"title": "huge-file", "files": [{"name": "disk.img", "content": "x" * (50 * MIB)}]},
        {"title": "many-fields", "fields": [{"label": f"f{i}", "value": "v"} for i in range(100_000)]},
        {"title": "ok", "fields": [{"label": "password", "value": "v1"}]},
    ]
    async with Emulator(emulator_data({VAULT: items})) as emu:
        yield emu


async def test_a_huge_file_and_a_huge_item_fail_alone_under_the_memory_limit(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator, tmp_path: Path
) -> None:
    opsync = OpsyncProcess.run(control_plane.kubeconfig_path, emulator, namespace, tmp_path / "opsync.log")
    opsync.argv = [sys.executable, "-c", LIMITED, *opsync.argv]
    await opsync.start()
    try:
        for title in ("huge-file", "many-fields", "ok"):
            await kube.create(ONEPASSWORDITEMS, opi(title, f"vaults/{VAULT}/items/{title}"), namespace)
        await wait_for_data(kube, namespace, "ok", {"password": "v1"}, timeout=60)

        file_refused = await wait_for_ready(kube, namespace, "huge-file", "False", "SecretTooLarge")
        expected = f"is too large: the file is {50 * MIB} bytes; a Secret holds at most {MAX_FILE_BYTES} bytes"
        assert expected in file_refused["message"]
        item_refused = await wait_for_ready(kube, namespace, "many-fields", "False", "SecretTooLarge")
        assert f"the answer is larger than opsync accepts ({MAX_ITEM_BYTES // MIB} MiB)" in item_refused["message"]
        assert not any(route.endswith("/content") for route in emulator.request_counts)

        emulator.update_item(VAULT, "ok", fields={"password": "v2"})
        await wait_for_data(kube, namespace, "ok", {"password": "v2"}, timeout=60)
        assert opsync.process is not None and opsync.process.returncode is None, "opsync died"
        peak = _peak_rss(opsync.pid)
        print(f"opsync peak RSS {peak / MIB:.0f} MiB (data limit {MEMORY_LIMIT // MIB} MiB)")
    finally:
        code = await opsync.stop()
    assert code == 0, opsync.output()[-4000:]


async def test_with_the_sdk_a_huge_file_and_a_huge_item_fail_alone(
    control_plane: ControlPlane, kube: Client, namespace: str, emulator: Emulator
) -> None:
    async with run_operator(control_plane, emulator, SDK, namespaces=[namespace]):
        for title in ("huge-file", "many-fields", "ok"):
            await kube.create(ONEPASSWORDITEMS, opi(title, f"vaults/{VAULT}/items/{title}"), namespace)
        await wait_for_data(kube, namespace, "ok", {"password": "v1"}, timeout=60)
        file_refused = await wait_for_ready(kube, namespace, "huge-file", "False", "SecretTooLarge")
        expected = f"is too large: the file is {50 * MIB} bytes; a Secret holds at most {MAX_FILE_BYTES} bytes"
        assert expected in file_refused["message"]
        item_refused = await wait_for_ready(kube, namespace, "many-fields", "False", "SecretTooLarge")
        assert f"the item is larger than opsync accepts ({MAX_ITEM_BYTES // MIB} MiB)" in item_refused["message"]
        assert emulator.request_counts["SDK ItemsFilesRead"] == 0  # refused from its metadata
        for title in ("huge-file", "many-fields"):
            assert await get_or_none(kube, SECRETS, title, namespace) is None

        emulator.update_item(VAULT, "ok", fields={"password": "v2"})
        await wait_for_data(kube, namespace, "ok", {"password": "v2"}, timeout=60)


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0
