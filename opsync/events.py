"""Kubernetes Events (core/v1), recorded without ever blocking the caller.

``EventRecorder.event()`` only queues; ``run()`` (owned by the manager) writes. Like client-go's
EventCorrelator, an identical event (same object, type, reason, message and source) seen again within ten
minutes bumps the existing Event's ``count`` and ``lastTimestamp`` instead of adding another Event, so a
controller retrying the same failure does not flood the namespace.

An Event is a record of something already done, so it yields to the work users wait for: given ``idle``
(the manager's returns once no controller has a key queued or in a reconcile), the writer holds each Event
until it returns, for at most ``hold_limit`` seconds after the Event was recorded. Holding has room of its
own: the queue takes twice ``queue_size`` Events, and none is held while ``queue_size`` are waiting, so the
writer has as much room before it drops one as it would have without holding. An Event's timestamps are
those of ``event()``, not of the write.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from opsync.aio import first_completed
from opsync.client import Client, NotFoundError
from opsync.resources import EVENTS, KubeObject
from opsync.timestamps import rfc3339

log = logging.getLogger(__name__)

EventType = Literal["Normal", "Warning"]
MAX_MESSAGE = 1024
AGGREGATE_WINDOW = 600.0  # seconds: repeats within it update one Event
_CORRELATION_ENTRIES = 4096  # as client-go's maxLruCacheEntries
_META_FIELDS = ("namespace", "name", "uid", "resourceVersion")  # the involvedObject's, with apiVersion and kind
_NAME_PREFIX = 230  # of the object's name in the Event's name: room for the unique suffix within 253
HOLD_LIMIT = 10.0  # seconds: the longest an Event waits for the controllers to be idle


@dataclass(frozen=True, slots=True)
class _Pending:
    involved: dict[str, str]
    type: str
    reason: str
    message: str
    timestamp: str
    recorded: float  # clock() when event() was called


@dataclass(slots=True)
class _Recorded:
    """An Event written recently, kept to aggregate repeats into it."""

    namespace: str
    name: str
    count: int
    seen: float  # clock() of the last occurrence


class EventRecorder:
    """Records Events about objects on behalf of ``component`` (the Event's ``source.component``)."""

    def __init__(
        self,
        client: Client,
        component: str,
        *,
        host: str | None = None,
        queue_size: int = 1000,
        idle: Callable[[], Awaitable[None]] | None = None,
        hold_limit: float = HOLD_LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``queue_size``: the Events that may wait for the writer before new ones are dropped; ``idle``: what
        each waits for, up to ``hold_limit`` seconds, with room for as many again (see the module docstring)."""
        self.name = f"events-{component}"
        self._client = client
        self.component = component
        self.host = host
        self._clock = clock
        self._idle = idle
        self._hold_limit = hold_limit
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(queue_size * (2 if idle else 1))
        self._crowded_at = queue_size  # waiting, counting the one in hand: Events are written without holding
        self._crowded = asyncio.Event()
        self._dropped = 0  # Events dropped since the queue was last full, until it is half empty again
        self._recent: OrderedDict[tuple[object, ...], _Recorded] = OrderedDict()

    def event(self, obj: KubeObject, type_: EventType, reason: str, message: str) -> None:
        """Queue an Event about ``obj``; never blocks. Dropped if the queue is full, with one log line when
        dropping starts and one with the count once the writer has emptied half of the queue (a sync of
        thousands of items would otherwise log thousands of lines; under a sustained overload the queue is
        full again as soon as the writer takes one, so "the queue takes an Event again" would flap).

        ``message`` must not contain secret values; it is cut to 1024 characters.
        """
        if type_ not in ("Normal", "Warning"):
            log.error("event type %r is neither Normal nor Warning; dropped (reason %s)", type_, reason)
            return
        meta = obj.get("metadata") or {}
        fields = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind")} | {f: meta.get(f) for f in _META_FIELDS}
        involved = {field: str(value) for field, value in fields.items() if value}
        pending = _Pending(involved, type_, reason, message[:MAX_MESSAGE], rfc3339(), self._clock())
        try:
            self._queue.put_nowait(pending)
            if self._queue.qsize() >= self._crowded_at:
                self._crowded.set()
        except asyncio.QueueFull:
            if not self._dropped:
                log.warning(
                    "event queue full (%d waiting to be written); dropping Events while it is full, from %s %s for %s",
                    self._queue.maxsize,
                    type_,
                    reason,
                    involved.get("name"),
                )
            self._dropped += 1

    async def run(self, stopping: asyncio.Event) -> None:
        """Write queued Events until ``stopping`` is set, then write what is still queued and return."""
        while True:
            next_event = asyncio.ensure_future(self._queue.get())
            if next_event not in await first_completed(next_event, stopping.wait()):
                break
            pending = next_event.result()
            await self._hold(pending, stopping)
            await self._write(pending)
            self._note_drained()
        while not self._queue.empty():
            await self._write(self._queue.get_nowait())
            self._note_drained()

    async def _hold(self, pending: _Pending, stopping: asyncio.Event) -> None:
        """Wait for ``idle``, within the limits of the module docstring."""
        if self._queue.qsize() + 1 < self._crowded_at:  # + the Event in hand
            self._crowded.clear()
        left = self._hold_limit - (self._clock() - pending.recorded)
        if self._idle is None or left <= 0 or self._crowded.is_set():
            return
        await first_completed(self._idle(), stopping.wait(), self._crowded.wait(), timeout=left)

    def _note_drained(self) -> None:
        """After a write: the line closing a dropping episode, once half of the queue is free again."""
        if self._dropped and self._queue.qsize() <= self._queue.maxsize // 2:
            log.warning("event queue drains again; %d Events were dropped while it was full", self._dropped)
            self._dropped = 0

    async def _write(self, pending: _Pending) -> None:
        involved = pending.involved
        # As client-go: the correlation key leaves out the resourceVersion, which changes with every write.
        key = (
            tuple(sorted((k, v) for k, v in involved.items() if k != "resourceVersion")),
            pending.type,
            pending.reason,
            pending.message,
        )
        now = self._clock()
        recorded = self._recent.get(key)
        try:
            if recorded is not None and now - recorded.seen < AGGREGATE_WINDOW:
                try:
                    await self._client.patch(
                        EVENTS,
                        recorded.name,
                        {"count": recorded.count + 1, "lastTimestamp": pending.timestamp},
                        recorded.namespace,
                    )
                    recorded.count += 1
                    recorded.seen = now
                    self._recent.move_to_end(key)
                    return
                except NotFoundError:
                    pass  # the Event expired (apiserver --event-ttl): start a new one
            created = await self._client.create(EVENTS, self._body(pending))
            self._recent[key] = _Recorded(created["metadata"]["namespace"], created["metadata"]["name"], 1, now)
            self._recent.move_to_end(key)
            while len(self._recent) > _CORRELATION_ENTRIES:
                self._recent.popitem(last=False)
        except Exception as err:
            log.warning(
                "could not record event %s %s for %s: %s", pending.type, pending.reason, involved.get("name"), err
            )

    def _body(self, pending: _Pending) -> KubeObject:
        involved = pending.involved
        # Events about cluster-scoped objects live in "default", as client-go puts them.
        namespace = involved.get("namespace") or "default"
        source = {"component": self.component, **({"host": self.host} if self.host else {})}
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{involved.get('name', 'unknown')[:_NAME_PREFIX]}.{secrets.token_hex(8)}",
                "namespace": namespace,
            },
            "involvedObject": involved,
            "type": pending.type,
            "reason": pending.reason,
            "message": pending.message,
            "source": source,
            "reportingComponent": self.component,
            **({"reportingInstance": self.host} if self.host else {}),
            "firstTimestamp": pending.timestamp,
            "lastTimestamp": pending.timestamp,
            "count": 1,
        }
