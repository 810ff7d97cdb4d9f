"""Typed Connect errors, and turning one HTTP reply into a value or one of them.

Messages follow the Go SDK's ``status <code>: <message>``, where the message comes only from Connect's
``{status, message}`` error body; other response bodies (items hold secrets) never reach an error text.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import TypeVar

from pydantic import TypeAdapter, ValidationError

T = TypeVar("T")
_MAX_MESSAGE = 200  # characters of a server message kept in an error
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # only then can json.loads give a lone surrogate


class ConnectError(Exception):
    """Connect refused or failed a request. ``status`` is the HTTP status, None when there was no answer."""

    transient = False
    """Whether trying again later may succeed (the client retries these)."""

    def __init__(self, message: str, *, status: int | None = None, method: str = "", path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.method = method
        self.path = path


class BadRequestError(ConnectError):
    """400: a malformed id or filter, or an invalid item."""


class UnauthorizedError(ConnectError):
    """401: the token is missing, invalid or expired (or may not write to the vault)."""


class ForbiddenError(ConnectError):
    """403: the token has no access to the vault."""


class NotFoundError(ConnectError):
    """404: no such vault, item or file."""


class RateLimitedError(ConnectError):
    """429. ``retry_after`` is the wait Connect asked for (``Retry-After``), in seconds, if it said."""

    transient = True

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = 429,
        method: str = "",
        path: str = "",
    ) -> None:
        super().__init__(message, status=status, method=method, path=path)
        self.retry_after = retry_after


class ServerError(ConnectError):
    """5xx, including the 500 Connect answers while an item's files are not synced yet."""

    transient = True


class UnreachableError(ConnectError):
    """No answer: the connection failed or broke."""

    transient = True


class ConnectTimeoutError(UnreachableError):
    """No complete answer within the timeout."""


class CertificateError(UnreachableError):
    """TLS verification of the server failed: trying again will not help."""

    transient = False


class InvalidResponseError(ConnectError):
    """An answer that is not what the API promises: not JSON, or missing or mistyped properties."""


class TooLargeError(ConnectError):
    """An answer (or a file, by its metadata) larger than opsync accepts (``onepassword_access.limits``).

    Not transient: the same item answers the same size until it is changed in 1Password."""

    def __init__(
        self, message: str, *, limit: int, status: int | None = None, method: str = "", path: str = ""
    ) -> None:
        super().__init__(message, status=status, method=method, path=path)
        self.limit = limit


_BY_STATUS: dict[int, type[ConnectError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    429: RateLimitedError,
}


@dataclass(frozen=True, slots=True)
class Reply:
    """One HTTP answer, read whole."""

    method: str
    path: str
    status: int
    headers: Mapping[str, str]
    body: bytes = field(repr=False)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _server_message(reply: Reply) -> str:
    """The ``message`` of a ``{status, message}`` body, else the status's reason phrase."""
    try:
        data = json.loads(reply.body)
    except (ValueError, RecursionError):
        data = None
    message = data.get("message") if isinstance(data, dict) else None
    if isinstance(message, str) and message.strip():
        return message.strip()[:_MAX_MESSAGE]
    try:
        return HTTPStatus(reply.status).phrase
    except ValueError:
        return "unexpected status"


def error_for(reply: Reply) -> ConnectError:
    """The typed error for a non-2xx reply."""
    text = f"status {reply.status}: {_server_message(reply)}"
    if reply.status == 429:
        return RateLimitedError(
            text,
            retry_after=parse_retry_after(reply.headers.get("Retry-After")),
            status=reply.status,
            method=reply.method,
            path=reply.path,
        )
    kind = ServerError if reply.status >= 500 else _BY_STATUS.get(reply.status, ConnectError)
    return kind(text, status=reply.status, method=reply.method, path=reply.path)


def check(reply: Reply) -> Reply:
    """``reply`` if its status is 2xx; raises the typed error otherwise."""
    if not 200 <= reply.status < 300:
        raise error_for(reply)
    return reply


def parse_json(reply: Reply, adapter: TypeAdapter[T]) -> T:
    """The reply's JSON body as ``T``; any non-2xx status or malformed body raises a ``ConnectError``."""
    check(reply)
    if not _SURROGATE_ESCAPE.search(reply.body):
        # Parsed and validated from the bytes in one step (pydantic's own JSON parser): no dicts and lists
        # built only to be validated and dropped, a third of the peak memory of a large listing.
        try:
            return adapter.validate_json(reply.body)
        except ValidationError as err:
            if any(problem["type"] == "json_invalid" for problem in err.errors()):
                raise _invalid(reply, "the answer is not JSON") from None
            raise _invalid(reply, f"unexpected answer: {validation_summary(err)}") from None
    try:
        data = json.loads(reply.body)
        if _SURROGATE_ESCAPE.search(reply.body):
            data = _without_lone_surrogates(data)
    except (ValueError, RecursionError):
        raise _invalid(reply, "the answer is not JSON") from None
    try:
        return adapter.validate_python(data)
    except (ValidationError, RecursionError) as err:
        raise _invalid(reply, f"unexpected answer: {validation_summary(err)}") from None


def _without_lone_surrogates(value: object) -> object:
    """``value`` with every lone UTF-16 surrogate in its strings replaced by U+FFFD, as Go's JSON decoder does.

    ``"\\ud800"`` is valid JSON but no character: left in, encoding the string as UTF-8 (a Secret value)
    would raise. Pairs were already joined by ``json.loads``, so any surrogate left is a lone one.
    """
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_without_lone_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_without_lone_surrogates(k): _without_lone_surrogates(v) for k, v in value.items()}
    return value


def _invalid(reply: Reply, problem: str) -> InvalidResponseError:
    return InvalidResponseError(
        f"{reply.method} {reply.path}: {problem}", status=reply.status, method=reply.method, path=reply.path
    )


def validation_summary(err: ValidationError | RecursionError) -> str:
    """Where the body was wrong, without the offending values (they may be secrets)."""
    if isinstance(err, RecursionError):
        return "nested too deeply"
    problems = err.errors(include_url=False, include_input=False, include_context=False)
    shown = [f"{'.'.join(map(str, p['loc'])) or 'body'}: {p['msg']}" for p in problems[:3]]
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(shown) + more
