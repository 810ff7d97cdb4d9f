"""Event handlers (``opsync.handler``) and sources (``opsync.source``): what each event enqueues."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from opsync.handler import EnqueueHandler, controller_owner, object_request
from opsync.predicate import Predicate, generation_changed
from opsync.queue import ItemExponentialFailureRateLimiter, WorkQueue
from opsync.reconcile import Request
from opsync.resources import DEPLOYMENTS, NAMESPACES, KubeObject
from opsync.source import Channel
from opsync.testing import take_ready

KEY = Request("ns", "a")


def handled(map_fn: Callable[[KubeObject], Any], *predicates: Predicate) -> tuple[EnqueueHandler, WorkQueue[Request]]:
    queue: WorkQueue[Request] = WorkQueue()
    return EnqueueHandler(queue, map_fn, predicates), queue


def obj(name: str = "a", namespace: str = "ns", **meta: Any) -> KubeObject:
    return {"metadata": {"name": name, "namespace": namespace, **meta}}


async def test_object_handler_enqueues_the_object_on_every_event() -> None:
    handler, queue = handled(object_request)
    handler.on_add(obj("a"), True)
    handler.on_update(obj("b"), obj("b"))
    handler.on_delete(obj("c"))
    assert await take_ready(queue) == {Request("ns", "a"), Request("ns", "b"), Request("ns", "c")}


def owned(kind: str, api_version: str, name: str, *, controller: bool = True) -> KubeObject:
    ref = {"apiVersion": api_version, "kind": kind, "name": name, "uid": "u", "controller": controller}
    return obj("child", ownerReferences=[ref])


@pytest.mark.parametrize(
    ("child", "expected"),
    [
        (owned("Deployment", "apps/v1", "web"), {Request("ns", "web")}),
        (owned("Deployment", "apps/v1beta2", "web"), {Request("ns", "web")}),  # any version of the group
        (owned("Deployment", "apps/v1", "web", controller=False), set()),  # not the controller owner
        (owned("Deployment", "extensions/v1", "web"), set()),  # another group
        (owned("ReplicaSet", "apps/v1", "web"), set()),  # another kind
        (obj("orphan"), set()),
    ],
)
async def test_owner_handler_enqueues_the_controller_owner(child: KubeObject, expected: set[Request]) -> None:
    handler, queue = handled(controller_owner(DEPLOYMENTS))
    handler.on_add(child, False)
    assert await take_ready(queue) == expected


async def test_owner_of_a_cluster_scoped_kind_has_no_namespace() -> None:
    handler, queue = handled(controller_owner(NAMESPACES))
    handler.on_add(owned("Namespace", "v1", "team-a"), False)
    assert await take_ready(queue) == {Request("", "team-a")}


async def test_update_enqueues_what_old_and_new_map_to() -> None:
    handler, queue = handled(controller_owner(DEPLOYMENTS))
    handler.on_update(owned("Deployment", "apps/v1", "before"), owned("Deployment", "apps/v1", "after"))
    assert await take_ready(queue) == {Request("ns", "before"), Request("ns", "after")}


async def test_predicates_filter_events() -> None:
    handler, queue = handled(object_request, generation_changed())
    handler.on_update(obj("same", generation=1), obj("same", generation=1))
    handler.on_update(obj("bumped", generation=1), obj("bumped", generation=2))
    handler.on_add(obj("new"), False)
    assert await take_ready(queue) == {Request("ns", "bumped"), Request("ns", "new")}


async def test_a_channel_leaves_keys_in_backoff_to_their_backoff() -> None:
    slow = ItemExponentialFailureRateLimiter[Request](60.0, 60.0)  # a retry stays pending for the test
    failing: WorkQueue[Request] = WorkQueue(rate_limiter=slow)
    healthy: WorkQueue[Request] = WorkQueue()
    channel = Channel()
    channel.start(failing)
    channel.start(healthy)
    assert await channel.wait_for_sync()
    failing.add_rate_limited(KEY)
    assert channel.fire(KEY)
    assert await take_ready(healthy) == {KEY} and len(failing) == 0  # left to its backoff
    assert channel.fire(KEY, even_in_backoff=True)  # e.g. the outage it waits out just ended
    assert await take_ready(failing) == {KEY} and await take_ready(healthy) == {KEY}
    healthy.add_rate_limited(KEY)
    assert not channel.fire(KEY)  # both in backoff: nobody took it
    assert len(failing) == 0
