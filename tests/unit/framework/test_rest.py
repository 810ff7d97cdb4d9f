"""``opsync.rest``: kubernetes-asyncio's transport and config loaders work without the package's generated
classes, and the whole package still loads, unchanged, for any code that asks for more."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: not-a-secret}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def run(code: str, tmp_path: Path) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; it prints a JSON object."""
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=tmp_path,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_a_client_is_built_from_a_kubeconfig_without_the_generated_classes(tmp_path: Path) -> None:
    result = run(
        """
        import asyncio, json, sys
        from opsync.client import Client

        async def main():
            client = await Client.from_kubeconfig("kubeconfig")
            try:
                return client.host, client._configuration.api_key
            finally:
                await client.close()

        host, api_key = asyncio.run(main())
        prefixes = ("kubernetes_asyncio.client.api.", "kubernetes_asyncio.client.models.")
        generated = sorted(m for m in sys.modules if m.startswith(prefixes))
        print(json.dumps({"host": host, "auth": api_key, "generated": generated}))
        """,
        tmp_path,
    )
    assert result == {
        "host": "https://127.0.0.1:6443",
        "auth": {"BearerToken": "Bearer not-a-secret"},
        "generated": [],
    }


def test_the_package_loads_in_full_when_asked_for_more(tmp_path: Path) -> None:
    result = run(
        """
        import json
        import opsync.rest
        import kubernetes_asyncio
        from kubernetes_asyncio import client, watch
        from kubernetes_asyncio.client import Configuration, V1Secret
        from kubernetes_asyncio.config import load_kube_config, new_client_from_config
        from kubernetes_asyncio.client.api import CoreV1Api
        secret = V1Secret(metadata=client.V1ObjectMeta(name="s"), string_data={"k": "v"})
        try:
            client.NotAName
            missing = "loaded"
        except AttributeError:
            missing = "AttributeError"
        print(json.dumps({
            "same Configuration": Configuration is opsync.rest.Configuration,
            "config": [load_kube_config.__name__, new_client_from_config.__name__],
            "CoreV1Api": CoreV1Api is client.CoreV1Api,
            "secret": secret.metadata.name,
            "models": client.models.V1Pod.__name__,
            "watch": watch.Watch.__name__,
            "version": kubernetes_asyncio.__version__ is not None,
            "missing": missing,
        }))
        """,
        tmp_path,
    )
    assert result == {
        "same Configuration": True,
        "config": ["load_kube_config", "new_client_from_config"],
        "CoreV1Api": True,
        "secret": "s",
        "models": "V1Pod",
        "watch": "Watch",
        "version": True,
        "missing": "AttributeError",
    }


def test_nothing_changes_when_the_package_was_imported_first(tmp_path: Path) -> None:
    result = run(
        """
        import json
        from kubernetes_asyncio import client
        import opsync.rest
        same = opsync.rest.Configuration is client.Configuration
        print(json.dumps({"same": same, "deferred": "__getattr__" in vars(client)}))
        """,
        tmp_path,
    )
    assert result == {"same": True, "deferred": False}


def test_the_kubeconfig_loader_is_imported_when_a_kubeconfig_is_read(tmp_path: Path) -> None:
    """Neither that loader nor the ``ApiClient`` it needs (with dateutil's parser and multiprocessing's pool) is
    imported before, so ``opsync run`` in a pod never loads them (tests/unit/operator/test_run_imports.py)."""
    result = run(
        """
        import asyncio, json, sys
        import controllers.main
        from opsync.client import Client

        watched = ("kubernetes_asyncio.client.api_client", "kubernetes_asyncio.config.kube_config",
                   "dateutil.parser", "multiprocessing.pool")
        before = [m for m in watched if m in sys.modules]

        async def main():
            client = await Client.from_kubeconfig("kubeconfig")
            await client.close()

        asyncio.run(main())
        print(json.dumps({"before": before, "after": [m for m in watched if m in sys.modules]}))
        """,
        tmp_path,
    )
    assert result == {
        "before": [],
        "after": [
            "kubernetes_asyncio.client.api_client",
            "kubernetes_asyncio.config.kube_config",
            "dateutil.parser",
            "multiprocessing.pool",
        ],
    }
