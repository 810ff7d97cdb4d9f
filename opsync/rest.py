"""kubernetes-asyncio's transport and config loaders, imported without its generated API and model classes.

``opsync.client`` uses four things from kubernetes-asyncio: ``ApiClient.call_api`` (auth headers, token
refresh, TLS), ``Configuration``, and the kubeconfig and in-cluster loaders. It sends and receives plain
JSON, so it never reaches the generated code. But the package's ``__init__`` imports all of it, and
``api_client`` imports every model: about 850 modules and 33 MiB of resident memory (measured in
docs/benchmarks.md), more than the rest of ``opsync run`` together.

So this module puts the three package modules (``kubernetes_asyncio``, ``.client``, ``.client.models``) in
``sys.modules`` first, built from their real specs with their ``__init__`` not yet run, and imports the
submodules it needs straight from the package's files. A package's ``__init__`` runs in full, from the
installed file, the first time anything asks it for a name it does not yet hold (PEP 562 ``__getattr__``):
``kubernetes_asyncio.client.V1Secret`` still works for any other code in the process. When the package is
already imported, this changes nothing.

Import kubernetes-asyncio through this module, never directly, in code that ``opsync run`` loads.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from typing import Any

__all__ = ["ApiClient", "ConfigException", "Configuration", "load_incluster_config", "load_kube_config"]

_DEFERRED = ("kubernetes_asyncio", "kubernetes_asyncio.client", "kubernetes_asyncio.client.models")


def _defer_init(name: str) -> None:
    """Register package ``name`` (its parent already registered) with its ``__init__`` deferred."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not an installed package")
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def run_init(attribute: str) -> Any:
        # A submodule is imported as an import statement would (``from package import submodule`` asks for
        # the name first); any other name runs the ``__init__``, once: after that, a missing name is an
        # AttributeError as in any module.
        if importlib.machinery.PathFinder.find_spec(f"{name}.{attribute}", module.__path__) is not None:
            return importlib.import_module(f"{name}.{attribute}")
        del module.__dict__["__getattr__"]
        loader.exec_module(module)
        return getattr(module, attribute)

    module.__dict__["__getattr__"] = run_init
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)


if _DEFERRED[0] not in sys.modules:
    for _name in _DEFERRED:
        _defer_init(_name)

# The imports must follow the deferral above.
from kubernetes_asyncio.client.api_client import ApiClient  # noqa: E402
from kubernetes_asyncio.client.configuration import Configuration  # noqa: E402

# The config loaders ask ``kubernetes_asyncio.client`` for these two names; held here, they do not run its
# ``__init__``. Setting them is harmless when the package was imported in full: they are the same objects.
setattr(sys.modules["kubernetes_asyncio.client"], "ApiClient", ApiClient)  # noqa: B010 -- not typed as holding it
setattr(sys.modules["kubernetes_asyncio.client"], "Configuration", Configuration)  # noqa: B010

from kubernetes_asyncio.config import (  # noqa: E402
    ConfigException,
    load_incluster_config,
    load_kube_config,
)
