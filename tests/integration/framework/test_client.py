"""The REST client against a real apiserver: CRUD, every patch type, typed errors, conflict retries, watches.

Every test taking ``kube`` runs twice: over HTTP/2 (all requests on one connection, the default) and over
HTTP/1.1 (``http2=False``, as with ``DISABLE_HTTP2``, a proxy, or a server without HTTP/2).
"""

from __future__ import annotations

import asyncio
import os
import tracemalloc
from asyncio import sslproto
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, aclosing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from opsync import http2, metrics
from opsync.client import (
    TLS_READ_BUFFER,
    AlreadyExistsError,
    ApiRequest,
    Client,
    ConflictError,
    ForbiddenError,
    InvalidError,
    NotFoundError,
    WatchEvent,
)
from opsync.envtest import ControlPlane
from opsync.resources import CONFIGMAPS, DEPLOYMENTS, NAMESPACES, SECRETS, KubeObject, Resource

SELF_SUBJECT_REVIEWS = Resource(
    "authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", namespaced=False
)

pytestmark = pytest.mark.integration


@pytest.fixture(params=["http2", "http1"])
async def kube(control_plane: ControlPlane, request: pytest.FixtureRequest) -> AsyncIterator[Client]:
    async with await Client.from_kubeconfig(control_plane.kubeconfig_path, http2=request.param == "http2") as client:
        yield client


def connections_to(port: int) -> set[int]:
    """The local ports of this process's established TCP connections to ``port`` (from /proc)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if state == "01" and int(remote.rsplit(":", 1)[1], 16) == port and inode in inodes:
                found.add(int(local.rsplit(":", 1)[1], 16))
    return found


def configmap(name: str, data: dict[str, str] | None = None, **labels: str) -> KubeObject:
    meta: dict[str, Any] = {"name": name, "labels": labels}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data or {}}


def deployment(name: str) -> KubeObject:
    containers = [{"name": "app", "image": "app:1"}, {"name": "sidecar", "image": "sidecar:1"}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": containers}},
        },
    }


async def test_create_get_list_replace_delete(kube: Client, namespace: str) -> None:
    created = await kube.create(
        CONFIGMAPS,
        {
            **configmap("a", {"k": "v"}, app="web"),
            "metadata": {"name": "a", "namespace": namespace, "labels": {"app": "web"}},
        },
    )
    assert created["metadata"]["uid"]
    await kube.create(CONFIGMAPS, configmap("b"), namespace)

    got = await kube.get(CONFIGMAPS, "a", namespace)
    assert got["data"] == {"k": "v"}
    page = await kube.list(CONFIGMAPS, namespace, label_selector="app=web")
    assert [item["metadata"]["name"] for item in page["items"]] == ["a"]
    assert page["metadata"]["resourceVersion"]

    got["data"]["k"] = "w"
    replaced = await kube.replace(CONFIGMAPS, got)
    assert replaced["data"] == {"k": "w"}
    assert replaced["metadata"]["resourceVersion"] != got["metadata"]["resourceVersion"]

    await kube.delete(CONFIGMAPS, "a", namespace)
    with pytest.raises(NotFoundError):
        await kube.get(CONFIGMAPS, "a", namespace)


async def test_list_pages_with_continue_tokens(kube: Client, namespace: str) -> None:
    for i in range(5):
        await kube.create(CONFIGMAPS, configmap(f"cm-{i}"), namespace)
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        page = await kube.list(CONFIGMAPS, namespace, limit=2, continue_token=token)
        pages += 1
        seen += [item["metadata"]["name"] for item in page["items"]]
        token = page["metadata"].get("continue")
        if not token:
            break
    assert pages >= 3
    assert sorted(n for n in seen if n.startswith("cm-")) == [f"cm-{i}" for i in range(5)]


async def test_cluster_scoped_objects(kube: Client, namespace: str) -> None:
    ns = await kube.get(NAMESPACES, namespace)
    assert ns["metadata"]["name"] == namespace
    with pytest.raises(ValueError, match="namespace is required"):
        await kube.get(CONFIGMAPS, "a")


async def test_merge_strategic_and_json_patches(kube: Client, namespace: str) -> None:
    await kube.create(CONFIGMAPS, configmap("a", {"keep": "1", "drop": "2"}), namespace)
    merged = await kube.patch(CONFIGMAPS, "a", {"data": {"drop": None, "new": "3"}}, namespace)
    assert merged["data"] == {"keep": "1", "new": "3"}

    patched = await kube.patch(
        CONFIGMAPS, "a", [{"op": "replace", "path": "/data/keep", "value": "x"}], namespace, patch_type="json"
    )
    assert patched["data"] == {"keep": "x", "new": "3"}

    # Strategic merge patches merge containers by name where a merge patch would replace the whole list.
    await kube.create(DEPLOYMENTS, deployment("web"), namespace)
    change = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:2"}]}}}}
    strategic = await kube.patch(DEPLOYMENTS, "web", change, namespace, patch_type="strategic")
    images = {c["name"]: c["image"] for c in strategic["spec"]["template"]["spec"]["containers"]}
    assert images == {"app": "app:2", "sidecar": "sidecar:1"}
    merged_dep = await kube.patch(DEPLOYMENTS, "web", change, namespace, patch_type="merge")
    assert [c["name"] for c in merged_dep["spec"]["template"]["spec"]["containers"]] == ["app"]


async def test_server_side_apply_owns_fields_and_force_takes_them_over(kube: Client, namespace: str) -> None:
    body = {**configmap("a", {"k": "mine"}), "metadata": {"name": "a", "namespace": namespace}}
    applied = await kube.patch(CONFIGMAPS, "a", body, namespace, patch_type="apply")
    assert applied["data"] == {"k": "mine"}
    managers = {entry["manager"] for entry in applied["metadata"]["managedFields"]}
    assert managers == {"opsync"}

    async with Client(kube._configuration, field_manager="someone-else") as other:  # same identity, another manager
        theirs = {**body, "data": {"k": "theirs"}}
        with pytest.raises(ConflictError):
            await other.patch(CONFIGMAPS, "a", theirs, namespace, patch_type="apply")
        forced = await other.patch(CONFIGMAPS, "a", theirs, namespace, patch_type="apply", force=True)
    assert forced["data"] == {"k": "theirs"}
    with pytest.raises(ValueError, match="server-side apply"):
        await kube.patch(CONFIGMAPS, "a", {}, namespace, force=True)


async def test_typed_errors(control_plane: ControlPlane, kube: Client, namespace: str) -> None:
    with pytest.raises(NotFoundError) as missing:
        await kube.get(CONFIGMAPS, "nope", namespace)
    assert missing.value.status == 404
    assert "nope" in missing.value.message

    await kube.create(CONFIGMAPS, configmap("a"), namespace)
    with pytest.raises(AlreadyExistsError):
        await kube.create(CONFIGMAPS, configmap("a"), namespace)

    stale = await kube.get(CONFIGMAPS, "a", namespace)
    await kube.patch(CONFIGMAPS, "a", {"data": {"x": "1"}}, namespace)
    with pytest.raises(ConflictError):
        await kube.replace(CONFIGMAPS, stale)

    with pytest.raises(InvalidError) as invalid:
        await kube.create(CONFIGMAPS, configmap("Not_A_Valid_Name"), namespace)
    assert invalid.value.status == 422

    nobody = await control_plane.service_account_client(namespace, "nobody")
    async with nobody:
        with pytest.raises(ForbiddenError):
            await nobody.list(SECRETS, namespace)


async def test_error_messages_never_echo_the_request_body(kube: Client, namespace: str) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "Invalid_Name"},
        "stringData": {"password": "hunter2-very-secret"},
    }
    with pytest.raises(InvalidError) as invalid:
        await kube.create(SECRETS, secret, namespace)
    assert "hunter2" not in str(invalid.value)


async def test_delete_preconditions(kube: Client, namespace: str) -> None:
    await kube.create(CONFIGMAPS, configmap("a"), namespace)
    with pytest.raises(ConflictError):
        await kube.delete(CONFIGMAPS, "a", namespace, preconditions={"uid": "not-the-uid"})
    await kube.delete(CONFIGMAPS, "a", namespace, propagation_policy="Foreground")


async def test_mutate_retries_a_conflicting_write(kube: Client, namespace: str) -> None:
    created = await kube.create(CONFIGMAPS, configmap("a", {"n": "0"}), namespace)
    await kube.patch(CONFIGMAPS, "a", {"data": {"other": "writer"}}, namespace)
    calls = 0

    def bump(cm: KubeObject) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:  # the first attempt writes what it read before another writer's change: a conflict
            cm["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
        cm["data"]["n"] = "1"
        return True

    result = await kube.mutate(CONFIGMAPS, "a", namespace, bump)
    assert calls == 2
    assert result is not None
    assert result["data"] == {"n": "1", "other": "writer"}


async def test_mutate_gives_up_after_bounded_conflicts(kube: Client, namespace: str) -> None:
    created = await kube.create(CONFIGMAPS, configmap("a"), namespace)
    await kube.patch(CONFIGMAPS, "a", {"data": {"x": "1"}}, namespace)
    calls = 0

    def always_stale(cm: KubeObject) -> bool:
        nonlocal calls
        calls += 1
        cm["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
        return True

    with pytest.raises(ConflictError):
        await kube.mutate(CONFIGMAPS, "a", namespace, always_stale)
    assert calls == 5


async def test_concurrent_mutations_lose_no_update(kube: Client, namespace: str) -> None:
    await kube.create(CONFIGMAPS, configmap("counter", {"n": "0"}), namespace)

    def increment(cm: KubeObject) -> bool:
        cm["data"]["n"] = str(int(cm["data"]["n"]) + 1)
        return True

    await asyncio.gather(*(kube.mutate(CONFIGMAPS, "counter", namespace, increment) for _ in range(3)))
    assert (await kube.get(CONFIGMAPS, "counter", namespace))["data"]["n"] == "3"


async def test_mutate_writes_nothing_when_nothing_changed(kube: Client, namespace: str) -> None:
    created = await kube.create(CONFIGMAPS, configmap("a"), namespace)
    assert await kube.mutate(CONFIGMAPS, "a", namespace, lambda cm: False) is None
    after = await kube.get(CONFIGMAPS, "a", namespace)
    assert after["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_watch_streams_changes_and_ends_with_the_server_timeout(kube: Client, namespace: str) -> None:
    rv = (await kube.list(CONFIGMAPS, namespace))["metadata"]["resourceVersion"]
    await kube.create(CONFIGMAPS, configmap("a"), namespace)
    await kube.patch(CONFIGMAPS, "a", {"data": {"k": "v"}}, namespace)
    await kube.delete(CONFIGMAPS, "a", namespace)

    events: list[WatchEvent] = []
    async with asyncio.timeout(30):  # the server ends the watch after timeoutSeconds; this only guards a hang
        async for event in kube.watch(CONFIGMAPS, namespace, resource_version=rv, timeout_seconds=2):
            events.append(event)
    changes = [(e.type, e.object["metadata"]["name"]) for e in events if e.type != "BOOKMARK"]
    assert changes == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]


async def test_a_silent_watch_is_ended_by_the_inactivity_deadline(kube: Client, namespace: str) -> None:
    rv = (await kube.list(CONFIGMAPS, namespace))["metadata"]["resourceVersion"]
    stream = kube.watch(
        CONFIGMAPS, namespace, resource_version=rv, timeout_seconds=600, allow_bookmarks=False, inactivity_timeout=1
    )
    async with asyncio.timeout(30), aclosing(stream):  # the server would keep it open for 10 minutes
        events = [event async for event in stream]
    assert events == []


async def test_over_http2_watches_and_requests_share_a_connection_up_to_the_servers_stream_limit(
    control_plane: ControlPlane, namespace: str
) -> None:
    """60 open watches and 30 lists at once, each on a connection of its own over HTTP/1.1, are one connection;
    past the API server's 100 streams per connection (kube-apiserver's default) the pool opens a second."""
    port = urlsplit(control_plane.host).port or 443
    before = connections_to(port)
    async with await control_plane.client() as fresh, AsyncExitStack() as stack:
        rv = (await fresh.list(CONFIGMAPS, namespace))["metadata"]["resourceVersion"]

        async def open_watches(count: int) -> list[asyncio.Future[WatchEvent]]:
            streams = [
                await stack.enter_async_context(
                    aclosing(fresh.watch(CONFIGMAPS, namespace, resource_version=rv, timeout_seconds=120))
                )
                for _ in range(count)
            ]
            return [asyncio.ensure_future(anext(stream)) for stream in streams]

        firsts = await open_watches(60)
        async with asyncio.timeout(30):
            lists = await asyncio.gather(*(fresh.list(CONFIGMAPS, namespace) for _ in range(30)))
        opened_first = connections_to(port) - before
        firsts += await open_watches(60)
        async with asyncio.timeout(30):
            await fresh.create(CONFIGMAPS, configmap("watched"), namespace)
            events = await asyncio.gather(*firsts)
        opened_then = connections_to(port) - before
    assert all(page["items"] == [] for page in lists)
    assert {(e.type, e.object["metadata"]["name"]) for e in events} == {("ADDED", "watched")}
    assert len(opened_first) == 1, f"{len(opened_first)} connections for 60 watches and 30 lists"
    assert len(opened_then) == 2, f"{len(opened_then)} connections for 120 watches"


async def test_the_api_server_answers_the_http2_health_check(
    control_plane: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kube-apiserver (Go's HTTP/2 server) answers the PINGs a quiet connection sends, so the connection lives
    through several rounds of the check and the next request takes it, not a new one."""
    acks: list[float] = []
    dispatch = http2.Connection._dispatch

    def counting(connection: http2.Connection, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if kind == http2._PING and flags & http2._ACK:
            acks.append(asyncio.get_running_loop().time())
        dispatch(connection, kind, flags, stream_id, payload)

    monkeypatch.setattr(http2.Connection, "_dispatch", counting)
    port = urlsplit(control_plane.host).port or 443
    before = connections_to(port)
    health = http2.HealthCheck(read_idle=0.2, ping_timeout=0.5)
    async with await Client.from_kubeconfig(control_plane.kubeconfig_path, http2_health=health) as client:
        await client.list(CONFIGMAPS, namespace)
        opened = connections_to(port) - before
        async with asyncio.timeout(30):
            while len(acks) < 3:  # each answer is followed by another 0.2 s of silence, and another PING
                await asyncio.sleep(0.05)
        await client.list(CONFIGMAPS, namespace)
        assert connections_to(port) - before == opened, "the same connection carried the second request"
    assert len(opened) == 1


async def test_many_open_watches_neither_fill_the_pool_nor_hold_big_tls_buffers(
    control_plane: ControlPlane, kube: Client, namespace: str
) -> None:
    """Over HTTP/1.1 each watch holds a connection, with asyncio's TLS read buffer, for as long as it runs: 120
    of them, more than kubernetes-asyncio's default pool of 100, leave requests flowing and hold 8 KiB each,
    not 256."""
    opened = 120
    rv = (await kube.list(CONFIGMAPS, namespace))["metadata"]["resourceVersion"]
    tracemalloc.start()
    try:
        fresh_client = Client.from_kubeconfig(control_plane.kubeconfig_path, http2=False)  # no pooled connection yet
        async with await fresh_client as fresh, AsyncExitStack() as stack:
            before = tracemalloc.take_snapshot()
            streams = [
                await stack.enter_async_context(
                    aclosing(fresh.watch(CONFIGMAPS, namespace, resource_version=rv, timeout_seconds=120))
                )
                for _ in range(opened)
            ]
            firsts = [asyncio.ensure_future(anext(stream)) for stream in streams]
            async with asyncio.timeout(30):  # with a full pool, this request would wait for a watch to end
                await fresh.create(CONFIGMAPS, configmap("watched"), namespace)
                events = await asyncio.gather(*firsts)  # each watch saw it: all are open at once
            after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert {(e.type, e.object["metadata"]["name"]) for e in events} == {("ADDED", "watched")}
    held = sum(
        stat.size_diff
        for stat in after.compare_to(before, "filename")
        if stat.traceback[0].filename == sslproto.__file__
    )
    assert held <= opened * 2 * TLS_READ_BUFFER, f"{held / opened / 1024:.0f} KiB of TLS buffers per open watch"


async def test_requests_are_counted(kube: Client, namespace: str) -> None:
    host = kube.host.split("://", 1)[1]

    def count(code: str, method: str) -> float:
        labels = {"code": code, "method": method, "host": host}
        return metrics.REGISTRY.get_sample_value("rest_client_requests_total", labels) or 0.0

    before_ok, before_missing = count("200", "GET"), count("404", "GET")
    await kube.get(NAMESPACES, namespace)
    with pytest.raises(NotFoundError):
        await kube.get(CONFIGMAPS, "nope", namespace)
    assert count("200", "GET") == before_ok + 1
    assert count("404", "GET") == before_missing + 1


async def test_observers_replace_the_default_counting(control_plane: ControlPlane, namespace: str) -> None:
    seen: list[ApiRequest] = []
    async with await Client.from_kubeconfig(control_plane.kubeconfig_path, observers=[seen.append]) as kube:
        host = kube.host.split("://", 1)[1]
        counted = metrics.REGISTRY.get_sample_value(
            "rest_client_requests_total", {"code": "404", "method": "GET", "host": host}
        )
        with pytest.raises(NotFoundError):
            await kube.get(CONFIGMAPS, "nope", namespace)
    assert seen == [ApiRequest("GET", CONFIGMAPS.path(namespace, "nope"), host, 404)]
    after = metrics.REGISTRY.get_sample_value(
        "rest_client_requests_total", {"code": "404", "method": "GET", "host": host}
    )
    assert after == counted  # the default observer was replaced, not added to


async def test_in_cluster_a_client_is_the_pods_service_account(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What kubelet gives a pod (a token file, the CA, the service's address) is the identity of every request."""
    token = await asyncio.to_thread(control_plane.service_account_token, namespace, "pod")
    (tmp_path / "token").write_text(token)
    server = urlsplit(control_plane.host)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", str(server.hostname))
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(server.port))
    async with Client.in_cluster(token_file=str(tmp_path / "token"), ca_file=str(control_plane.ca_file)) as pod:
        review = await pod.create(
            SELF_SUBJECT_REVIEWS, {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        )
        assert review["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:pod"
        with pytest.raises(ForbiddenError):  # a ServiceAccount with no role, not the admin the tests run as
            await pod.list(SECRETS, namespace)
