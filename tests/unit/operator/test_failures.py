"""Failure classification: each error becomes a condition reason, an Event reason and a retry."""

from __future__ import annotations

import pytest

from controllers.constants import ConditionReason, EventReason
from controllers.failures import Retry, SecretConflictError, classify, retry_result
from controllers.secretdata import InvalidSecretError
from onepassword_access.errors import (
    ForbiddenError,
    RateLimitedError,
    ServerError,
    UnauthorizedError,
    UnreachableError,
)
from onepassword_access.paths import ItemPathError
from onepassword_access.resolve import ResolveError, ResolveErrorKind
from opsync.client import InvalidError
from opsync.reconcile import Result

VAULT, ITEM = "hfnjvi6aymbsnfc2xeeoheizda", "wepiqdxdzncjtnvmv5fegud4qy"


@pytest.mark.parametrize(
    ("error", "reason", "retry"),
    [
        (ItemPathError("nope"), ConditionReason.INVALID_ITEM_PATH, Retry.ON_CHANGE),
        (
            ResolveError(ResolveErrorKind.VAULT_NOT_FOUND, "failed to 'getVaultID' for vaultNameOrID='x': no vaults"),
            ConditionReason.VAULT_NOT_FOUND,
            Retry.BACKOFF,
        ),
        (
            ResolveError(ResolveErrorKind.ITEM_NOT_FOUND, 'no items found with identifier "x"'),
            ConditionReason.ITEM_NOT_FOUND,
            Retry.BACKOFF,
        ),
        (
            ResolveError(ResolveErrorKind.CONNECT, "x", UnauthorizedError("status 401: Invalid bearer token")),
            ConditionReason.UNAUTHORIZED,
            Retry.BACKOFF,
        ),
        (
            ResolveError(ResolveErrorKind.CONNECT, "x", ForbiddenError("status 403: no access")),
            ConditionReason.ACCESS_DENIED,
            Retry.BACKOFF,
        ),
        (
            ResolveError(ResolveErrorKind.CONNECT, "x", UnreachableError("cannot reach")),
            ConditionReason.CONNECT_UNAVAILABLE,
            Retry.BACKOFF,
        ),
        (
            ResolveError(ResolveErrorKind.CONNECT, "x", ServerError("status 503")),
            ConditionReason.CONNECT_UNAVAILABLE,
            Retry.BACKOFF,
        ),
        (SecretConflictError("ns", "db"), ConditionReason.SECRET_CONFLICT, Retry.BACKOFF),
        (InvalidSecretError("needs tls.crt"), ConditionReason.INVALID_SECRET, Retry.BACKOFF),
        (InvalidError(422, "Invalid", "data[.]: Invalid value"), ConditionReason.INVALID_SECRET, Retry.BACKOFF),
    ],
)
def test_each_failure_has_a_reason_and_a_retry(error: Exception, reason: ConditionReason, retry: Retry) -> None:
    failure = classify(error)
    assert failure is not None
    assert (failure.reason, failure.retry) == (reason, retry)
    assert failure.message


def test_lookup_failures_keep_the_go_operator_wording() -> None:
    failure = classify(ResolveError(ResolveErrorKind.ITEM_NOT_FOUND, 'no items found with identifier "x" in vault "v"'))
    assert failure is not None
    assert failure.message == 'failed to retrieve item: no items found with identifier "x" in vault "v"'
    assert failure.event_reason is EventReason.RECONCILE_ERROR
    assert failure.event_message == f"Failed to sync secret from 1Password: {failure.message}"


def test_rate_limits_wait_for_retry_after_else_fifteen_minutes() -> None:
    told = classify(ResolveError(ResolveErrorKind.CONNECT, "x", RateLimitedError("status 429", retry_after=120)))
    untold = classify(RateLimitedError("status 429"))
    assert told is not None and untold is not None
    assert (told.reason, told.retry, told.delay) == (ConditionReason.RATE_LIMITED, Retry.AFTER, 120)
    assert told.message == "1Password rate limit hit. Requeuing after 2 minutes."
    assert (untold.delay, untold.message) == (900, "1Password rate limit hit. Requeuing after 15 minutes.")
    assert untold.event_reason is EventReason.RATE_LIMITED
    assert retry_result(told) == Result(requeue_after=120)


def test_conflict_message_says_how_to_resolve_it() -> None:
    failure = classify(SecretConflictError("apps", "db"))
    assert failure is not None
    assert "Delete or rename it, or label it opsync.dev/managed=true" in failure.message
    assert failure.event_reason is EventReason.SECRET_CONFLICT


def test_bugs_are_not_failures() -> None:
    assert classify(KeyError("x")) is None


def test_retry_results() -> None:
    on_change = classify(ItemPathError("x"))
    backoff = classify(ResolveError(ResolveErrorKind.ITEM_NOT_FOUND, "x"))
    assert on_change is not None and backoff is not None
    assert retry_result(on_change) is None
    assert retry_result(backoff) == Result(requeue=True)
