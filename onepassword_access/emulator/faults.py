"""Fault injection: latency, error statuses (5xx, 429 with ``Retry-After``), odd bodies, outages."""

from __future__ import annotations

import json
import random
import re
from typing import Literal, Self

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator

_DEFAULT_MESSAGES = {429: "Too many requests", 500: "Something went wrong", 503: "Service Unavailable"}


class Faults(BaseModel):
    """What to break. The default breaks nothing.

    ``latency`` delays every request whose path matches ``match``. Of those, a ``rate`` fraction (up to
    ``count`` of them, if set) is answered with ``status`` and a Connect error body (``message``), or with
    ``body`` verbatim (status 200 unless ``status`` says otherwise); ``retry_after`` adds that header.
    ``outage`` answers everything 503 (``"503"``) or closes the port so connections are refused
    (``"refuse"``), for ``outage_seconds`` if set.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    latency: float = Field(0.0, ge=0)
    status: int | None = Field(None, ge=200, le=599)
    message: str | None = None
    body: str | None = None
    content_type: str = "application/json"
    retry_after: float | None = Field(None, ge=0)
    rate: float = Field(1.0, ge=0, le=1)
    count: int | None = Field(None, ge=0)
    match: str = "^/v1/"
    outage: Literal["refuse", "503"] | None = None
    outage_seconds: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _valid_match(self) -> Self:
        try:
            re.compile(self.match)
        except re.error as err:
            raise ValueError(f"match is not a regular expression: {err}") from None
        return self


class FaultInjector:
    """Applies the current ``Faults`` to requests; ``count`` is consumed as requests are broken."""

    def __init__(self, seed: int = 0) -> None:
        self.faults = Faults()
        self._remaining: int | None = None
        self._pattern = re.compile(self.faults.match)
        self._random = random.Random(seed)  # noqa: S311 (which requests fail, not cryptography)

    def set(self, faults: Faults) -> None:
        """Replace the faults (and restart their ``count``)."""
        self.faults = faults
        self._remaining = faults.count
        self._pattern = re.compile(faults.match)

    def applies(self, path: str) -> bool:
        """Whether latency and errors apply to ``path``."""
        return self._pattern.search(path) is not None

    def take(self) -> web.Response | None:
        """The broken answer for this request, or None to serve it normally."""
        faults = self.faults
        if faults.status is None and faults.body is None:
            return None
        if self._remaining == 0 or self._random.random() >= faults.rate:
            return None
        if self._remaining is not None:
            self._remaining -= 1
        headers = {"Retry-After": f"{faults.retry_after:g}"} if faults.retry_after is not None else {}
        if faults.body is not None:
            return web.Response(
                status=faults.status or 200, text=faults.body, content_type=faults.content_type, headers=headers
            )
        status = faults.status or 500
        return error_response(status, faults.message or _DEFAULT_MESSAGES.get(status, "injected failure"), headers)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """Connect's error body: ``{"status": ..., "message": ...}``."""
    return web.Response(
        status=status,
        text=json.dumps({"status": status, "message": message}),
        content_type="application/json",
        headers=headers,
    )
