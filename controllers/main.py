"""``opsync run``: settings → logging → Kubernetes and Connect clients → the operator, until SIGTERM.

``build_operator`` assembles everything on a ``Manager`` without running it, so tests, benchmarks and the
command share one wiring:

- the ``onepassworditem`` controller (``controllers.items``);
- the ``workload-secrets`` controller (``controllers.workloads``);
- one restart controller per workload kind (``controllers.rollouts``);
- the leader-only ``connect-poller`` (``controllers.poller``);
- with ``MANAGE_CONNECT=true``, the leader-only ``connect-setup`` (``controllers.connect_setup``);
- one ``ItemFetcher`` shared by all of them, so each item version is fetched from 1Password once.

They reach 1Password through one ``onepassword_access.backend.Backend``, made by ``access_backend``: Connect,
or a service account through the SDK (``OP_SERVICE_ACCOUNT_TOKEN``). Nothing else knows which.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
from dataclasses import dataclass, field
from pathlib import Path

from controllers import config
from controllers.access import AccessControl
from controllers.config import Settings
from controllers.connect_setup import ConnectSetup, operator_namespace
from controllers.constants import ITEM_PATH_ANNOTATION, ConditionReason
from controllers.crdschema import ServedCrd, ServedStatus, read_served_crd
from controllers.desired import operator_annotations
from controllers.fetcher import ItemFetcher
from controllers.items import ItemOptions, ItemReconciler, setup_items
from controllers.metrics import SDK_CALLS, count_connect_request
from controllers.poller import Handoff, Poller
from controllers.resources import ONEPASSWORDITEMS
from controllers.rollouts import setup_restarts
from controllers.secrets import SecretWriter, managed_secrets
from controllers.shaping import item_paths
from controllers.status import ready_of
from controllers.watch import NamespaceMetadata, SelectedNamespaces
from controllers.workloads import WorkloadOptions, Workloads, WorkloadSecretReconciler, setup_workloads
from onepassword_access.backend import Backend, ConnectBackend
from onepassword_access.client import ConnectClient
from onepassword_access.errors import ConnectError
from onepassword_access.resolve import ItemResolver
from opsync import __version__
from opsync.client import Client
from opsync.controller import Controller
from opsync.leader import LeaderElectionConfig, LeaderElectionLost
from opsync.logging import setup_logging
from opsync.manager import Manager
from opsync.reconcile import Request
from opsync.resources import KubeObject
from opsync.rest import ConfigException
from opsync.scavenger import Scavenger
from opsync.source import Channel

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
OUTSIDE_A_POD = "outside a pod, give --kubeconfig or set KUBECONFIG"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """The flags of ``opsync run`` (the Go operator's; see ``controllers.config``)."""
    config.configure_parser(parser)


@dataclass
class Operator:
    """The assembled operator: run ``manager`` (``run`` also releases what the manager does not own)."""

    manager: Manager
    fetcher: ItemFetcher
    poller: Poller
    item_controller: Controller
    workload_controller: Controller
    restart_controllers: list[Controller]
    served: ServedStatus = field(default_factory=ServedStatus)
    """What the served OnePasswordItem CRD keeps of an item's status (shared with the item reconciler)."""

    @property
    def controllers(self) -> list[Controller]:
        """Every controller, the item controller first."""
        return [self.item_controller, self.workload_controller, *self.restart_controllers]

    async def run(self, stopping: asyncio.Event | None = None) -> None:
        """Run until ``stopping`` is set (or SIGTERM/SIGINT when it is None)."""
        try:
            await self.check_crd()
            await self.manager.run(stopping)
        finally:
            await self.fetcher.close()

    async def check_crd(self) -> ServedCrd:
        """Read the served CRD once, before reconciling: tell ``served`` what it drops, and warn in one line when
        it is older than opsync's (or cannot be read)."""
        found = await read_served_crd(self.manager.client)
        if found.dropped is not None:
            self.served.dropped = frozenset(found.dropped)
        if found.dropped is None or found.outdated:
            log.warning(found.describe())
        return found


def leader_election_namespace(settings: Settings) -> str:
    """``--leader-election-namespace``, else the namespace opsync runs in."""
    if settings.leader_election_namespace:
        return settings.leader_election_namespace
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    except OSError:
        raise config.ConfigError(
            "--leader-election-namespace", "needed when opsync does not run in a pod (no service account namespace)"
        ) from None


def build_operator(settings: Settings, client: Client, backend: Backend) -> Operator:
    """Everything ``opsync run`` runs, on a new ``Manager`` (not started)."""
    leader = None
    if settings.leader_elect:
        leader = LeaderElectionConfig(name=settings.leader_election_id, namespace=leader_election_namespace(settings))
    # With a namespace selector the cache starts with no namespace and SelectedNamespaces fills it in.
    selector = settings.watch_namespace_selector
    manager = Manager(
        client,
        namespaces=[] if selector else list(settings.watch_namespaces) or None,
        leader_election=leader,
        health_probe_bind_address=settings.health_probe_bind_address,
        metrics_bind_address=settings.metrics_bind_address,
    )
    fetcher = ItemFetcher(ItemResolver(backend))
    writer = SecretWriter(client, managed_secrets(manager.cache))
    namespaces = NamespaceMetadata(manager.cache, settings.watch_namespaces, selector=selector)
    access = AccessControl(manager.cache, namespaces, mode=settings.access_policy)
    served = ServedStatus()
    items = ItemReconciler(
        manager,
        fetcher,
        writer,
        ItemOptions(allow_empty_values=settings.allow_empty_values, enable_annotations=settings.enable_annotations),
        access,
        served=served,
    )
    if selector:
        SelectedNamespaces(manager.cache, namespaces.informers[0], on_change=items.keep_namespaces)
    workloads = Workloads(manager.cache)
    workload_options = WorkloadOptions(
        allow_empty_values=settings.allow_empty_values, auto_restart=settings.auto_restart
    )
    workload_secrets = WorkloadSecretReconciler(manager, workloads, fetcher, writer, workload_options, access=access)

    def prefetchable(request: Request) -> list[str]:
        opi = items.items.get(request.namespace, request.name)
        if opi is None:
            paths = [path] if (path := workload_secrets.item_path(request.namespace, request.name)) else []
        else:
            paths = item_paths(opi.get("spec") or {})
        ready = ready_of(opi) if opi is not None else None
        denied_before = ready is not None and ready.get("reason") == ConditionReason.ACCESS_DENIED
        return [path for path in paths if access.admits(request.namespace, path, denied_before=denied_before)]

    handoff = Handoff(
        manager.cache.informer(ONEPASSWORDITEMS),
        item_changes=Channel(),
        workload_changes=Channel(),
        connect_unavailable=lambda: items.reporting(ConditionReason.CONNECT_UNAVAILABLE),
        prefetchable=prefetchable,
    )
    item_controller = setup_items(manager, items, changes=handoff.item_changes, workers=settings.workers)
    workload_controller = setup_workloads(
        manager,
        workload_secrets,
        workloads=workloads,
        writer=writer,
        access=access,
        changes=handoff.workload_changes,
        workers=settings.workers,
    )
    restart_controllers = setup_restarts(
        manager,
        workloads=workloads,
        secrets=writer.secrets,
        namespaces=namespaces,
        options=workload_options,
        workers=settings.workers,
    )

    # The item paths every OnePasswordItem, workload and managed Secret names, read on each poll from an index
    # rather than by decoding every cached object.
    items.items.add_indexer(ITEM_PATHS_INDEX, lambda opi: item_paths(opi.get("spec") or {}))
    naming = [*workloads.informers.values(), writer.secrets]
    for informer in naming:
        informer.add_indexer(ITEM_PATHS_INDEX, _annotated_item_path)

    def paths_in_use() -> set[str]:
        return {path for informer in (items.items, *naming) for path in informer.index_values(ITEM_PATHS_INDEX)}

    poller = Poller(
        backend=backend,
        fetcher=fetcher,
        secrets=writer.secrets,
        handoff=handoff,
        interval=settings.polling_interval,
        paths_in_use=paths_in_use,
    )
    manager.add(poller)
    manager.add(Scavenger(), leader_only=False)
    if settings.manage_connect:
        manager.add(ConnectSetup(client, operator_namespace()))
    return Operator(manager, fetcher, poller, item_controller, workload_controller, restart_controllers, served)


ITEM_PATHS_INDEX = "opsync.dev/item-paths"


def _annotated_item_path(obj: KubeObject) -> list[str]:
    path = operator_annotations(obj).get(ITEM_PATH_ANNOTATION)
    return [path] if path else []


def connect_client(settings: Settings) -> ConnectClient:
    """The Connect client for ``settings`` (reads the CA file: call before the event loop is busy)."""
    if settings.connect_host is None or settings.connect_token is None:
        raise config.ConfigError("OP_CONNECT_HOST", "not set; this needs a 1Password Connect server")
    ca_file = str(settings.connect_ca_file) if settings.connect_ca_file else None
    token = settings.connect_token.get_secret_value()
    token_file = str(settings.connect_token_file) if settings.connect_token_file else None
    return ConnectClient(
        settings.connect_host, token, ca_file=ca_file, token_file=token_file, observers=[count_connect_request]
    )


def _count_sdk_call(operation: str, outcome: str) -> None:
    SDK_CALLS.labels(operation=operation, outcome=outcome).inc()


def access_backend(settings: Settings) -> Backend:
    """How ``settings`` reach 1Password: the SDK with a service-account token, else Connect. Not signed in yet
    (``sign_in`` does it)."""
    if settings.service_account_token is not None:
        from onepassword_access.sdk import SdkBackend  # noqa: PLC0415 -- the SDK is loaded only when used

        token = settings.service_account_token.get_secret_value()
        token_file = str(settings.service_account_token_file) if settings.service_account_token_file else None
        return SdkBackend(token, integration_version=__version__, on_call=_count_sdk_call, token_file=token_file)
    return ConnectBackend(connect_client(settings))


async def sign_in(backend: Backend) -> None:
    """With a service account, sign in now: a token the SDK refuses offline is a bad setting
    (``ConfigError``); 1Password refusing or not answering is not, and is retried by every later call (the
    items then say ``Unauthorized`` or ``ConnectUnavailable``, and no Secret is touched)."""
    if backend.name != "sdk":  # Connect signs in with every request; its process never imports the SDK
        return
    from onepassword_access.sdk import SdkBackend, TokenFormatError  # noqa: PLC0415 -- as in access_backend

    if not isinstance(backend, SdkBackend):
        return
    try:
        await backend.authenticate()
    except TokenFormatError as err:
        raise config.ConfigError("OP_SERVICE_ACCOUNT_TOKEN", f"the 1Password SDK refused it: {err}") from None
    except ConnectError as err:
        log.warning("cannot sign in to 1Password yet; retrying with every request: %s", err)


async def kubernetes_client(settings: Settings) -> Client:
    """A client from ``--kubeconfig``/``KUBECONFIG``, else the pod's service account."""
    http2, health = not settings.disable_http2, settings.http2_health
    if settings.kubeconfig:
        return await Client.from_kubeconfig(settings.kubeconfig, http2=http2, http2_health=health)
    return Client.in_cluster(http2=http2, http2_health=health)


async def _run(settings: Settings) -> int:
    backend = access_backend(settings)
    try:
        await sign_in(backend)
        async with await kubernetes_client(settings) as client:
            operator = build_operator(settings, client, backend)
            log.info(
                "starting opsync",
                extra={
                    "namespaces": ",".join(settings.watch_namespaces) or "*",
                    "namespaceSelector": settings.watch_namespace_selector or "",
                    "pollingInterval": settings.polling_interval,
                    "onepassword": settings.connect_host or "service account",
                },
            )
            await operator.run()
    finally:
        await backend.close()
    return 0


def raise_open_file_limit() -> None:
    """Raise this process's soft limit on open files to its hard limit, as the Go runtime does for every Go
    program since Go 1.19.

    Every open watch holds a socket, nine per watched namespace, and some container runtimes start
    processes with a soft limit of 1,024 (containerd 2) that a hundred watched namespaces would exhaust.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or (hard != resource.RLIM_INFINITY and soft >= hard):
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as err:  # a hard limit above the kernel's nr_open: keep the soft one
        log.info("open files limit stays at %d (raising it to %s failed: %s)", soft, hard, err)


def main(args: argparse.Namespace) -> int:
    """``opsync run``: exits 0 after a clean shutdown, 1 when the operator failed, 2 on bad configuration."""
    settings = config.settings_or_exit(args, os.environ)
    setup_logging(settings.log_level, settings.log_format)
    raise_open_file_limit()
    for warning in settings.warnings:
        log.warning(warning)
    try:
        return asyncio.run(_run(settings))
    except config.ConfigError as error:
        config.print_error(error)
        return 2
    except ConfigException as error:
        log.error("cannot load Kubernetes credentials: %s (%s)", error, OUTSIDE_A_POD)
        return 2
    except LeaderElectionLost:
        log.error("lost the leader election lease; exiting so that a restart campaigns again")
        return 1
    except Exception:
        log.exception("opsync failed")
        return 1
