"""How API server failures become typed errors: only the server's Status, never a request body, is used."""

from __future__ import annotations

import json

import pytest

from opsync.client import (
    AlreadyExistsError,
    ApiError,
    ConflictError,
    ForbiddenError,
    GoneError,
    InvalidError,
    NotFoundError,
    TooManyRequestsError,
    error_from_response,
    error_from_status,
)


def status(code: int, reason: str, message: str = "", **details: object) -> dict[str, object]:
    body: dict[str, object] = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code}
    body.update(reason=reason, message=message)
    if details:
        body["details"] = details
    return body


@pytest.mark.parametrize(
    ("code", "reason", "kind"),
    [
        (404, "NotFound", NotFoundError),
        (409, "Conflict", ConflictError),
        (409, "AlreadyExists", AlreadyExistsError),
        (403, "Forbidden", ForbiddenError),
        (410, "Gone", GoneError),
        (422, "Invalid", InvalidError),
        (429, "TooManyRequests", TooManyRequestsError),
        (500, "InternalError", ApiError),
    ],
)
def test_status_codes_map_to_typed_errors(code: int, reason: str, kind: type[ApiError]) -> None:
    err = error_from_status(code, status(code, reason, "what the server said"))
    assert type(err) is kind
    assert (err.status, err.reason, err.message) == (code, reason, "what the server said")
    assert str(err) == f"{code} {reason}: what the server said"


def test_an_expired_watch_error_event_is_gone() -> None:
    # Watch ERROR events carry a Status; "Expired" is what the watch cache sends for a too-old resourceVersion.
    err = error_from_status(500, status(410, "Expired", "too old resource version: 1 (5)"))
    assert isinstance(err, GoneError)
    assert err.status == 410


def test_a_gone_reason_is_gone_whatever_the_code() -> None:
    assert isinstance(error_from_status(500, {"kind": "Status", "reason": "Gone"}), GoneError)


def test_causes_and_retry_after_come_from_the_details() -> None:
    body = status(504, "Timeout", "Too large resource version", causes=[{"reason": "ResourceVersionTooLarge"}])
    assert error_from_status(504, body).causes == ("ResourceVersionTooLarge",)
    throttled = error_from_status(429, status(429, "TooManyRequests", retryAfterSeconds=3))
    assert throttled.retry_after == 3.0


def test_a_response_body_is_parsed_and_retry_after_header_read() -> None:
    data = json.dumps(status(429, "TooManyRequests", "slow down")).encode()
    err = error_from_response(429, data, {"Retry-After": "7"})
    assert isinstance(err, TooManyRequestsError)
    assert (err.message, err.retry_after) == ("slow down", 7.0)
    assert error_from_response(429, data, {"retry-after": "7"}).retry_after == 7.0  # HTTP/2's lower-case name


def test_a_body_that_is_not_a_status_is_not_echoed() -> None:
    # A proxy or a non-Status body may contain anything (including what was sent): it must not reach the error.
    err = error_from_response(404, b'{"kind": "Secret", "data": {"password": "aHVudGVyMg=="}}', {})
    assert isinstance(err, NotFoundError)
    assert "aHVudGVyMg" not in str(err)
    assert err.message == ""
    html = error_from_response(502, b"<html>bad gateway: hunter2</html>", {"Retry-After": "soon"})
    assert type(html) is ApiError
    assert "hunter2" not in str(html)
    assert html.retry_after is None


def test_errors_are_exceptions_of_the_base_type() -> None:
    with pytest.raises(ApiError):
        raise error_from_status(409, status(409, "Conflict"))
