"""The operator's pure parts: failure classification, owner references, metric labels, the item fetcher."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from controllers.constants import ConditionReason, EventReason
from controllers.failures import Retry, SecretConflictError, classify, retry_result
from controllers.fetcher import ItemFetcher
from controllers.merge import made_for_workloads, owner_references
from controllers.metrics import endpoint_template
from controllers.secretdata import InvalidSecretError
from controllers.status import ready_condition
from controllers.workloads import annotated_secret
from onepassword_access.errors import (
    ForbiddenError,
    RateLimitedError,
    ServerError,
    UnauthorizedError,
    UnreachableError,
)
from onepassword_access.models import Item
from onepassword_access.paths import ItemPathError
from onepassword_access.resolve import ResolvedItem, ResolveError, ResolveErrorKind
from opsync.client import InvalidError
from opsync.reconcile import Result

VAULT, ITEM = "hfnjvi6aymbsnfc2xeeoheizda", "wepiqdxdzncjtnvmv5fegud4qy"

# --- classify ----------------------------------------------------------------------------------------------


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


# --- status ------------------------------------------------------------------------------------------------


def test_transition_time_moves_only_with_the_status() -> None:
    first = ready_condition(None, "False", "ItemNotFound", "m", 1)
    first["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    same = ready_condition(first, "False", "VaultNotFound", "other", 2)
    flipped = ready_condition(same, "True", "Synced", "ok", 2)
    assert same["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    assert (same["reason"], same["observedGeneration"]) == ("VaultNotFound", 2)
    assert flipped["lastTransitionTime"] != "2020-01-01T00:00:00Z"


# --- owner references and workload Secrets -------------------------------------------------------------------


def ref(kind: str, name: str, uid: str, api_version: str = "apps/v1", **flags: bool) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, **flags}


def test_owner_references_replace_producers_and_keep_others() -> None:
    existing = [
        ref("Deployment", "gone", "1"),
        ref("OnePasswordItem", "db", "2", "onepassword.com/v1"),  # the Go operator's, without controller
        ref("Application", "argo", "3", "argoproj.io/v1alpha1"),
    ]
    desired = [ref("OnePasswordItem", "db", "2", "onepassword.com/v1", controller=True, blockOwnerDeletion=True)]
    assert owner_references(existing, desired) == [existing[2], desired[0]]


def test_another_controller_keeps_its_place() -> None:
    existing = [ref("SealedSecret", "db", "9", "bitnami.com/v1alpha1", controller=True)]
    desired = [ref("OnePasswordItem", "db", "2", "onepassword.com/v1", controller=True, blockOwnerDeletion=True)]
    merged = owner_references(existing, desired)
    assert [r.get("controller") for r in merged] == [True, None]


def test_which_secrets_were_made_for_workloads() -> None:
    assert made_for_workloads({"metadata": {"ownerReferences": [ref("StatefulSet", "a", "1")]}})
    assert made_for_workloads({"metadata": {"annotations": {"operator.1password.io/item-name": "x"}}})
    opi_owned = {"metadata": {"ownerReferences": [ref("OnePasswordItem", "db", "2", "onepassword.com/v1")]}}
    assert not made_for_workloads(opi_owned)
    assert not made_for_workloads({"metadata": {}})


def test_item_name_is_sanitised_and_read_from_metadata_before_the_template() -> None:
    workload = {
        "metadata": {"annotations": {"operator.1password.io/item-name": "My Secret"}},
        "spec": {"template": {"metadata": {"annotations": {"operator.1password.io/item-name": "other"}}}},
    }
    assert annotated_secret(workload) == "my-secret"
    assert annotated_secret({"metadata": {}}) is None


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v1/vaults", "/v1/vaults"),
        (f"/v1/vaults/{VAULT}", "/v1/vaults/{id}"),
        (f"/v1/vaults/{VAULT}/items/{ITEM}", "/v1/vaults/{id}/items/{id}"),
        (f"/v1/vaults/{VAULT}/items/{ITEM}/files/abc/content", "/v1/vaults/{id}/items/{id}/files/{id}/content"),
        ("/health", "/health"),
    ],
)
def test_connect_endpoints_are_labelled_without_ids(path: str, template: str) -> None:
    assert endpoint_template(path) == template


# --- the item fetcher ----------------------------------------------------------------------------------------


class FakeResolver:
    """Resolves every path to the item at ``version``; counts calls; can be made to fail or wait."""

    def __init__(self) -> None:
        self.version = 1
        self.calls = 0
        self.fail: Exception | None = None
        self.gate = asyncio.Event()
        self.gate.set()

    async def resolve(self, path: str, *, files: bool = True) -> ResolvedItem:
        self.calls += 1
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        item = Item.model_validate({"id": ITEM, "vault": {"id": VAULT}, "version": self.version, "title": "db"})
        return ResolvedItem(item=item, vault_id=VAULT, files={})

    def retain_files(self, item_ids: object) -> None:
        pass


PATH = "vaults/k8s/items/db"


def fetcher() -> tuple[ItemFetcher, FakeResolver]:
    resolver = FakeResolver()
    return ItemFetcher(resolver), resolver  # type: ignore[arg-type]


async def test_an_item_is_fetched_once_until_the_poller_sees_a_newer_version() -> None:
    items, resolver = fetcher()
    assert (await items.get(PATH))[1].version == 1
    await items.get(PATH)
    assert resolver.calls == 1
    items.observe(VAULT, {ITEM: 1})
    await items.get(PATH)
    assert resolver.calls == 1
    resolver.version = 2
    items.observe(VAULT, {ITEM: 2})
    assert (await items.get(PATH))[1].version == 2
    assert resolver.calls == 2


async def test_concurrent_callers_share_one_request() -> None:
    items, resolver = fetcher()
    resolver.gate.clear()
    waiting = [asyncio.ensure_future(items.get(PATH)) for _ in range(5)]
    await asyncio.sleep(0)
    resolver.gate.set()
    results = await asyncio.gather(*waiting)
    assert resolver.calls == 1
    assert {result[1].version for result in results} == {1}


async def test_a_cancelled_caller_does_not_cancel_the_others() -> None:
    items, resolver = fetcher()
    resolver.gate.clear()
    first = asyncio.ensure_future(items.get(PATH))
    second = asyncio.ensure_future(items.get(PATH))
    await asyncio.sleep(0)
    first.cancel()
    resolver.gate.set()
    assert (await second)[1].version == 1
    assert resolver.calls == 1


async def test_failures_are_not_remembered_and_removed_items_are_fetched_again() -> None:
    items, resolver = fetcher()
    resolver.fail = ResolveError(ResolveErrorKind.ITEM_NOT_FOUND, "no items found")
    with pytest.raises(ResolveError):
        await items.get(PATH)
    resolver.fail = None
    await items.get(PATH)
    items.observe(VAULT, {}, removed=[ITEM])
    await items.get(PATH)
    assert resolver.calls == 3


async def test_malformed_paths_never_reach_connect() -> None:
    items, resolver = fetcher()
    with pytest.raises(ItemPathError):
        await items.get("vaults/x")
    assert resolver.calls == 0


async def test_retain_forgets_unused_paths() -> None:
    items, resolver = fetcher()
    await items.get(PATH)
    items.retain([])
    await items.get(PATH)
    assert resolver.calls == 2


async def test_a_rate_limit_pauses_every_request_until_retry_after() -> None:
    now = [100.0]
    resolver = FakeResolver()
    items = ItemFetcher(resolver, clock=lambda: now[0])  # type: ignore[arg-type]
    resolver.fail = ResolveError(ResolveErrorKind.CONNECT, "x", RateLimitedError("status 429", retry_after=60))
    with pytest.raises(ResolveError):
        await items.get(PATH)
    resolver.fail = None
    now[0] += 59
    with pytest.raises(RateLimitedError) as raised:
        await items.get("vaults/k8s/items/other")
    assert raised.value.retry_after == pytest.approx(1)
    assert resolver.calls == 1
    now[0] += 1
    await items.get(PATH)
    assert resolver.calls == 2


def test_a_rate_limit_without_retry_after_pauses_fifteen_minutes() -> None:
    items = ItemFetcher(FakeResolver(), clock=lambda: 0.0)  # type: ignore[arg-type]
    items.note_rate_limit(RateLimitedError("status 429"))
    assert items.rate_limited_for() == 900


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.2, "1 second"), (59.01, "1 minute"), (61, "61 seconds"), (60, "1 minute"), (900, "15 minutes")],
)
def test_rate_limit_delays_read_well(seconds: float, text: str) -> None:
    failure = classify(RateLimitedError("status 429", retry_after=seconds))
    assert failure is not None
    assert failure.message == f"1Password rate limit hit. Requeuing after {text}."
