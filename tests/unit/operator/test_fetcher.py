"""ItemFetcher: one fetch per item version, shared by concurrent callers; rate limits pause every request."""

from __future__ import annotations

import asyncio

import pytest

from controllers.failures import classify
from controllers.fetcher import ItemFetcher
from onepassword_access.errors import (
    RateLimitedError,
)
from onepassword_access.models import Item
from onepassword_access.paths import ItemPathError
from onepassword_access.resolve import ResolvedItem, ResolveError, ResolveErrorKind

VAULT, ITEM = "hfnjvi6aymbsnfc2xeeoheizda", "wepiqdxdzncjtnvmv5fegud4qy"


class FakeResolver:
    """Resolves every path to the item at ``version``; counts calls; can be made to fail or wait."""

    def __init__(self) -> None:
        self.version = 1
        self.calls = 0
        self.fail: Exception | None = None
        self.gate = asyncio.Event()
        self.gate.set()
        self.extra: dict[str, object] = {}  # more of the item's wire form: fields, URLs, sections, tags

    async def resolve(self, path: str, *, files: bool = True) -> ResolvedItem:
        self.calls += 1
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        item = Item.model_validate(
            {"id": ITEM, "vault": {"id": VAULT}, "version": self.version, "title": "db", **self.extra}
        )
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


async def test_a_held_item_keeps_what_its_secret_needs_and_drops_the_rest() -> None:
    items, resolver = fetcher()
    resolver.extra = {
        "sections": [{"id": "s1", "label": "db"}],
        "fields": [{"id": "f1", "label": "password", "value": "hunter2", "section": {"id": "s1"}}],
        "urls": [{"href": "https://db.example", "primary": True}],
        "tags": ["prod"],
    }
    first = (await items.get(PATH))[1]
    resolved, again = await items.get(PATH)
    assert resolver.calls == 1
    assert again == first
    assert [(f.label, f.value, f.section) for f in again.fields] == [("password", "hunter2", "db")]
    assert [u.href for u in again.urls] == ["https://db.example"]
    assert (resolved.item.id, resolved.item.title, resolved.item.tags, resolved.version) == (ITEM, "db", ["prod"], 1)
    assert (resolved.item.fields, resolved.item.urls, resolved.item.sections) == ([], [], [])


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


class ManyItems(FakeResolver):
    """Resolves ``vaults/<VAULT>/items/<id>`` to item ``id``; records how many requests were in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.most_in_flight = 0

    async def resolve(self, path: str, *, files: bool = True) -> ResolvedItem:
        assert not files  # files are downloaded by get, after authorize: never ahead of it
        self.calls += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # let the others start: a round trip
            await self.gate.wait()
            if self.fail is not None:
                raise self.fail
        finally:
            self.in_flight -= 1
        item_id = path.rsplit("/", 1)[-1]
        item = Item.model_validate({"id": item_id, "vault": {"id": VAULT}, "version": self.version, "title": item_id})
        return ResolvedItem(item=item, vault_id=VAULT, files={})


def paths(count: int) -> list[str]:
    return [f"vaults/{VAULT}/items/item{index:022d}" for index in range(count)]


async def test_prefetch_fetches_changed_items_a_bounded_number_at_a_time_and_get_then_asks_nothing() -> None:
    resolver = ManyItems()
    items = ItemFetcher(resolver)  # type: ignore[arg-type]
    wanted = paths(40)
    assert await items.prefetch([*wanted, *wanted, "vaults/x"], concurrency=8) == 40  # duplicates and bad paths
    assert resolver.calls == 40
    assert resolver.most_in_flight == 8
    assert all(items.holds_current(path) for path in wanted)
    await asyncio.gather(*(items.get(path) for path in wanted))
    assert resolver.calls == 40
    # Only what the poller saw move is fetched again.
    resolver.version = 2
    items.observe(VAULT, {wanted[0].rsplit("/", 1)[-1]: 2})
    assert await items.prefetch(wanted, concurrency=8) == 1
    assert resolver.calls == 41


async def test_prefetch_joins_a_reconcile_fetch_in_flight() -> None:
    resolver = ManyItems()
    items = ItemFetcher(resolver)  # type: ignore[arg-type]
    resolver.gate.clear()
    [path] = paths(1)
    reconcile = asyncio.ensure_future(items.get(path))
    prefetch = asyncio.ensure_future(items.prefetch([path], concurrency=4))
    await asyncio.sleep(0.01)
    resolver.gate.set()
    await reconcile
    await prefetch
    assert resolver.calls == 1


async def test_prefetch_leaves_failures_to_the_reconcilers_and_stops_at_a_rate_limit() -> None:
    now = [100.0]
    resolver = ManyItems()
    items = ItemFetcher(resolver, clock=lambda: now[0])  # type: ignore[arg-type]
    resolver.fail = ResolveError(ResolveErrorKind.ITEM_NOT_FOUND, "no items found")
    assert await items.prefetch(paths(3), concurrency=4) == 0  # not raised: each reconcile reports its own
    resolver.fail = ResolveError(ResolveErrorKind.CONNECT, "x", RateLimitedError("status 429", retry_after=60))
    resolver.calls = 0
    assert await items.prefetch(paths(10), concurrency=1) == 0
    assert resolver.calls == 1  # the first 429 paused the rest
    assert items.rate_limited_for() == 60
    resolver.fail = None
    assert await items.prefetch(paths(10), concurrency=4) == 0  # still paused: nothing sent
    assert resolver.calls == 1
