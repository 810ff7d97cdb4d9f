"""Managed Secrets: the label-selected cache, and the one writer every Secret write goes through.

Both producers (OnePasswordItems and annotated workloads) hand ``SecretWriter`` a desired Secret
(``controllers.desired``); it reads what exists, lets ``controllers.merge`` decide what to write, and writes:

- Only Secrets labelled ``opsync.dev/managed=true`` are cached (``managed_secrets``), so the data of other
  Secrets never sits in opsync's memory. A Secret of the wanted name missing from that cache is created
  outright (a create never replaces anything: one request per new Secret, not a read and a create); only
  when the API server answers AlreadyExists is it read, to learn whose it is.
- Every managed Secret is watched, so a Secret deleted or edited by hand reaches its producer's reconciler,
  which puts it back (drift repair) without waiting for a poll.
- Writes are full updates carrying the cached ``resourceVersion``: a Secret changed meanwhile is not
  overwritten blindly (409, retried from the fresh copy).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controllers.constants import MANAGED_SELECTOR
from controllers.desired import DesiredSecret
from controllers.merge import WriteReason, plan_update
from controllers.metrics import SECRET_WRITES
from opsync.cache import Cache
from opsync.client import AlreadyExistsError, Client, NotFoundError
from opsync.informer import Informer
from opsync.resources import SECRETS, KubeObject


def managed_secrets(cache: Cache) -> Informer:
    """The informer of the Secrets opsync manages (selected by label, shared by every controller)."""
    return cache.informer(SECRETS, label_selector=MANAGED_SELECTOR)


@dataclass(frozen=True, slots=True)
class WriteResult:
    secret: KubeObject = field(repr=False)  # holds the data: kept out of reprs
    """The Secret as written, or as found when nothing needed writing."""
    reason: WriteReason | None
    """Why it was written; None when it already was as desired."""
    data_changed: bool


class SecretWriter:
    """Creates, updates and deletes managed Secrets (see the module docstring for the rules)."""

    def __init__(self, client: Client, secrets: Informer) -> None:
        self._client = client
        self.secrets = secrets

    async def existing(self, namespace: str, name: str) -> KubeObject | None:
        """The Secret ``namespace/name`` whoever owns it: from the cache, else read from the API server."""
        cached = self.secrets.get(namespace, name)
        if cached is not None:
            return cached
        try:
            return await self._client.get(SECRETS, name, namespace)
        except NotFoundError:
            return None

    async def write(self, desired: DesiredSecret) -> WriteResult:
        """Make the Secret match ``desired``: create it, or update it as ``merge.plan_update`` says.

        Raises ``SecretConflictError`` for someone else's Secret (or, for a OnePasswordItem, one made for
        workloads: ``WorkloadSecretConflictError``), ``SecretTypeImmutableError`` when the type
        would change, and the client's ``ApiError``s (409s are for the caller to retry).
        """
        meta = desired.secret["metadata"]
        existing = self.secrets.get(meta["namespace"], meta["name"])
        if existing is None:
            # Not in the cache: most often it does not exist yet, so create without reading first (a create
            # never replaces anything). A Secret of that name the cache does not hold (someone else's, or
            # ours not yet seen) answers AlreadyExists; then it is read and judged as any existing one.
            try:
                created = await self._client.create(SECRETS, desired.secret)
            except AlreadyExistsError:
                existing = await self.existing(meta["namespace"], meta["name"])
                if existing is None:  # deleted since: a 409 for the caller to retry
                    raise
            else:
                SECRET_WRITES.labels(reason="create").inc()
                return WriteResult(created, "create", True)
        update = plan_update(existing, desired)
        if update is None:
            return WriteResult(existing, None, False)
        written = await self._client.replace(SECRETS, update.secret)
        SECRET_WRITES.labels(reason=update.reason).inc()
        return WriteResult(written, update.reason, (existing.get("data") or {}) != (written.get("data") or {}))

    async def delete(self, secret: KubeObject) -> None:
        """Delete ``secret`` if it is still the object seen (same uid and resourceVersion)."""
        meta = secret["metadata"]
        try:
            await self._client.delete(
                SECRETS,
                meta["name"],
                meta["namespace"],
                preconditions={"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]},
            )
        except NotFoundError:
            return
        SECRET_WRITES.labels(reason="delete").inc()
