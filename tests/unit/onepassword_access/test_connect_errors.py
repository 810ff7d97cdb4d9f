"""Every HTTP answer becomes a typed value or a typed ``ConnectError``, whatever its body."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from onepassword_access.errors import (
    BadRequestError,
    ConnectError,
    ForbiddenError,
    InvalidResponseError,
    NotFoundError,
    RateLimitedError,
    Reply,
    ServerError,
    UnauthorizedError,
    error_for,
    parse_json,
    parse_retry_after,
)
from onepassword_access.models import Item, ItemSummary, Vault

ITEM = TypeAdapter(Item)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


def reply(status: int, body: bytes, headers: dict[str, str] | None = None) -> Reply:
    return Reply("GET", "/v1/vaults/v/items/i", status, headers or {}, body)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, BadRequestError),
        (401, UnauthorizedError),
        (403, ForbiddenError),
        (404, NotFoundError),
        (429, RateLimitedError),
        (500, ServerError),
        (503, ServerError),
        (413, ConnectError),
        (302, ConnectError),
    ],
)
def test_statuses_map_to_typed_errors_with_the_go_sdk_text(status: int, kind: type[ConnectError]) -> None:
    error = error_for(reply(status, json.dumps({"status": status, "message": "item i not found"}).encode()))
    assert type(error) is kind
    assert str(error) == f"status {status}: item i not found"
    assert (error.status, error.method, error.path) == (status, "GET", "/v1/vaults/v/items/i")


def test_transient_errors_are_the_retried_ones() -> None:
    transient = {
        status for status in (400, 401, 403, 404, 413, 429, 500, 502, 503) if error_for(reply(status, b"")).transient
    }
    assert transient == {429, 500, 502, 503}


def test_a_body_that_is_not_an_error_object_is_never_quoted() -> None:
    error = error_for(reply(500, b'{"fields": [{"value": "hunter2"}]}'))
    assert str(error) == "status 500: Internal Server Error"
    assert "hunter2" not in str(error)
    assert str(error_for(reply(502, b"<html>bad gateway hunter2</html>"))) == "status 502: Bad Gateway"


def test_retry_after_is_read_as_seconds_or_as_a_date() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after("Mon, 01 Jan 2024 00:00:07 GMT", now=now) == 7.0
    assert parse_retry_after("Sun, 31 Dec 2023 00:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after(None) is None
    error = error_for(reply(429, b"", {"Retry-After": "2"}))
    assert isinstance(error, RateLimitedError)
    assert error.retry_after == 2.0


def test_malformed_success_bodies_are_invalid_responses_without_their_content() -> None:
    with pytest.raises(InvalidResponseError, match="not JSON") as not_json:
        parse_json(reply(200, b"<html>hunter2</html>"), ITEM)
    with pytest.raises(InvalidResponseError, match=r"vault: Field required") as missing:
        parse_json(reply(200, b'{"id": "x", "fields": [{"value": "hunter2"}]}'), ITEM)
    with pytest.raises(InvalidResponseError, match=r"fields\.0\.value") as mistyped:
        parse_json(reply(200, b'{"id": "x", "vault": {"id": "v"}, "fields": [{"value": ["hunter2"]}]}'), ITEM)
    for caught in (not_json, missing, mistyped):
        assert "hunter2" not in str(caught.value)
        assert caught.value.__cause__ is None
        assert caught.value.__suppress_context__


def test_deeply_nested_bodies_are_invalid_responses() -> None:
    with pytest.raises(InvalidResponseError):
        parse_json(reply(200, b"[" * 100_000 + b"]" * 100_000), TypeAdapter(list[Vault]))


@given(status=st.sampled_from([200, 201, 400, 401, 403, 404, 409, 413, 429, 500, 503]), body=JSON)
def test_any_json_body_gives_a_value_or_a_typed_error(status: int, body: object) -> None:
    adapters: tuple[TypeAdapter[Any], ...] = (ITEM, TypeAdapter(list[ItemSummary]), TypeAdapter(list[Vault]))
    for adapter in adapters:
        try:
            value = parse_json(reply(status, json.dumps(body).encode()), adapter)
        except ConnectError as err:
            assert err.status == status
            assert str(err)
        else:
            assert 200 <= status < 300
            assert adapter.validate_python(value) == value


@given(body=st.binary(max_size=200))
def test_any_bytes_give_a_value_or_a_typed_error(body: bytes) -> None:
    try:
        vaults = parse_json(reply(200, body), TypeAdapter(list[Vault]))
    except InvalidResponseError as err:
        assert err.status == 200
    else:
        assert isinstance(vaults, list)
