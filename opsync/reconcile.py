"""What a reconciler is asked and what it answers: controller-runtime's ``pkg/reconcile``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from opsync.resources import NamespacedName

Request = NamespacedName
"""What a reconciler is asked to reconcile: the namespace and name of one object."""


@dataclass(frozen=True, slots=True)
class Result:
    """What a reconcile asks for next: nothing, a reconcile after a delay, or a retry with backoff."""

    requeue_after: float | None = None
    requeue: bool = False


class TerminalError(Exception):
    """A failure retrying cannot fix (an invalid spec, a missing permission on purpose...).

    The key is not requeued; the next event on the object reconciles it again.
    """


class Reconciler(Protocol):
    """Makes the world match one object's desired state; must be idempotent.

    Raising retries the key with backoff. An I/O failure (``OSError``, ``TimeoutError``, aiohttp's
    ``ClientError``, ``opsync.client.ApiError``) is an ordinary failed reconcile; any other exception is a
    bug, also counted in ``controller_runtime_reconcile_panics_total`` (controller-runtime counts panics).
    """

    async def reconcile(self, request: Request) -> Result | None: ...
