"""What ``opsync run`` imports: an operator on Connect loads neither Jinja2, nor 1Password's SDK, nor
kubernetes-asyncio's generated API and model classes, nor (until it reads a kubeconfig: never in a pod) its
``ApiClient`` and kubeconfig loader, whose imports cost megabytes it would never use (docs/benchmarks.md,
"Memory"; the kubeconfig side: tests/unit/framework/test_rest.py)."""

from __future__ import annotations

import json
import subprocess
import sys

NOT_ON_THE_RUN_PATH = (
    "jinja2",
    "onepassword",
    "onepassword_access.sdk",
    "onepassword_access.emulator",
    "matplotlib",
    "kubernetes_asyncio.client.api",
    "kubernetes_asyncio.client.models.v1_secret",
    "kubernetes_asyncio.watch",
    "kubernetes_asyncio.client.api_client",
    "kubernetes_asyncio.config.kube_config",
    "dateutil.parser",
    "multiprocessing.pool",
)


def loaded_after(statement: str) -> set[str]:
    """The modules of ``NOT_ON_THE_RUN_PATH`` a fresh interpreter has loaded after ``statement``."""
    code = f"import json, sys; {statement}; print(json.dumps(sorted(set(sys.modules) & set({NOT_ON_THE_RUN_PATH!r}))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return set(json.loads(out.stdout))


def test_the_run_command_imports_none_of_them() -> None:
    assert loaded_after("import controllers.main") == set()


def test_they_are_loaded_when_used() -> None:
    used = "import onepassword_access; onepassword_access.SdkBackend; import controllers.templating"
    assert loaded_after(used) >= {"jinja2", "onepassword", "onepassword_access.sdk"}
    kubernetes = "import controllers.main; import kubernetes_asyncio; kubernetes_asyncio.client.V1Secret"
    assert loaded_after(kubernetes) >= {"kubernetes_asyncio.client.api", "kubernetes_asyncio.client.models.v1_secret"}
