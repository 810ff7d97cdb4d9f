"""Workload manifests and Secret/item helpers shared by the operator's integration tests."""

from __future__ import annotations

import base64
from typing import Any

from controllers.constants import ITEM_NAME_ANNOTATION, ITEM_PATH_ANNOTATION
from controllers.resources import ONEPASSWORDITEMS
from controllers.status import ready_of
from opsync.client import Client, NotFoundError
from opsync.resources import EVENTS, SECRETS, KubeObject, Resource
from tests.support.harness import eventually


def workload(
    kind: str,
    name: str,
    *,
    item_path: str | None = None,
    item_name: str | None = None,
    annotations: dict[str, str] | None = None,
    env_secret: str | None = None,
    env_from_secret: str | None = None,
    volume_secret: str | None = None,
    projected_secret: str | None = None,
    init_env_secret: str | None = None,
) -> KubeObject:
    """A Deployment, StatefulSet or DaemonSet manifest with one container (pods never run: no kubelet)."""
    meta_annotations = dict(annotations or {})
    if item_path is not None:
        meta_annotations[ITEM_PATH_ANNOTATION] = item_path
    if item_name is not None:
        meta_annotations[ITEM_NAME_ANNOTATION] = item_name
    container: dict[str, Any] = {"name": "app", "image": "example.invalid/app:1"}
    if env_secret:
        container["env"] = [
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": env_secret, "key": "password"}}}
        ]
    if env_from_secret:
        container["envFrom"] = [{"secretRef": {"name": env_from_secret}}]
    pod: dict[str, Any] = {"containers": [container]}
    if volume_secret or projected_secret:
        pod["volumes"] = []
        if volume_secret:
            pod["volumes"].append({"name": "secret", "secret": {"secretName": volume_secret}})
        if projected_secret:
            sources = [{"secret": {"name": projected_secret}}]
            pod["volumes"].append({"name": "projected", "projected": {"sources": sources}})
    if init_env_secret:
        pod["initContainers"] = [
            {
                "name": "init",
                "image": "example.invalid/init:1",
                "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": init_env_secret, "key": "password"}}}],
            }
        ]
    labels = {"app": name}
    spec: dict[str, Any] = {
        "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": pod},
    }
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "annotations": meta_annotations},
        "spec": spec,
    }


def opi(name: str, path: str, **extra: Any) -> KubeObject:
    """A OnePasswordItem manifest (``type=...``, ``metadata={...}`` as extra keywords)."""
    return {
        "apiVersion": "onepassword.com/v1",
        "kind": "OnePasswordItem",
        "metadata": {"name": name, **extra.pop("metadata", {})},
        "spec": {"itemPath": path},
        **extra,
    }


async def get_or_none(kube: Client, resource: Resource, name: str, namespace: str) -> KubeObject | None:
    try:
        return await kube.get(resource, name, namespace)
    except NotFoundError:
        return None


def decoded(secret: KubeObject | None) -> dict[str, str] | None:
    """A Secret's data as text, None for no Secret."""
    if secret is None:
        return None
    return {key: base64.b64decode(value).decode() for key, value in (secret.get("data") or {}).items()}


GC_TIMEOUT = 90.0
"""Waits on the garbage collector: it pauses while it resyncs after CRDs come or go (other tests do that)."""


async def wait_for_data(
    kube: Client, namespace: str, name: str, expected: dict[str, str] | None, timeout: float | None = None
) -> KubeObject:
    """Wait until the Secret holds exactly ``expected`` (None: until it is gone, often by garbage collection,
    hence the longer default wait); return it."""
    timeout = timeout if timeout is not None else GC_TIMEOUT if expected is None else 30.0
    found: dict[str, Any] = {}

    async def matches() -> bool:
        found["secret"] = await get_or_none(kube, SECRETS, name, namespace)
        return decoded(found["secret"]) == expected

    await eventually(matches, timeout=timeout, message=lambda: f"Secret {name} never held {expected}; last: {found}")
    return found["secret"] or {}


async def ready_condition(kube: Client, namespace: str, name: str) -> KubeObject | None:
    """The item's Ready condition as the API server has it now."""
    return ready_of(await kube.get(ONEPASSWORDITEMS, name, namespace))


async def wait_for_ready(kube: Client, namespace: str, name: str, status: str, reason: str) -> KubeObject:
    """Wait until the item's Ready condition has ``status`` and ``reason``; return the condition."""
    found: dict[str, Any] = {}

    async def matches() -> bool:
        condition = found["condition"] = await ready_condition(kube, namespace, name)
        return condition is not None and (condition["status"], condition.get("reason")) == (status, reason)

    await eventually(matches, message=lambda: f"{name} never became Ready={status} ({reason}); last: {found}")
    return dict(found["condition"])


async def events_for(kube: Client, namespace: str, name: str) -> list[KubeObject]:
    """The Events about the object ``name``."""
    events = await kube.list(EVENTS, namespace, field_selector=f"involvedObject.name={name}")
    return list(events["items"])


async def wait_for_event(kube: Client, namespace: str, name: str, reason: str, type_: str = "Warning") -> KubeObject:
    """Wait for an Event of ``type_`` and ``reason`` about ``name``; return it."""
    found: dict[str, Any] = {}

    async def recorded() -> bool:
        events = await events_for(kube, namespace, name)
        found["event"] = next((e for e in events if e["type"] == type_ and e["reason"] == reason), None)
        return found["event"] is not None

    await eventually(recorded, message=f"no {type_} Event {reason} about {name}")
    return dict(found["event"])
