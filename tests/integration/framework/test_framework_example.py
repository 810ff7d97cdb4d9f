"""The ConfigMap mirror of docs/framework.md, run against a real control plane."""

from __future__ import annotations

import asyncio
import importlib.util
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest

from opsync.client import Client, NotFoundError
from opsync.manager import Manager
from opsync.resources import CONFIGMAPS, NAMESPACES, KubeObject
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "mirror.py"


def load_example() -> ModuleType:
    """Import examples/mirror.py by path (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location("opsync_example_mirror", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_doc_shows_the_example_as_it_is() -> None:
    doc = (ROOT / "docs" / "framework.md").read_text()
    assert EXAMPLE.read_text() in doc
    assert len(EXAMPLE.read_text().splitlines()) < 50


@pytest.fixture
async def targets(kube: Client) -> AsyncIterator[list[str]]:
    """Two more namespaces to mirror into."""
    names = [f"mirror-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for name in names:
        await kube.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield names
    for name in names:
        await kube.delete(NAMESPACES, name)


async def mirrors_are(kube: Client, expected: dict[str, dict[str, str] | None]) -> bool:
    """Whether each namespace's mirror has the expected data (None: there is no mirror)."""
    for namespace, data in expected.items():
        try:
            found: KubeObject = await kube.get(CONFIGMAPS, "shared", namespace)
        except NotFoundError:
            found = {"data": None}
        if found.get("data") != data:
            return False
    return True


async def test_mirror_example(kube: Client, namespace: str, targets: list[str]) -> None:
    first, second = targets
    manager = Manager(kube, health_probe_bind_address="0", metrics_bind_address="0")
    load_example().setup(manager)
    stopping = asyncio.Event()
    run = asyncio.create_task(manager.run(stopping))
    try:
        source = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "shared",
                "labels": {"opsync.dev/mirror": "true"},
                "annotations": {"opsync.dev/mirror-to": ",".join(targets)},
            },
            "data": {"greeting": "hello"},
        }
        await kube.create(CONFIGMAPS, source, namespace)
        hello, bye = {"greeting": "hello"}, {"greeting": "bye"}
        await eventually(lambda: mirrors_are(kube, {first: hello, second: hello}))

        await kube.patch(CONFIGMAPS, "shared", {"data": {"greeting": "bye"}}, namespace)
        await eventually(lambda: mirrors_are(kube, {first: bye, second: bye}))

        await kube.delete(CONFIGMAPS, "shared", first)  # a deleted mirror comes back
        await eventually(lambda: mirrors_are(kube, {first: bye, second: bye}))

        annotations = {"opsync.dev/mirror-to": first}
        await kube.patch(CONFIGMAPS, "shared", {"metadata": {"annotations": annotations}}, namespace)
        await eventually(lambda: mirrors_are(kube, {first: bye, second: None}))  # no longer wanted

        await kube.delete(CONFIGMAPS, "shared", namespace)
        await eventually(lambda: mirrors_are(kube, {first: None, second: None}))  # source gone: mirrors go
    finally:
        stopping.set()
        async with asyncio.timeout(60):
            await run
