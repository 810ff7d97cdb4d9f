"""Property: whatever a Connect server answers, every client method returns its model or raises a typed
``ConnectError``, never anything else, and never quotes a successful answer's content.

The answers come over real HTTP from a small aiohttp server (in a thread, with its own event loop) that
replies with the generated status, headers and body: arbitrary JSON, JSON shaped like Connect's objects
with wrong or extreme values, and bytes that are not JSON at all. Whatever parses as an ``Item`` must
then make a Secret without error (``controllers.desired``).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from controllers.desired import desired_secret
from controllers.secretdata import InvalidSecretError, item_input_from_connect
from onepassword_access.backend import ConnectBackend
from onepassword_access.client import ConnectClient, RetryPolicy
from onepassword_access.errors import ConnectError, Reply, parse_json
from onepassword_access.models import Health, Item, ItemSummary, Vault
from onepassword_access.resolve import ItemResolver, ResolvedItem, ResolveError

MARKER = "hunter2-s3cr3t"
"""A value planted in answers: it must never show in the error of a 2xx answer."""


@dataclass
class Answer:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


def route(path: str) -> str:
    """Which Connect endpoint ``path`` is: ``vaults``, ``items``, ``item``, ``content`` or ``other``."""
    parts = path.strip("/").split("/")
    if parts[-1] == "content":
        return "content"
    return {2: "vaults", 4: "items", 5: "item"}.get(len(parts), "other")


class Server:
    """An HTTP server in its own thread answering every request with ``answer``, or with ``by_route``'s
    answer for its endpoint (``route``) when there is one."""

    def __init__(self) -> None:
        self.answer = Answer()
        self.by_route: dict[str, Answer] = {}
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        answer = self.by_route.get(route(request.path), self.answer)
        return web.Response(status=answer.status, body=answer.body, headers=dict(answer.headers))

    async def _start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    def start(self) -> None:
        self._thread.start()
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    running = Server()
    running.start()
    yield running
    running.stop()


# --- what the server answers ------------------------------------------------------------------------------------

# Lone UTF-16 surrogates are valid in JSON ("\\ud800") but are no characters; a pair is one character.
text = st.text(max_size=20) | st.just(MARKER) | st.sampled_from(["a\ud800b", "\udfff", "\ud83d\ude00"])
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**63, max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | text
)
any_json = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
timestamps = (
    st.sampled_from(
        [
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00",
            "0001-01-01T00:00:00Z",
            "yesterday",
            "9999-12-31T23:59:59+14:00",
            "2024-02-30T00:00:00Z",
        ]
    )
    | scalars
)
ids = st.sampled_from(["wepiqdxdzncjtnvmv5fegud4qy", "", " ", "../x", "a/b"]) | text
ref = st.fixed_dictionaries({}, optional={"id": ids | any_json})
url = st.fixed_dictionaries({}, optional={"href": text | scalars, "label": text | scalars, "primary": scalars})
field_ = st.fixed_dictionaries(
    {},
    optional={
        "id": ids,
        "label": st.sampled_from(["password", "..x", ".", "###", "tls.crt", "😄 key"]) | scalars,
        "value": text | scalars,
        "type": st.sampled_from(["CONCEALED", "OTP", "NEW_TYPE"]) | scalars,
        "purpose": st.sampled_from(["PASSWORD", "", "OTHER"]) | scalars,
        "section": ref | scalars,
        "totp": text | scalars,
        "entropy": scalars,
        "recipe": any_json,
    },
)
file_ = st.fixed_dictionaries(
    {},
    optional={
        "id": ids,
        "name": text | scalars,
        "size": scalars,
        "content_path": text | scalars,
        "content": st.sampled_from(["aGk=", "not base64!", ""]) | scalars,
        "section": ref | scalars,
    },
)
summary_shape: dict[str, st.SearchStrategy[Any]] = {
    "id": ids,
    "title": text | scalars,
    "vault": ref | scalars,
    "category": st.sampled_from(["LOGIN", "NEW"]) | scalars,
    "urls": st.lists(url, max_size=3) | scalars,
    "tags": st.lists(text | scalars, max_size=3) | scalars,
    "version": scalars,
    "state": st.sampled_from(["ARCHIVED", "DELETED", "OTHER"]) | scalars,
    "createdAt": timestamps,
    "updatedAt": timestamps,
    "favorite": scalars,
}
summary = st.fixed_dictionaries({}, optional=summary_shape)
item = st.fixed_dictionaries(
    {},
    optional={
        **summary_shape,
        "fields": st.lists(field_, max_size=4) | scalars,
        "files": st.lists(file_, max_size=2) | scalars,
        "sections": st.lists(st.fixed_dictionaries({}, optional={"id": ids, "label": text | scalars}), max_size=2),
    },
)
vault = st.fixed_dictionaries(
    {},
    optional={
        "id": ids,
        "name": text | scalars,
        "contentVersion": scalars,
        "attributeVersion": scalars,
        "items": scalars,
        "type": st.sampled_from(["USER_CREATED", "NEW"]) | scalars,
        "createdAt": timestamps,
    },
)
# Well-typed items with odd values: these parse, and must then make a Secret (or say why not).
labels = st.sampled_from(["password", "..x", ".", "###", "tls.crt", "😄 key", "", "a" * 300]) | st.text(max_size=12)
good_field = st.fixed_dictionaries(
    {"label": labels, "value": text},
    optional={
        "id": st.text(max_size=5),
        "type": st.sampled_from(["CONCEALED", "OTP", "NEW_TYPE"]),
        "section": st.fixed_dictionaries({"id": st.text(max_size=5)}),
        "totp": text,
    },
)
good_file = st.fixed_dictionaries(
    {"id": st.text(max_size=5), "name": labels},
    optional={"content": st.sampled_from(["aGk=", ""]), "size": st.integers()},
)
good_url = st.fixed_dictionaries({"href": text}, optional={"label": labels, "primary": st.booleans()})
good_item = st.fixed_dictionaries(
    {"id": ids, "vault": st.fixed_dictionaries({"id": ids})},
    optional={
        "title": text,
        "version": st.integers(),
        "tags": st.lists(text, max_size=3),
        "urls": st.lists(good_url, max_size=3),
        "fields": st.lists(good_field, max_size=5),
        "files": st.lists(good_file, max_size=2),
        "createdAt": st.sampled_from(["2024-01-01T00:00:00Z"]),
    },
)
health = st.fixed_dictionaries(
    {},
    optional={
        "name": text | scalars,
        "version": text | scalars,
        "dependencies": st.lists(any_json, max_size=2) | scalars,
    },
)
shaped = any_json | good_item | item | summary | vault | health | st.lists(item | summary | vault, max_size=3)
bodies = (
    shaped.map(lambda value: json.dumps(value).encode())
    | st.binary(max_size=64)
    | st.sampled_from(
        [b"", b"<html>hunter2-s3cr3t</html>", b"[" * 5000 + b"]" * 5000, b"\xff\xfe", b"null", b'"\\ud800"']
    )
)
statuses = st.sampled_from([200, 200, 200, 201, 204, 302, 400, 401, 403, 404, 409, 413, 429, 500, 503])
headers = st.lists(
    st.sampled_from(
        [
            ("Retry-After", "5"),
            ("Retry-After", "soon"),
            ("Retry-After", "-1"),
            ("Retry-After", "1e309"),
            ("Content-Type", "text/html"),
            ("Content-Type", "application/json; charset=latin-1"),
            ("Content-Encoding", "gzip"),
            ("1Password-Connect-Version", "9.9.9"),
        ]
    ),
    max_size=2,
    unique_by=lambda header: header[0],
).map(tuple)
answers = st.builds(Answer, statuses, headers, bodies)

# --- what the client is asked ------------------------------------------------------------------------------------

Call = Callable[[ConnectClient], Awaitable[object]]
METHODS: dict[str, tuple[Call, Callable[[object], bool]]] = {
    "list_vaults": (lambda c: c.list_vaults(), lambda r: isinstance(r, list) and all(isinstance(v, Vault) for v in r)),
    "list_vaults_by_name": (
        lambda c: c.list_vaults(name='a "b"'),
        lambda r: isinstance(r, list) and all(isinstance(v, Vault) for v in r),
    ),
    "get_vault": (lambda c: c.get_vault("v"), lambda r: isinstance(r, Vault)),
    "list_items": (
        lambda c: c.list_items("v", title="t"),
        lambda r: isinstance(r, list) and all(isinstance(i, ItemSummary) for i in r),
    ),
    "get_item": (lambda c: c.get_item("v", "i"), lambda r: isinstance(r, Item)),
    "get_file_content": (
        lambda c: c.get_file_content("/v1/vaults/v/items/i/files/f/content"),
        lambda r: isinstance(r, bytes),
    ),
    "health": (lambda c: c.health(), lambda r: isinstance(r, Health)),
    "heartbeat": (lambda c: c.heartbeat(), lambda r: r is None),
}


async def ask(server: Server, method: str) -> object:
    call = METHODS[method][0]
    # One attempt: transient answers are raised instead of waited out (the retry path has its own tests).
    async with ConnectClient(server.url, "t0ken", timeout=5.0, retry=RetryPolicy(attempts=1)) as client:
        return await call(client)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(method=st.sampled_from(sorted(METHODS)), answer=answers)
def test_any_answer_gives_the_model_or_a_typed_error(server: Server, method: str, answer: Answer) -> None:
    server.answer, server.by_route = answer, {}
    try:
        result = asyncio.run(ask(server, method))
    except ConnectError as err:
        event(f"{method}: {type(err).__name__}")
        if 200 <= answer.status < 300:
            assert MARKER not in str(err)
        assert str(err)
        return
    event(f"{method}: parsed")
    assert 200 <= answer.status < 300
    assert METHODS[method][1](result)
    if isinstance(result, Item):
        make_secret(result)


def make_secret(item: Item) -> None:
    """A parsed item makes a Secret, or an ``InvalidSecretError`` says why not: nothing else."""
    files = {file.id: b"content" for file in item.files}
    try:
        secret = desired_secret(name="from-fuzz", namespace="default", item=item_input_from_connect(item, files))
    except InvalidSecretError:
        return
    assert secret.secret["metadata"]["name"] == "from-fuzz"
    json.dumps(secret.secret)  # what the Kubernetes client will send must serialise


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(body=good_item | item)
def test_any_item_that_parses_makes_a_secret_or_says_why_not(server: Server, body: dict[str, Any]) -> None:
    server.answer, server.by_route = Answer(200, (), json.dumps(body).encode()), {}
    try:
        result = asyncio.run(ask(server, "get_item"))
    except ConnectError as err:
        event("refused")
        assert MARKER not in str(err)
        return
    event("parsed")
    assert isinstance(result, Item)
    make_secret(result)


def test_lone_surrogates_become_replacement_characters_as_in_go() -> None:
    body = b'{"id": "i\\ud800", "vault": {"id": "v"}, "title": "\\ud83d\\ude00", "tags": ["\\udfff\\ud800"]}'
    item = parse_json(Reply("GET", "/v1/vaults/v/items/i", 200, {}, body), TypeAdapter(Item))
    assert (item.id, item.title, item.tags) == ("i\ufffd", "😀", ["\ufffd\ufffd"])


# --- the resolver over such answers: a ResolvedItem or a ResolveError, whatever each endpoint says --------------

VAULT_ID = "wepiqdxdzncjtnvmv5fegud4qy"
created = st.sampled_from([None, "2024-01-01T00:00:00Z", "2024-01-01T00:00:00", "2023-12-31T23:00:00-02:00"])
good_summary = st.fixed_dictionaries(
    {"id": st.sampled_from(["a" * 26, "b" * 26, "x"]), "vault": st.just({"id": VAULT_ID}), "title": st.just("db")},
    optional={"createdAt": created, "version": st.integers()},
).map(lambda d: {k: v for k, v in d.items() if v is not None})


def answer_of(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Answer]:
    """Mostly a 200 with ``values`` as JSON, sometimes any answer."""
    return st.builds(Answer, st.just(200), st.just(()), values.map(lambda v: json.dumps(v).encode())) | answers


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    vaults=answer_of(st.lists(vault, max_size=2)),
    items=answer_of(st.lists(good_summary | summary, max_size=3)),
    item_answer=answer_of(good_item | item),
    content=st.builds(Answer, statuses, headers, st.binary(max_size=16)),
)
def test_resolving_gives_an_item_or_a_resolve_error(
    server: Server, vaults: Answer, items: Answer, item_answer: Answer, content: Answer
) -> None:
    server.by_route = {"vaults": vaults, "items": items, "item": item_answer, "content": content}

    async def resolve() -> ResolvedItem:
        async with ConnectClient(server.url, "t0ken", timeout=5.0, retry=RetryPolicy(attempts=1)) as client:
            return await ItemResolver(ConnectBackend(client)).resolve(f"vaults/{VAULT_ID}/items/db")

    try:
        resolved = asyncio.run(resolve())
    except ResolveError as err:
        event(f"ResolveError: {type(err.cause).__name__}")
        return
    event("resolved")
    make_secret(resolved.item)
