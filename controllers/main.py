"""``opsync run``: settings → logging → Kubernetes and Connect clients → the operator, until SIGTERM.

``build_operator`` assembles everything on a ``Manager`` without running it, so tests, benchmarks and the
command share one wiring:

- the ``onepassworditem`` controller (``controllers.items``);
- the ``workload-secrets`` controller and one restart controller per workload kind (``controllers.workloads``);
- the leader-only ``connect-poller`` (``controllers.poller``);
- one ``ItemSource`` shared by all of them, so each item version is fetched from Connect once.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from kubernetes_asyncio.config import ConfigException

from controllers import config
from controllers.access import AccessControl
from controllers.config import Settings
from controllers.constants import ITEM_PATH_ANNOTATION
from controllers.items import ItemOptions, ItemReconciler, setup_items
from controllers.poller import Poller
from controllers.resources import ONEPASSWORDITEMS
from controllers.secretdata import operator_annotations
from controllers.secrets import SecretWriter, managed_secrets
from controllers.source import InstrumentedConnectClient, ItemSource
from controllers.watch import NamespaceAnnotations
from controllers.workloads import WorkloadOptions, Workloads, setup_workloads
from onepassword_access.changes import VaultChangeDetector
from onepassword_access.client import ConnectClient
from onepassword_access.resolve import ItemResolver
from opsync.client import Client
from opsync.controller import Controller
from opsync.leader import LeaderElectionConfig, LeaderElectionLost
from opsync.logging import setup_logging
from opsync.manager import Manager

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
    source: ItemSource
    poller: Poller
    item_controller: Controller
    workload_controller: Controller
    restart_controllers: list[Controller]

    @property
    def controllers(self) -> list[Controller]:
        """Every controller, the item controller first."""
        return [self.item_controller, self.workload_controller, *self.restart_controllers]

    async def run(self, stopping: asyncio.Event | None = None) -> None:
        """Run until ``stopping`` is set (or SIGTERM/SIGINT when it is None)."""
        try:
            await self.manager.run(stopping)
        finally:
            await self.source.close()


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


def build_operator(settings: Settings, client: Client, connect: ConnectClient) -> Operator:
    """Everything ``opsync run`` runs, on a new ``Manager`` (not started)."""
    leader = None
    if settings.leader_elect:
        leader = LeaderElectionConfig(name=settings.leader_election_id, namespace=leader_election_namespace(settings))
    manager = Manager(
        client,
        namespaces=list(settings.watch_namespaces) or None,
        leader_election=leader,
        health_probe_bind_address=settings.health_probe_bind_address,
        metrics_bind_address=settings.metrics_bind_address,
    )
    source = ItemSource(ItemResolver(connect))
    writer = SecretWriter(client, managed_secrets(manager.cache))
    namespaces = NamespaceAnnotations(manager.cache, settings.watch_namespaces)
    access = AccessControl(manager.cache, namespaces, mode=settings.access_policy)
    items = ItemReconciler(
        manager,
        source,
        writer,
        ItemOptions(allow_empty_values=settings.allow_empty_values, enable_annotations=settings.enable_annotations),
        access,
    )
    item_controller = setup_items(manager, items, workers=settings.workers)
    workloads = Workloads(manager.cache)
    workload_controller, restart_controllers = setup_workloads(
        manager,
        workloads=workloads,
        source=source,
        writer=writer,
        namespaces=namespaces,
        options=WorkloadOptions(allow_empty_values=settings.allow_empty_values, auto_restart=settings.auto_restart),
        access=access,
        workers=settings.workers,
    )

    def paths_in_use() -> set[str]:
        paths = {str((opi.get("spec") or {}).get("itemPath") or "") for opi in items.items.list()}
        for informer in workloads.informers.values():
            paths |= {operator_annotations(w).get(ITEM_PATH_ANNOTATION, "") for w in informer.list()}
        paths |= {operator_annotations(s).get(ITEM_PATH_ANNOTATION, "") for s in writer.secrets.list()}
        return paths - {""}

    poller = Poller(
        detector=VaultChangeDetector(connect),
        source=source,
        secrets=writer.secrets,
        items=manager.cache.informer(ONEPASSWORDITEMS),
        item_controller=item_controller,
        workload_controller=workload_controller,
        interval=settings.polling_interval,
        paths_in_use=paths_in_use,
    )
    manager.add(poller)
    return Operator(manager, source, poller, item_controller, workload_controller, restart_controllers)


def connect_client(settings: Settings) -> InstrumentedConnectClient:
    """The Connect client for ``settings`` (reads the CA file: call before the event loop is busy)."""
    ca_file = str(settings.connect_ca_file) if settings.connect_ca_file else None
    token_file = str(settings.connect_token_file) if settings.connect_token_file else None
    return InstrumentedConnectClient(
        settings.connect_host, settings.connect_token.get_secret_value(), ca_file=ca_file, token_file=token_file
    )


async def kubernetes_client(settings: Settings) -> Client:
    """A client from ``--kubeconfig``/``KUBECONFIG``, else the pod's service account."""
    if settings.kubeconfig:
        return await Client.from_kubeconfig(settings.kubeconfig)
    return Client.in_cluster()


async def _run(settings: Settings) -> int:
    async with await kubernetes_client(settings) as client, connect_client(settings) as connect:
        operator = build_operator(settings, client, connect)
        log.info(
            "starting opsync",
            extra={
                "namespaces": ",".join(settings.watch_namespaces) or "*",
                "pollingInterval": settings.polling_interval,
                "connect": settings.connect_host,
            },
        )
        await operator.run()
    return 0


def main(args: argparse.Namespace) -> int:
    """``opsync run``: exits 0 after a clean shutdown, 1 when the operator failed, 2 on bad configuration."""
    settings = config.settings_or_exit(args, os.environ)
    setup_logging(settings.log_level, settings.log_format)
    for warning in settings.warnings:
        log.warning(warning)
    try:
        return asyncio.run(_run(settings))
    except config.ConfigError as error:
        log.error("invalid configuration: %s", error)
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
