"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics.

One replica at a time holds the Lease and runs the leader-only work. The rules, as in client-go's
``tools/leaderelection``:

* A candidate takes the Lease when it does not exist, has no holder, or its record has not changed for
  ``leaseDurationSeconds`` *as measured on the candidate's own clock* since it last saw it change, so clock
  skew between nodes does not matter. Writes carry the ``resourceVersion`` read, so of two candidates
  racing for an expired Lease exactly one wins (the other gets a 409 and tries again later).
* The leader renews every ``retry_period``; if it cannot renew for ``renew_deadline`` it has lost the
  Lease and must stop leader-only work at once (``renew_deadline < lease_duration`` makes it stop before
  anyone else may take over). Unlike client-go it also stops as soon as it reads the Lease with another
  holder (a process frozen past its lease learns it on its first renewal, not a renew deadline later).
* On a clean shutdown the leader releases the Lease (no holder, ``leaseDurationSeconds: 1``) so the next
  leader need not wait out the lease duration. A crash (task cancelled) releases nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opsync import metrics
from opsync.aio import first_completed
from opsync.client import AlreadyExistsError, Client, ConflictError, NotFoundError
from opsync.resources import LEASES, KubeObject
from opsync.timestamps import rfc3339_micro

log = logging.getLogger(__name__)

JITTER_FACTOR = 1.2
"""client-go's jitter for acquire retries; the renew deadline must exceed ``retry_period`` times this."""


class LeaderElectionLost(Exception):
    """The leader could not renew its Lease within the renew deadline: it must stop leader-only work now."""


def default_identity() -> str:
    """``<hostname>_<uuid>`` as client-go builds it: unique per process even on one host."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


@dataclass(frozen=True, kw_only=True)
class LeaderElectionConfig:
    """Where the Lease lives and how the election is timed (client-go's defaults: 15 s / 10 s / 2 s)."""

    name: str
    namespace: str
    identity: str = field(default_factory=default_identity)
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    release_on_cancel: bool = True
    """Release the Lease when the elector is stopped cleanly (``LeaderElectionReleaseOnCancel``)."""

    def __post_init__(self) -> None:
        if not self.name or not self.namespace or not self.identity:
            raise ValueError("leader election needs a lease name, a namespace and an identity")
        if self.retry_period <= 0 or self.lease_duration < 1:
            raise ValueError("retry_period must be positive and lease_duration at least 1 second")
        if self.lease_duration <= self.renew_deadline:
            raise ValueError("lease_duration must be greater than renew_deadline")
        if self.renew_deadline <= JITTER_FACTOR * self.retry_period:
            raise ValueError(f"renew_deadline must be greater than retry_period * {JITTER_FACTOR}")


async def _sleep(seconds: float, stopping: asyncio.Event) -> bool:
    """Sleep ``seconds``, waking early when ``stopping`` is set; whether it is set."""
    await first_completed(stopping.wait(), timeout=seconds)
    return stopping.is_set()


class LeaderElector:
    """Campaigns for one Lease; ``run`` returns once stopped or raises ``LeaderElectionLost``.

    ``elected`` is set while this process leads. The manager starts leader-only work when it is set and
    treats ``LeaderElectionLost`` from ``run`` as fatal.
    """

    def __init__(
        self, client: Client, config: LeaderElectionConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self.elected = asyncio.Event()
        self._client = client
        self._clock = clock
        self._lease: KubeObject | None = None  # the last version read or written: its resourceVersion is the lock
        self._observed_spec: dict[str, Any] | None = None
        self._observed_at = 0.0
        self._status = metrics.LEADER_ELECTION_MASTER_STATUS.labels(name=config.name)
        self._status.set(0)

    @property
    def is_leader(self) -> bool:
        """Whether this process holds the Lease (as of its last successful renewal)."""
        return self.elected.is_set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Acquire the Lease, then keep renewing it until ``stopping`` is set, then release it.

        Raises ``LeaderElectionLost`` if a renewal does not succeed within ``renew_deadline``.
        """
        cfg = self.config
        log.info("attempting to acquire leader lease", extra={"lease": f"{cfg.namespace}/{cfg.name}"})
        try:
            if not await self._acquire(stopping):
                return
            await self._renew(stopping)
            if cfg.release_on_cancel:
                await self._release()
        finally:
            self._set_leader(False)

    async def _acquire(self, stopping: asyncio.Event) -> bool:
        while not stopping.is_set():
            if await self._try_acquire_or_renew():
                self._set_leader(True)
                log.info("successfully acquired lease", extra={"identity": self.config.identity})
                return True
            # Jitter spreads the candidates' retries (client-go's JitterUntil).
            jitter = random.random() * JITTER_FACTOR  # noqa: S311 - timing jitter, not cryptography
            await _sleep(self.config.retry_period * (1 + jitter), stopping)
        return False

    async def _renew(self, stopping: asyncio.Event) -> None:
        cfg = self.config
        renewed_at = self._clock()
        while not await _sleep(cfg.retry_period, stopping):
            if await self._try_acquire_or_renew():
                renewed_at = self._clock()
                continue
            # Stricter than client-go, which keeps trying until the deadline: a Lease seen with another holder
            # means a successor may be writing already (say this process was frozen), so stop at once. The
            # deadline counts from the last renewal on the monotonic clock, which a frozen process's does too.
            holder = (self._observed_spec or {}).get("holderIdentity")
            if holder and holder != cfg.identity:
                reason = f"the lease is held by {holder}"
            elif self._clock() - renewed_at >= cfg.renew_deadline:
                reason = "failed to renew the lease within the renew deadline"
            else:
                continue
            log.error("%s: leader election lost", reason)
            self._set_leader(False)
            raise LeaderElectionLost(f"lost lease {cfg.namespace}/{cfg.name}: {reason}")

    async def _try_acquire_or_renew(self) -> bool:
        """One attempt to take or renew the Lease; False when someone else holds it or the write failed."""
        cfg = self.config
        now = rfc3339_micro()
        try:
            async with asyncio.timeout(cfg.renew_deadline):
                try:
                    lease = await self._client.get(LEASES, cfg.name, cfg.namespace)
                except NotFoundError:
                    body = {
                        "apiVersion": LEASES.api_version,
                        "kind": LEASES.kind,
                        "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                        "spec": self._record(acquire_time=now, renew_time=now, transitions=0),
                    }
                    self._remember(await self._client.create(LEASES, body, cfg.namespace))
                    return True
                self._observe(lease)
                spec: dict[str, Any] = lease.get("spec") or {}
                holder = spec.get("holderIdentity") or ""
                if holder and holder != cfg.identity and not self._observed_expired(spec):
                    return False
                held = holder == cfg.identity
                record = self._record(
                    acquire_time=spec.get("acquireTime", now) if held else now,
                    renew_time=now,
                    transitions=(spec.get("leaseTransitions") or 0) + (0 if held else 1),
                )
                self._remember(await self._client.replace(LEASES, {**lease, "spec": {**spec, **record}}))
                return True
        except (ConflictError, AlreadyExistsError):
            log.debug("lost a race for the lease; will retry")
        except TimeoutError:
            log.warning("lease request timed out")
        except Exception as err:  # the API being unreachable is a failed attempt, retried by the caller
            log.warning("failed to acquire or renew lease: %s", err)
        return False

    def _record(self, *, acquire_time: str, renew_time: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.config.identity,
            "leaseDurationSeconds": math.ceil(self.config.lease_duration),
            "acquireTime": acquire_time,
            "renewTime": renew_time,
            "leaseTransitions": transitions,
        }

    def _observe(self, lease: KubeObject) -> None:
        """Note when the record last changed, by our clock: expiry is judged from that moment."""
        self._lease = lease
        spec = lease.get("spec") or {}
        if spec != self._observed_spec:
            previous = (self._observed_spec or {}).get("holderIdentity")
            holder = spec.get("holderIdentity")
            if holder and holder not in (previous, self.config.identity):
                log.info("new leader elected", extra={"leader": holder})
            self._observed_spec = spec
            self._observed_at = self._clock()

    def _remember(self, lease: KubeObject) -> None:
        self._lease = lease
        self._observed_spec = lease.get("spec") or {}
        self._observed_at = self._clock()

    def _observed_expired(self, spec: dict[str, Any]) -> bool:
        return self._clock() >= self._observed_at + (spec.get("leaseDurationSeconds") or 0)

    async def _release(self) -> None:
        """Give the Lease up so a successor can take it at once (client-go's ``release``)."""
        lease = self._lease
        if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.config.identity:
            return
        now = rfc3339_micro()
        spec = {**lease["spec"], "leaseDurationSeconds": 1, "acquireTime": now, "renewTime": now}
        spec.pop("holderIdentity", None)
        try:
            async with asyncio.timeout(self.config.renew_deadline):
                await self._client.replace(LEASES, {**lease, "spec": spec})
        except Exception as err:  # the successor will wait out the lease instead
            log.warning("failed to release lease: %s", err)
            return
        log.info("released lease")

    def _set_leader(self, leader: bool) -> None:
        if leader:
            self.elected.set()
        else:
            self.elected.clear()
        self._status.set(1 if leader else 0)
