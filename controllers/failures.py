"""What a failed sync means for the user: a ``Ready`` reason, a readable message, an Event and when to retry.

Every failure of the item and workload reconcilers goes through ``classify`` so that the same problem reads
the same everywhere. Messages come from error texts that never hold values: Connect errors carry the server's
``message`` only, Kubernetes errors the ``Status`` message only, resolver errors ids and titles. Write races
are no failures: ``WRITE_RACES`` just run the reconcile again.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from enum import Enum

import aiohttp

from controllers.constants import (
    MANAGED_LABEL,
    MANAGED_LABEL_VALUE,
    RATE_LIMIT_REQUEUE,
    RECONCILE_ERROR_EVENT_MESSAGE,
    ConditionReason,
    EventReason,
)
from controllers.secretdata import InvalidSecretError
from onepassword_access.errors import (
    ConnectError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
    TooLargeError,
    UnauthorizedError,
)
from onepassword_access.paths import ItemPathError
from onepassword_access.resolve import ResolveError, ResolveErrorKind
from opsync.client import AlreadyExistsError, ApiError, ConflictError, InvalidError
from opsync.client import NotFoundError as ObjectNotFoundError
from opsync.events import EventRecorder
from opsync.queue import BucketRateLimiter, ItemExponentialFailureRateLimiter, MaxOfRateLimiter, RateLimiter
from opsync.reconcile import Request, Result
from opsync.resources import KubeObject

log = logging.getLogger(__name__)

RETRIEVE_PREFIX = "failed to retrieve item: "
"""The Go operator wraps every lookup error so; kept for messages users may grep for."""

WRITE_RACES = (ConflictError, AlreadyExistsError, ObjectNotFoundError)
"""A write that raced with another writer, or with a deletion the cache had not seen yet: not a failure. The
reconcile simply runs again once the cache has caught up (and a vanished object then ends it)."""


class Retry(Enum):
    """When the key is tried again."""

    BACKOFF = "backoff"
    """With the controller's per-key exponential backoff (outages, conflicts, missing items)."""
    AFTER = "after"
    """After ``Failure.delay`` seconds (rate limits)."""
    ON_CHANGE = "on-change"
    """Only when the object changes: trying again cannot help."""


class SecretConflictError(Exception):
    """A Secret of the wanted name exists and belongs to someone else: opsync will not overwrite it."""

    def __init__(self, namespace: str, name: str, message: str = "") -> None:
        super().__init__(
            message
            or f'Secret "{name}" already exists in namespace "{namespace}" and was not made by opsync or the '
            f"1Password operator, so it is left alone. Delete or rename it, or label it "
            f"{MANAGED_LABEL}={MANAGED_LABEL_VALUE} to let opsync take it over (its data will be replaced)"
        )


class WorkloadSecretConflictError(SecretConflictError):
    """The Secret a OnePasswordItem wants was made for workloads that ask for it by annotation."""

    def __init__(self, namespace: str, name: str, secret: KubeObject) -> None:
        refs = (secret.get("metadata") or {}).get("ownerReferences") or []
        users = ", ".join(f'{ref.get("kind")} "{ref.get("name")}"' for ref in refs) or "annotated workloads"
        super().__init__(
            namespace,
            name,
            f'Secret "{name}" in namespace "{namespace}" was made for {users} from their annotations; a '
            "OnePasswordItem of the same name does not take it over. Rename the item, or drop the workloads' "
            "item annotations",
        )


class AccessDeniedError(Exception):
    """No OnePasswordAccessPolicy lets the namespace sync the item (``controllers.access``); the text names
    the gap, never a value. ``item_limited``: only the item's tags or title are at fault, so a change in
    1Password may lift the denial."""

    def __init__(self, message: str, *, item_limited: bool = False) -> None:
        super().__init__(message)
        self.item_limited = item_limited


@dataclass(frozen=True, slots=True)
class Failure:
    reason: ConditionReason
    message: str
    retry: Retry
    delay: float | None = None
    event_reason: EventReason = EventReason.RECONCILE_ERROR

    @property
    def event_message(self) -> str:
        """The Event text: the Go operator's wording for sync errors, the plain message otherwise."""
        if self.event_reason is EventReason.RECONCILE_ERROR:
            return RECONCILE_ERROR_EVENT_MESSAGE.format(error=self.message)
        return self.message


def _connect_reason(err: ConnectError) -> tuple[ConditionReason, Retry]:
    if isinstance(err, TooLargeError):
        return ConditionReason.SECRET_TOO_LARGE, Retry.BACKOFF
    if isinstance(err, UnauthorizedError):
        return ConditionReason.UNAUTHORIZED, Retry.BACKOFF
    if isinstance(err, ForbiddenError):
        return ConditionReason.ACCESS_DENIED, Retry.BACKOFF
    if isinstance(err, NotFoundError):
        return ConditionReason.ITEM_NOT_FOUND, Retry.BACKOFF
    return ConditionReason.CONNECT_UNAVAILABLE, Retry.BACKOFF


def _rate_limited(err: RateLimitedError) -> Failure:
    delay = err.retry_after if err.retry_after else RATE_LIMIT_REQUEUE
    return Failure(
        ConditionReason.RATE_LIMITED,
        f"1Password rate limit hit. Requeuing after {_duration(delay)}.",
        Retry.AFTER,
        delay,
        EventReason.RATE_LIMITED,
    )


def _duration(seconds: float) -> str:
    whole = math.ceil(seconds)
    if whole >= 60 and whole % 60 == 0:
        minutes = whole // 60
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{whole} second{'s' if whole != 1 else ''}"


def classify(err: Exception) -> Failure | None:
    """The ``Failure`` an error stands for; None for errors that are no failure to report: bugs, and write
    races (``WRITE_RACES``), which the reconcile retries quietly (``write_refused``). Let those propagate.
    """
    if isinstance(err, WRITE_RACES):
        return None
    if isinstance(err, ItemPathError):
        return Failure(ConditionReason.INVALID_ITEM_PATH, str(err), Retry.ON_CHANGE)
    if isinstance(err, ResolveError):
        message = RETRIEVE_PREFIX + str(err)
        if err.kind is ResolveErrorKind.VAULT_NOT_FOUND:
            return Failure(ConditionReason.VAULT_NOT_FOUND, message, Retry.BACKOFF)
        if err.kind is ResolveErrorKind.ITEM_NOT_FOUND:
            return Failure(ConditionReason.ITEM_NOT_FOUND, message, Retry.BACKOFF)
        assert err.cause is not None  # a CONNECT kind has one
        if isinstance(err.cause, RateLimitedError):
            return _rate_limited(err.cause)
        reason, retry = _connect_reason(err.cause)
        return Failure(reason, message, retry)
    if isinstance(err, RateLimitedError):
        return _rate_limited(err)
    if isinstance(err, ConnectError):
        reason, retry = _connect_reason(err)
        return Failure(reason, RETRIEVE_PREFIX + str(err), retry)
    if isinstance(err, AccessDeniedError):
        # Policy and Namespace label changes enqueue the affected keys again; a change of the item's tags or
        # title in 1Password does not (no Secret, nothing for the poller to track): backoff retries see it.
        retry = Retry.BACKOFF if err.item_limited else Retry.ON_CHANGE
        return Failure(ConditionReason.ACCESS_DENIED, str(err), retry, event_reason=EventReason.ACCESS_DENIED)
    if isinstance(err, SecretConflictError):
        return Failure(
            ConditionReason.SECRET_CONFLICT, str(err), Retry.BACKOFF, event_reason=EventReason.SECRET_CONFLICT
        )
    # Retried with backoff although only a change can fix them: a key in backoff is one the poller leaves
    # alone, so a broken item does not cost a reconcile (and an Event update) every poll.
    if isinstance(err, InvalidSecretError):
        return Failure(err.reason, str(err), Retry.BACKOFF)
    if isinstance(err, InvalidError):
        return Failure(
            ConditionReason.INVALID_SECRET, f"the API server refused the Secret: {err.message}", Retry.BACKOFF
        )
    if isinstance(err, ApiError):
        return Failure(ConditionReason.KUBERNETES_ERROR, f"Kubernetes API error: {err}", Retry.BACKOFF)
    if isinstance(err, aiohttp.ClientError | TimeoutError):
        return Failure(
            ConditionReason.KUBERNETES_ERROR, f"Kubernetes API unreachable: {type(err).__name__}", Retry.BACKOFF
        )
    return None


def write_refused(events: EventRecorder, obj: KubeObject, err: ApiError, *, what: str) -> Result:
    """The result of a reconcile ended by ``err``: a write race (``WRITE_RACES``) runs again quietly; any
    other refusal of a write to ``obj`` itself (finalizer, status, restart patch: forbidden, a webhook...)
    also gets a log line and a Warning Event on ``obj`` saying opsync could not update this ``what``."""
    if not isinstance(err, WRITE_RACES):
        log.warning("could not update the %s: %s", obj.get("kind") or what, err)
        events.event(obj, "Warning", EventReason.RECONCILE_ERROR, f"opsync could not update this {what}: {err}")
    return Result(requeue=True)


def retry_result(failure: Failure) -> Result | None:
    """The reconcile result that retries ``failure`` as it asks."""
    if failure.retry is Retry.AFTER and failure.delay:
        return Result(requeue_after=failure.delay)
    if failure.retry is Retry.ON_CHANGE:
        return None
    return Result(requeue=True)


def rate_limiter() -> RateLimiter[Request]:
    """Per-key backoff from 1 s to 5 min (controller-runtime's 5 ms start would hit an unreachable Connect
    several times within a second; its 1000 s cap leaves a fixed problem unnoticed for a quarter hour), and
    controller-runtime's overall 10 qps bucket."""
    return MaxOfRateLimiter(ItemExponentialFailureRateLimiter(1.0, 300.0), BucketRateLimiter(10.0, 100))
