"""The API server's refusals as typed exceptions (client-go's ``k8s.io/apimachinery/pkg/api/errors``).

``message`` comes from the ``Status`` body only, never from the request (which may hold Secret data).
``opsync.client`` re-exports every name here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


class ApiError(Exception):
    """The API server refused a request. ``message`` comes from its ``Status`` body only."""

    def __init__(
        self,
        status: int,
        reason: str = "",
        message: str = "",
        *,
        causes: tuple[str, ...] = (),
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.causes = causes  # the ``reason`` of each ``details.causes`` entry
        self.retry_after = retry_after
        super().__init__(f"{status} {reason}: {message}" if message else f"{status} {reason}")


class NotFoundError(ApiError):
    """404: the object (or its namespace, or the resource) does not exist."""


class ConflictError(ApiError):
    """409 Conflict: the object changed since it was read (stale resourceVersion)."""


class AlreadyExistsError(ApiError):
    """409 AlreadyExists: create of a name that is taken."""


class ForbiddenError(ApiError):
    """403: RBAC (or an admission webhook) forbids the request."""


class GoneError(ApiError):
    """410, or a watch ERROR event with reason Expired/Gone: the resourceVersion is too old."""


class InvalidError(ApiError):
    """422: the object failed validation."""


class TooManyRequestsError(ApiError):
    """429: the server asks to slow down; ``retry_after`` says for how long when it said so."""


def error_from_status(
    http_status: int, status: Mapping[str, Any] | None, *, retry_after: float | None = None
) -> ApiError:
    """The typed error for an HTTP status code and the (optional) ``Status`` object the server sent."""
    status = status if status and status.get("kind") == "Status" else {}
    code = int(status.get("code") or http_status)
    reason = str(status.get("reason") or "")
    message = str(status.get("message") or "")
    details = status.get("details") or {}
    causes = tuple(str(cause.get("reason") or "") for cause in details.get("causes") or ())
    if retry_after is None and details.get("retryAfterSeconds"):
        retry_after = float(details["retryAfterSeconds"])
    kind: type[ApiError]
    if code == 410 or reason in ("Expired", "Gone"):
        kind = GoneError
    elif code == 404:
        kind = NotFoundError
    elif code == 409:
        kind = AlreadyExistsError if reason == "AlreadyExists" else ConflictError
    elif code == 403:
        kind = ForbiddenError
    elif code == 422:
        kind = InvalidError
    elif code == 429:
        kind = TooManyRequestsError
    else:
        kind = ApiError
    return kind(code, reason, message, causes=causes, retry_after=retry_after)


def error_from_response(http_status: int, data: bytes, headers: Mapping[str, str]) -> ApiError:
    try:
        status = json.loads(data) if data else None
    except ValueError:
        status = None  # not a Status (a proxy's HTML page...): its text is not worth surfacing
    retry_after: float | None = None
    try:
        # Header names are case-insensitive; HTTP/2's come in lower case, in a plain dict.
        value = next((v for k, v in headers.items() if k.lower() == "retry-after"), "")
        retry_after = float(value) or None
    except ValueError:
        retry_after = None
    return error_from_status(http_status, status if isinstance(status, dict) else None, retry_after=retry_after)
