"""The test control plane behaves like a real cluster: watches resume, GC, RBAC, controllers, restarts.

These talk to the apiserver with plain kubernetes-asyncio, so they test ``opsync.envtest`` and not opsync's
own client. Each one relies on behaviour a fake API server does not have.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio import watch
from kubernetes_asyncio.client.exceptions import ApiException

from opsync import envtest
from opsync.client import Client, ForbiddenError
from opsync.envtest import ControlPlane, free_ports
from opsync.resources import CRDS, NAMESPACES, SECRETS, Resource
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
LABELS = {"test": "controlplane"}


async def is_gone(read: Callable[[], Awaitable[Any]]) -> bool:
    try:
        await read()
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def configmap(name: str, data: dict[str, str], **metadata: Any) -> k8s.V1ConfigMap:
    return k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name=name, labels=LABELS, **metadata), data=data)


async def configmap_events(core: k8s.CoreV1Api, namespace: str, resource_version: str, count: int) -> list[Any]:
    """The first ``count`` events of a ConfigMap watch from ``resource_version``: (type, name, data, rv)."""
    events = []
    async with watch.Watch() as stream, asyncio.timeout(60):
        async for event in stream.stream(
            core.list_namespaced_config_map,
            namespace,
            label_selector="test=controlplane",
            resource_version=resource_version,
            timeout_seconds=60,
        ):
            obj = event["object"]
            events.append((event["type"], obj.metadata.name, obj.data, obj.metadata.resource_version))
            if len(events) == count:
                break
    return events


async def test_configmaps_are_listed_and_watched_from_a_resource_version(
    api_client: k8s.ApiClient, namespace: str
) -> None:
    core = k8s.CoreV1Api(api_client)
    await core.create_namespaced_config_map(namespace, configmap("first", {"v": "1"}))
    listed = await core.list_namespaced_config_map(namespace, label_selector="test=controlplane")
    assert [(cm.metadata.name, cm.data) for cm in listed.items] == [("first", {"v": "1"})]

    await core.create_namespaced_config_map(namespace, configmap("second", {"v": "1"}))
    await core.patch_namespaced_config_map("first", namespace, {"data": {"v": "2"}})

    # Only what happened after the list, in order.
    events = await configmap_events(core, namespace, listed.metadata.resource_version, 2)
    assert [event[:3] for event in events] == [("ADDED", "second", {"v": "1"}), ("MODIFIED", "first", {"v": "2"})]
    # Resuming from the first event's resourceVersion replays exactly what came after it.
    resumed = await configmap_events(core, namespace, events[0][3], 1)
    assert resumed == events[1:]


async def test_deleting_an_owner_garbage_collects_its_dependents(api_client: k8s.ApiClient, namespace: str) -> None:
    custom = k8s.CustomObjectsApi(api_client)
    core = k8s.CoreV1Api(api_client)
    item = {
        "apiVersion": "onepassword.com/v1",
        "kind": "OnePasswordItem",
        "metadata": {"name": "owner"},
        "spec": {"itemPath": "vaults/v/items/i"},
    }
    owner = await custom.create_namespaced_custom_object("onepassword.com", "v1", namespace, "onepassworditems", item)
    reference = k8s.V1OwnerReference(
        api_version="onepassword.com/v1", kind="OnePasswordItem", name="owner", uid=owner["metadata"]["uid"]
    )
    secret = k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="owned", owner_references=[reference]))
    await core.create_namespaced_secret(namespace, secret)
    await core.create_namespaced_secret(namespace, k8s.V1Secret(metadata=k8s.V1ObjectMeta(name="unowned")))

    await custom.delete_namespaced_custom_object("onepassword.com", "v1", namespace, "onepassworditems", "owner")

    await eventually(lambda: is_gone(lambda: core.read_namespaced_secret("owned", namespace)), timeout=90)
    assert (await core.read_namespaced_secret("unowned", namespace)).metadata.name == "unowned"


async def test_a_service_account_needs_a_role_binding_to_list_secrets(
    control_plane: ControlPlane, api_client: k8s.ApiClient, namespace: str
) -> None:
    kubeconfig = await asyncio.to_thread(control_plane.service_account_kubeconfig, namespace, "reader")
    async with await k8s_config.new_client_from_config(config_file=kubeconfig) as reader_api:
        reader = k8s.CoreV1Api(reader_api)
        with pytest.raises(ApiException) as refused:
            await reader.list_namespaced_secret(namespace)
        assert refused.value.status == 403

        rbac = k8s.RbacAuthorizationV1Api(api_client)
        rule = k8s.V1PolicyRule(api_groups=[""], resources=["secrets"], verbs=["get", "list"])
        await rbac.create_namespaced_role(
            namespace, k8s.V1Role(metadata=k8s.V1ObjectMeta(name="secret-reader"), rules=[rule])
        )
        binding = k8s.V1RoleBinding(
            metadata=k8s.V1ObjectMeta(name="reader"),
            role_ref=k8s.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="secret-reader"),
            subjects=[k8s.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)],
        )
        await rbac.create_namespaced_role_binding(namespace, binding)

        async def can_list_secrets() -> bool:
            try:
                await reader.list_namespaced_secret(namespace)
            except ApiException as error:
                if error.status == 403:  # the authorizer's RBAC cache catches up asynchronously
                    return False
                raise
            return True

        await eventually(can_list_secrets, timeout=90)
        with pytest.raises(ApiException) as still_refused:  # the Role grants secrets, nothing else
            await reader.list_namespaced_config_map(namespace)
        assert still_refused.value.status == 403


async def test_a_deployment_gets_a_replica_set_and_pods(api_client: k8s.ApiClient, namespace: str) -> None:
    apps = k8s.AppsV1Api(api_client)
    core = k8s.CoreV1Api(api_client)
    labels = {"app": "web"}
    template = k8s.V1PodTemplateSpec(
        metadata=k8s.V1ObjectMeta(labels=labels),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="web", image="nginx")]),
    )
    spec = k8s.V1DeploymentSpec(replicas=1, selector=k8s.V1LabelSelector(match_labels=labels), template=template)
    deployment = await apps.create_namespaced_deployment(
        namespace, k8s.V1Deployment(metadata=k8s.V1ObjectMeta(name="web"), spec=spec)
    )

    async def owned(items: Callable[[], Awaitable[Any]], owner_uid: str) -> list[Any]:
        listed = await items()
        return [o for o in listed.items if any(r.uid == owner_uid for r in o.metadata.owner_references or [])]

    replica_sets: list[Any] = []

    async def has_replica_set() -> bool:
        replica_sets[:] = await owned(lambda: apps.list_namespaced_replica_set(namespace), deployment.metadata.uid)
        return bool(replica_sets)

    await eventually(has_replica_set, timeout=90)
    replica_set = replica_sets[0]
    assert replica_set.metadata.owner_references[0].controller is True

    async def has_pod() -> bool:
        return bool(await owned(lambda: core.list_namespaced_pod(namespace), replica_set.metadata.uid))

    await eventually(has_pod, timeout=90)


async def test_restarting_the_apiserver_ends_open_watches_and_keeps_the_data(
    control_plane: ControlPlane, api_client: k8s.ApiClient, namespace: str
) -> None:
    core = k8s.CoreV1Api(api_client)
    listed = await core.list_namespaced_config_map(namespace, label_selector="test=controlplane")
    seen_one = asyncio.Event()

    async def watch_until_it_ends() -> None:
        with contextlib.suppress(aiohttp.ClientError):  # a dropped connection ends it too
            async with watch.Watch() as stream:
                async for _ in stream.stream(
                    core.list_namespaced_config_map, namespace, resource_version=listed.metadata.resource_version,
                    timeout_seconds=600,
                ):  # fmt: skip
                    seen_one.set()

    watching = asyncio.create_task(watch_until_it_ends())
    await core.create_namespaced_config_map(namespace, configmap("kept", {"v": "1"}))
    async with asyncio.timeout(60):
        await seen_one.wait()  # the watch is established

    await control_plane.restart_apiserver()

    async with asyncio.timeout(60):
        await watching
    assert (await core.read_namespaced_config_map("kept", namespace)).data == {"v": "1"}
    relisted = await core.list_namespaced_config_map(namespace, label_selector="test=controlplane")
    await core.create_namespaced_config_map(namespace, configmap("after", {"v": "1"}))
    events = await configmap_events(core, namespace, relisted.metadata.resource_version, 1)
    assert [event[:3] for event in events] == [("ADDED", "after", {"v": "1"})]


async def test_compacted_resource_versions_are_gone_after_an_apiserver_restart(
    control_plane: ControlPlane, api_client: k8s.ApiClient, namespace: str
) -> None:
    core = k8s.CoreV1Api(api_client)
    created = await core.create_namespaced_config_map(namespace, configmap("c", {"v": "1"}))
    old = created.metadata.resource_version
    await core.patch_namespaced_config_map("c", namespace, {"data": {"v": "2"}})

    assert await control_plane.compact_etcd() > int(old)
    await control_plane.restart_apiserver()  # the new watch cache starts after the compaction

    with pytest.raises(ApiException) as gone:
        await configmap_events(core, namespace, old, 1)
    assert gone.value.status == 410
    with pytest.raises(ApiException) as gone_list:
        await core.list_namespaced_config_map(namespace, resource_version=old, resource_version_match="Exact")
    assert gone_list.value.status == 410


async def test_opsync_envtest_serves_until_sigterm(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    env = {**os.environ, "OPSYNC_ENVTEST_LOGS": str(tmp_path / "logs")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "opsync", "envtest", "--kubeconfig", str(kubeconfig), "--crds", "crds",
        stdout=asyncio.subprocess.PIPE, cwd=REPO, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(240):
            ready = (await proc.stdout.readline()).decode()
        assert ready.startswith("envtest ready"), ready
        async with await k8s_config.new_client_from_config(config_file=str(kubeconfig)) as api:
            version = await k8s.VersionApi(api).get_code()
            assert version.git_version.startswith("v1.")
            crds = await k8s.ApiextensionsV1Api(api).list_custom_resource_definition()
            assert "onepassworditems.onepassword.com" in {crd.metadata.name for crd in crds.items}
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    async with await k8s_config.new_client_from_config(config_file=str(kubeconfig)) as api:
        with pytest.raises(OSError):  # aiohttp's connection error: nothing listens any more
            await k8s.VersionApi(api).get_code()


async def test_the_opsync_clients_act_as_admin_and_as_a_service_account(
    control_plane: ControlPlane, kube: Client, namespace: str
) -> None:
    assert kube.host == control_plane.host
    await kube.create(SECRETS, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}, namespace)
    async with await control_plane.service_account_client(namespace, "nobody") as nobody:
        with pytest.raises(ForbiddenError):
            await nobody.list(SECRETS, namespace)
    assert [s["metadata"]["name"] for s in (await kube.list(SECRETS, namespace))["items"]] == ["s"]


async def test_a_deleted_crd_is_installed_again_and_an_intact_one_left_alone(
    control_plane: ControlPlane, kube: Client, namespace: str
) -> None:
    items = Resource("onepassword.com", "v1", "OnePasswordItem", "onepassworditems")
    item = {"apiVersion": "onepassword.com/v1", "kind": "OnePasswordItem", "metadata": {"name": "lost"}}
    await kube.create(items, {**item, "spec": {"itemPath": "vaults/v/items/i"}}, namespace)
    assert await control_plane.restore_crds() == []

    await kube.delete(CRDS, "onepassworditems.onepassword.com")
    assert await control_plane.restore_crds() == ["onepassworditems.onepassword.com"]
    # Served again, empty: deleting a CRD deletes its objects, which is why a test must not.
    assert (await kube.list(items, namespace))["items"] == []
    await kube.create(items, {**item, "spec": {"itemPath": "vaults/v/items/i"}}, namespace)
    assert await control_plane.restore_crds() == []


async def test_a_port_taken_before_its_server_binds_it_is_traded_for_new_ones(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """free_ports() releases its ports before the servers bind them: losing that race starts again."""
    handed_out: list[list[int]] = []
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = int(held.getsockname()[1])

        def racing(count: int) -> list[int]:
            ports = free_ports(count)
            if not handed_out:
                ports[2] = taken  # etcd client, etcd peer, kube-apiserver, kube-controller-manager
            handed_out.append(ports)
            return ports

        monkeypatch.setattr(envtest, "free_ports", racing)
        async with ControlPlane(crds=[], logs_root=tmp_path) as plane, await plane.client() as kube:
            assert len(handed_out) == 2
            assert plane.host == f"https://127.0.0.1:{handed_out[1][2]}"
            assert (await kube.get(NAMESPACES, "default"))["metadata"]["name"] == "default"
    assert list(tmp_path.iterdir()) == [], "a lost port race is not a failure: no logs kept"
