"""kubernetes-asyncio's transport and config loaders, imported without its generated API and model classes.

``opsync.client`` uses four things from kubernetes-asyncio: ``Configuration`` (host, TLS, credentials and
their refresh), ``RESTClientObject`` (the aiohttp session those make), and the in-cluster and kubeconfig
loaders. It sends and receives plain JSON, so it never reaches the generated code. But the package's
``__init__`` imports all of it, and ``client``'s imports every model: about 850 modules and 33 MiB of resident
memory (measured in docs/benchmarks.md), more than the rest of ``opsync run`` together.

So this module puts the four package modules (``kubernetes_asyncio``, ``.client``, ``.client.models``,
``.config``) in ``sys.modules`` first, built from their real specs with their ``__init__`` not yet run, and
imports the submodules it needs straight from the package's files. A package's ``__init__`` runs in full,
from the installed file, the first time anything asks it for a name it does not yet hold (PEP 562
``__getattr__``): ``kubernetes_asyncio.client.V1Secret`` still works for any other code in the process. When
the package is already imported, this changes nothing.

The kubeconfig loader is imported when first used (``load_kube_config``): its module needs ``ApiClient``,
whose module imports dateutil's parser and multiprocessing's thread pool. With the loader that is 2 MiB of
resident memory (docs/benchmarks.md) that a pod on its in-cluster configuration never uses.

Import kubernetes-asyncio through this module, never directly, in code that ``opsync run`` loads.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from typing import Any

__all__ = ["ConfigException", "Configuration", "RESTClientObject", "load_incluster_config", "load_kube_config"]

_DEFERRED = (
    "kubernetes_asyncio",
    "kubernetes_asyncio.client",
    "kubernetes_asyncio.client.models",
    "kubernetes_asyncio.config",
)


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
from kubernetes_asyncio.client.configuration import Configuration  # noqa: E402
from kubernetes_asyncio.client.rest import RESTClientObject  # noqa: E402

# The config loaders ask ``kubernetes_asyncio.client`` for this name (the kubeconfig loader for ``ApiClient``
# too, set when it is imported); held here, it does not run its ``__init__``. Setting it is harmless when the
# package was imported in full: it is the same object.
setattr(sys.modules["kubernetes_asyncio.client"], "Configuration", Configuration)  # noqa: B010 -- not typed as holding it

from kubernetes_asyncio.config.config_exception import ConfigException  # noqa: E402
from kubernetes_asyncio.config.incluster_config import load_incluster_config  # noqa: E402


async def load_kube_config(
    *, config_file: str | None, context: str | None, client_configuration: Configuration
) -> None:
    """kubernetes-asyncio's ``load_kube_config`` into ``client_configuration`` (a refreshed credential is never
    written back to the file), its module imported on the first call."""
    from kubernetes_asyncio.client.api_client import ApiClient  # noqa: PLC0415 -- only with a kubeconfig

    setattr(sys.modules["kubernetes_asyncio.client"], "ApiClient", ApiClient)  # noqa: B010 -- as above
    from kubernetes_asyncio.config.kube_config import load_kube_config as load  # noqa: PLC0415

    await load(
        config_file=config_file, context=context, client_configuration=client_configuration, persist_config=False
    )
