"""The SDK backend's pure parts, and the real 1Password SDK refusing malformed tokens offline."""

from __future__ import annotations

import asyncio
import time

import pytest

from onepassword_access.errors import (
    ConnectError,
    ForbiddenError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    UnauthorizedError,
    UnreachableError,
)
from onepassword_access.sdk import SdkBackend, TokenFormatError, error_from_message


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-service-account-token",
        "ops_",
        "ops_abc",
        "ops_eyJzaWduSW5BZGRyZXNzIjoiZXhhbXBsZS4xcGFzc3dvcmQuY29tIn0",  # JSON, but no service account in it
    ],
    ids=["empty", "no-prefix", "prefix-only", "not-base64-json", "json-without-credentials"],
)
async def test_the_real_sdk_refuses_a_malformed_token_offline(token: str) -> None:
    """No emulated core here: the SDK's native core itself (it would need the network for a valid token)."""
    calls: list[tuple[str, str]] = []
    backend = SdkBackend(token, integration_version="0.1.0", timeout=10, on_call=lambda *c: calls.append(c))
    started = time.monotonic()
    with pytest.raises(TokenFormatError) as caught:
        await backend.authenticate()
    assert time.monotonic() - started < 5  # offline: no sign-in was attempted
    assert str(caught.value).startswith("1Password SDK Authenticate: ")
    assert ("invalid user input" in str(caught.value)) or ("invalid service account token" in str(caught.value))
    if token:
        assert token not in str(caught.value)
    assert calls == [("Authenticate", "error")]


@pytest.mark.parametrize(
    ("operation", "message", "kind"),
    [
        ("ItemsGet", "rate limit exceeded", RateLimitedError),
        ("Authenticate", "authentication error: you are not authenticated", UnauthorizedError),
        ("VaultsList", "bad service account token, please rotate it: session expired", UnauthorizedError),
        ("VaultsList", "http error: unexpected http status: 401 Unauthorized", UnauthorizedError),
        ("ItemsGet", "error performing an item operation: item couldn't be found", NotFoundError),
        ("ItemsGet", "you don't have the right permissions to access this resource", ForbiddenError),
        ("VaultsList", "http error: unexpected http status: 503 Service Unavailable", ServerError),
        ("VaultsList", "http error: error sending request", UnreachableError),
        ("ItemsList", "request timeout", UnreachableError),
        ("ItemsList", "something nobody foresaw", ConnectError),
    ],
)
def test_core_messages_pick_the_error_class(operation: str, message: str, kind: type[ConnectError]) -> None:
    error = error_from_message(operation, message)
    assert type(error) is kind
    assert str(error) == f"1Password SDK {operation}: {message}"
    assert error.transient == kind.transient  # outages are retried, refusals are not


def test_only_sign_in_can_meet_a_malformed_token() -> None:
    text = "invalid service account token, please make sure you provide a valid service account token"
    assert isinstance(error_from_message("Authenticate", text), TokenFormatError)
    assert not isinstance(error_from_message("ItemsGet", text), TokenFormatError)


def test_the_token_stays_out_of_repr() -> None:
    assert "ops_" not in repr(SdkBackend("ops_s3cr3t", integration_version="0.1.0"))


async def test_calls_time_out() -> None:
    backend = SdkBackend("ops_x", integration_version="0.1.0", timeout=0.05)

    async def never() -> None:
        await asyncio.Event().wait()

    with pytest.raises(UnreachableError, match=r"no answer within 0\.05s"):
        await backend._timed("ItemsGet", never)
