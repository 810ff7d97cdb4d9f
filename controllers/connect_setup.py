"""``MANAGE_CONNECT=true``: create 1Password Connect's Service and Deployment next to opsync when absent.

What the Go operator does (``pkg/onepassword/connect_setup.go`` with its ``config/connect/*.yaml``), so a
cluster that relied on it keeps working: in the namespace opsync runs in, a Service and a Deployment named
``onepassword-connect`` are created from those manifests if no object of that name exists. Existing objects
are never updated, whatever they contain, and nothing is deleted: the objects outlive opsync.

Unlike the Go operator, which runs this on every replica and exits on the first API error, it runs on the
leader only (each time this replica becomes leader) and retries failures with backoff, logging each one; the
rest of the operator keeps working meanwhile. The chart's ``connect.create`` is the better path (Connect
upgraded with the release, a ClusterIP Service and a NetworkPolicy instead of a NodePort open on every node).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from controllers.config import ConfigError
from opsync.client import AlreadyExistsError, ApiError, Client, ForbiddenError, NotFoundError
from opsync.resources import DEPLOYMENTS, KubeObject, Resource

log = logging.getLogger(__name__)

SERVICES = Resource("", "v1", "Service", "services")
NAME = "onepassword-connect"
CREDENTIALS_SECRET = "op-credentials"  # noqa: S105 - a Secret's name, not a password
CREDENTIALS_KEY = "op-session"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

_DATA = "/home/opuser/.op/data"
_FIRST_RETRY = 1.0
_MAX_RETRY = 60.0


def operator_namespace(environ: Mapping[str, str] = os.environ) -> str:
    """The namespace opsync runs in (``POD_NAMESPACE``, else the service account's), where Connect goes.

    Raises ``ConfigError`` naming ``MANAGE_CONNECT`` when neither is known (opsync outside a pod).
    """
    if environ.get("POD_NAMESPACE"):
        return environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    except OSError:
        raise ConfigError(
            "MANAGE_CONNECT", "needs the namespace opsync runs in: set POD_NAMESPACE (the chart does)"
        ) from None


def connect_service() -> KubeObject:
    """The Go operator's ``config/connect/service.yaml``: a NodePort Service (30080 API, 30081 sync)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAME},
        "spec": {
            "type": "NodePort",
            "selector": {"app": NAME},
            "ports": [
                {"port": 8080, "name": "connect-api", "nodePort": 30080},
                {"port": 8081, "name": "connect-sync", "nodePort": 30081},
            ],
        },
    }


def _connect_container(name: str, port: int, env: list[dict[str, Any]]) -> dict[str, Any]:
    session = {
        "name": "OP_SESSION",
        "valueFrom": {"secretKeyRef": {"name": CREDENTIALS_SECRET, "key": CREDENTIALS_KEY}},
    }
    return {
        "name": name,
        "image": f"1password/{name}:latest",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 999,
            "runAsGroup": 999,
            "allowPrivilegeEscalation": False,
        },
        "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "0.2"}},
        "ports": [{"containerPort": port}],
        "env": [*env, session],
        "volumeMounts": [{"mountPath": _DATA, "name": "shared-data"}],
    }


def connect_deployment() -> KubeObject:
    """The Go operator's ``config/connect/deployment.yaml``: connect-api and connect-sync, credentials from the
    Secret ``op-credentials`` (key ``op-session``), an init container fixing the data folder's permissions."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME},
        "spec": {
            "selector": {"matchLabels": {"app": NAME}},
            "template": {
                "metadata": {"labels": {"app": NAME, "version": "1.0.0"}},
                "spec": {
                    "securityContext": {"runAsNonRoot": True, "fsGroup": 999, "fsGroupChangePolicy": "OnRootMismatch"},
                    "volumes": [
                        {"name": "shared-data", "emptyDir": {}},
                        {"name": "credentials", "secret": {"secretName": CREDENTIALS_SECRET}},
                    ],
                    "initContainers": [
                        {
                            "name": "sqlite-permissions",
                            "image": "alpine:3.12",
                            "command": ["/bin/sh", "-c"],
                            "args": [
                                f"mkdir -p {_DATA} && chown -R 999 /home/opuser && chmod -R 700 /home/opuser "
                                "&& chmod -f -R 600 /home/opuser/.op/config || :"
                            ],
                            "volumeMounts": [{"mountPath": _DATA, "name": "shared-data"}],
                            "securityContext": {
                                "runAsUser": 0,
                                "runAsNonRoot": False,
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]},
                            },
                        }
                    ],
                    "containers": [
                        _connect_container("connect-api", 8080, []),
                        _connect_container("connect-sync", 8081, [{"name": "OP_HTTP_PORT", "value": "8081"}]),
                    ],
                },
            },
        },
    }


class ConnectSetup:
    """The leader-only runnable creating Connect's Service and Deployment in ``namespace`` when absent."""

    name = "connect-setup"

    def __init__(self, client: Client, namespace: str) -> None:
        self._client = client
        self.namespace = namespace

    async def run(self, stopping: asyncio.Event) -> None:
        """Create what is missing (retrying failures until ``stopping``), then idle until ``stopping``."""
        for resource, body in ((SERVICES, connect_service()), (DEPLOYMENTS, connect_deployment())):
            delay = _FIRST_RETRY
            while not stopping.is_set() and not await self._ensure(resource, body):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await stopping.wait()
                delay = min(delay * 2, _MAX_RETRY)
        await stopping.wait()

    async def _ensure(self, resource: Resource, body: KubeObject) -> bool:
        """Whether the object exists now (found, or created); False after a failure, which is logged."""
        where = {"kind": resource.kind, "object": f"{self.namespace}/{NAME}"}
        try:
            try:
                await self._client.get(resource, NAME, self.namespace)
            except NotFoundError:
                await self._client.create(resource, body, self.namespace)
                log.info("MANAGE_CONNECT: created 1Password Connect's %s", resource.kind, extra=where)
            else:
                log.info("MANAGE_CONNECT: %s exists; left as it is", resource.kind, extra=where)
        except ForbiddenError as error:
            log.error(
                "MANAGE_CONNECT: not allowed to get or create %s (grant get and create on %s in %s): %s",
                resource.kind,
                resource.plural,
                self.namespace,
                error.message,
                extra=where,
            )
            return False
        except AlreadyExistsError:  # created meanwhile by someone else: it stays as it is
            return True
        except ApiError as error:
            log.error("MANAGE_CONNECT: cannot create %s: %s", resource.kind, error.message, extra=where)
            return False
        except (aiohttp.ClientError, TimeoutError) as error:
            log.error("MANAGE_CONNECT: cannot reach the API server: %s", error, extra=where)
            return False
        return True
