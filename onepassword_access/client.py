"""``ConnectClient``: an async client for the 1Password Connect REST API.

One aiohttp session per client, a timeout on every request, the token only ever in the ``Authorization``
header. Connection failures, 5xx and 429 are retried (honouring ``Retry-After``) within a ``RetryPolicy``
bounded in attempts and in total time; other failures raise at once. Every failure is a typed
``ConnectError`` (see ``onepassword_access.errors``) whose text names the request, never the token and never
an item's content.

Callers observe the traffic through ``observers``: each is called with an ``Exchange`` (method, path,
status) after every HTTP attempt, retries included. The operator counts requests so, and tests record them.

Just over 400 lines: one class per Connect endpoint group would scatter the one retry, bound and TLS policy
that every request shares.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar
from urllib.parse import quote

import aiohttp
from pydantic import TypeAdapter
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
    wait_random,
)
from yarl import URL

from onepassword_access.errors import (
    CertificateError,
    ConnectError,
    ConnectTimeoutError,
    RateLimitedError,
    Reply,
    TooLargeError,
    UnreachableError,
    check,
    parse_json,
)
from onepassword_access.limits import MAX_FILE_BYTES, MAX_ITEM_BYTES, MAX_LIST_BYTES, MAX_OTHER_BYTES, MIB
from onepassword_access.models import Health, Item, ItemSummary, Listed, ListingEntry, Vault
from onepassword_access.watched import RELOAD_CHECK, WatchedFile
from opsync import __version__

log = logging.getLogger(__name__)

T = TypeVar("T")
USER_AGENT = f"opsync/{__version__}"
_VAULTS = TypeAdapter(list[Vault])
_VAULT = TypeAdapter(Vault)
_SUMMARIES = TypeAdapter(list[ItemSummary])
_LISTING = TypeAdapter(list[ListingEntry])
_ITEM = TypeAdapter(Item)
_HEALTH = TypeAdapter(Health)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How hard to try: at most ``attempts`` requests, no new attempt after ``total`` seconds.

    Waits grow exponentially from ``backoff`` (with as much jitter) up to ``max_backoff``; a 429's
    ``Retry-After`` replaces the computed wait, and if that wait would end after ``total`` the error is
    raised at once.
    """

    attempts: int = 4
    total: float = 30.0
    backoff: float = 0.25
    max_backoff: float = 5.0


@dataclass(frozen=True, slots=True)
class Exchange:
    """One HTTP attempt, as observers see it: no headers, no body."""

    method: str
    path: str
    """Without the query (which may hold a title)."""
    status: int | None
    """The HTTP status; None when no whole answer came (refused, reset, timed out, TLS failed)."""


Observer = Callable[[Exchange], None]
"""Called after every HTTP attempt; must not raise and must not block."""


def scim_filter(attribute: str, value: str) -> str:
    """``<attribute> eq "<value>"`` with ``"`` and ``\\`` escaped as SCIM asks."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{attribute} eq "{escaped}"'


def _segment(value: str) -> str:
    return quote(value, safe="")


def content_path(vault_id: str, item_id: str, file_id: str) -> str:
    """The ``/content`` path of a file, for when an answer did not carry its ``content_path``."""
    return f"/v1/vaults/{_segment(vault_id)}/items/{_segment(item_id)}/files/{_segment(file_id)}/content"


class ConnectClient:
    """An async client for one Connect server (``url`` like ``http://onepassword-connect:8080``).

    Use as an async context manager or call ``close()``. For ``https``, ``ca_file`` is the CA bundle to trust
    instead of the system's (which ``SSL_CERT_FILE`` can also replace). Build the client at start-up: reading
    ``ca_file`` is blocking file I/O.

    ``token_file`` (the file ``token`` was read from) and ``ca_file`` are watched: when one changes (a rotated
    Secret's volume swaps its files), the next request uses the new token or CA, without a restart. A file
    that is unreadable or invalid meanwhile is ignored, with a warning, and the last good one kept.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        ca_file: str | None = None,
        max_connections: int = 32,
        observers: Sequence[Observer] = (),
        token_file: str | None = None,
    ) -> None:
        """``timeout`` bounds each request (connect, send and read the whole answer), in seconds;
        ``observers`` see every HTTP attempt (see the module docstring)."""
        base = URL(url)
        if base.scheme not in ("http", "https") or not base.host or base.user or base.password:
            raise ValueError(f"the Connect URL must be http(s)://host[:port], got {base.with_password(None)!s}")
        token = _valid_token(token)
        self.url = str(base).rstrip("/")
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._backoff = wait_exponential(multiplier=self.retry.backoff, max=self.retry.max_backoff) + wait_random(
            0, self.retry.backoff
        )
        self.server_version: str | None = None
        """The ``1Password-Connect-Version`` of the last answer."""
        self._authorization = f"Bearer {token}"
        self._ssl: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self._max_connections = max_connections
        self._observers = tuple(observers)
        self._http: aiohttp.ClientSession | None = None
        self._token_file = WatchedFile(token_file) if token_file else None
        self._ca_file = WatchedFile(ca_file) if ca_file else None
        self._checked = time.monotonic()
        self._retired: set[asyncio.Task[None]] = set()  # sessions being closed after a CA change

    def __repr__(self) -> str:
        return f"ConnectClient(url={self.url!r})"

    async def __aenter__(self) -> ConnectClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session (idempotent)."""
        for task in self._retired:
            task.cancel()
        await asyncio.gather(*self._retired, return_exceptions=True)
        self._retired.clear()
        if self._http is not None:
            await self._http.close()
            self._http = None

    # --- API ---------------------------------------------------------------------------------------------

    async def list_vaults(self, *, name: str | None = None) -> list[Vault]:
        """The vaults the token may read; with ``name``, those Connect says are named so (case-insensitive)."""
        params = {"filter": scim_filter("name", name)} if name is not None else None
        return await self._json("GET", "/v1/vaults", _VAULTS, params=params, limit=MAX_LIST_BYTES)

    async def get_vault(self, vault_id: str) -> Vault:
        """One vault by id (cheap: use ``content_version`` to tell whether any of its items changed)."""
        return await self._json("GET", f"/v1/vaults/{_segment(vault_id)}", _VAULT, limit=MAX_OTHER_BYTES)

    async def list_items(self, vault_id: str, *, title: str | None = None, tag: str | None = None) -> list[ItemSummary]:
        """Item summaries of a vault (with ``version``), all or those with this ``title`` or ``tag``."""
        if title is not None and tag is not None:
            raise ValueError("filter items by title or by tag, not both")
        params = None
        if title is not None:
            params = {"filter": scim_filter("title", title)}
        elif tag is not None:
            params = {"filter": scim_filter("tag", tag)}
        path = f"/v1/vaults/{_segment(vault_id)}/items"
        return await self._json("GET", path, _SUMMARIES, params=params, limit=MAX_LIST_BYTES)

    async def list_listed(self, vault_id: str) -> list[Listed]:
        """Every item of a vault as ``Listed`` (what title resolution and change detection keep), parsed
        without building the full summaries first: a vault may list tens of thousands of items."""
        path = f"/v1/vaults/{_segment(vault_id)}/items"
        return [Listed.of(entry) for entry in await self._json("GET", path, _LISTING, limit=MAX_LIST_BYTES)]

    async def get_item(self, vault_id: str, item_id: str) -> Item:
        """The full item: fields, sections and file metadata."""
        path = f"/v1/vaults/{_segment(vault_id)}/items/{_segment(item_id)}"
        return await self._json("GET", path, _ITEM, limit=MAX_ITEM_BYTES)

    async def get_file_content(self, path: str, *, limit: int = MAX_FILE_BYTES) -> bytes:
        """A file's bytes from its ``content_path`` (with or without the leading ``/``); ``TooLargeError``
        beyond ``limit`` bytes (the download stops there)."""
        path = path if path.startswith("/") else "/" + path
        return (await self._send("GET", path, limit=limit)).body

    async def health(self) -> Health:
        """``/health``: the server's name, version and dependencies. Not retried (it is a probe)."""
        return parse_json(await self._attempt("GET", "/health", None, MAX_OTHER_BYTES), _HEALTH)

    async def heartbeat(self) -> None:
        """``/heartbeat``: returns if the server answers 200, raises a ``ConnectError`` otherwise."""
        check(await self._attempt("GET", "/heartbeat", None, MAX_OTHER_BYTES))

    # --- transport ---------------------------------------------------------------------------------------

    async def _json(
        self, method: str, path: str, adapter: TypeAdapter[T], *, params: dict[str, str] | None = None, limit: int
    ) -> T:
        return parse_json(await self._send(method, path, params, limit=limit), adapter)

    async def _send(
        self, method: str, path: str, params: dict[str, str] | None = None, *, limit: int = MAX_OTHER_BYTES
    ) -> Reply:
        """One logical request: attempts with retries, all within ``retry.total`` seconds.

        The first attempt runs outside tenacity (most requests need no other, and tenacity's loop costs a
        third of a request's CPU here); its transient failure is handed to tenacity as its own first outcome,
        so the waits, the log line and the count of attempts are the same as had it run there."""
        policy = self.retry
        started = time.monotonic()
        try:
            async with asyncio.timeout(policy.total):
                try:
                    return check(await self._attempt(method, path, params, limit))
                except ConnectError as err:
                    if not err.transient or policy.attempts < 2:
                        raise
                    first: ConnectError | None = err
                retrying = AsyncRetrying(
                    stop=stop_after_attempt(policy.attempts)
                    | stop_before_delay(policy.total - (time.monotonic() - started)),
                    wait=self._wait,
                    retry=retry_if_exception(lambda err: isinstance(err, ConnectError) and err.transient),
                    before_sleep=self._log_retry,
                    reraise=True,
                )
                async for attempt in retrying:
                    with attempt:
                        if first is not None:
                            failed, first = first, None
                            raise failed
                        return check(await self._attempt(method, path, params, limit))
        except TimeoutError:
            raise ConnectTimeoutError(
                f"{method} {path}: no answer within {policy.total:g}s", method=method, path=path
            ) from None
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, RateLimitedError) and error.retry_after is not None:
            return error.retry_after
        return self._backoff(state)

    def _log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.info(
            "retrying a Connect request",
            extra={"reason": str(error), "attempt": state.attempt_number, "wait": round(state.upcoming_sleep, 3)},
        )

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit=self._max_connections)
            self._http = aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT})
        return self._http

    async def _attempt(self, method: str, path: str, params: dict[str, str] | None, limit: int) -> Reply:
        """One HTTP exchange, shown to the observers."""
        status: int | None = None
        try:
            reply = await self._exchange(method, path, params, limit)
            status = reply.status
            return reply
        finally:
            exchange = Exchange(method, path, status)
            for observe in self._observers:
                observe(exchange)

    async def _reload(self) -> None:
        """Pick up a changed token file or CA bundle (checked at most every ``RELOAD_CHECK`` seconds: a stat
        of a local file is cheap enough to do on the event loop, and so is reading a token or a CA bundle)."""
        if time.monotonic() - self._checked < RELOAD_CHECK:
            return
        self._checked = time.monotonic()
        if self._token_file is not None and (text := self._token_file.changed()) is not None:
            try:
                self._authorization = f"Bearer {_valid_token(text)}"
                log.info("the Connect token file changed: using the new token", extra={"file": self._token_file.path})
            except ValueError as err:
                log.warning("ignoring the changed Connect token file: %s", err, extra={"file": self._token_file.path})
        if self._ca_file is not None and self._ca_file.changed() is not None:
            try:
                self._ssl = ssl.create_default_context(cafile=self._ca_file.path)
            except (OSError, ssl.SSLError) as err:
                log.warning("ignoring the changed CA bundle: %s", err, extra={"file": self._ca_file.path})
                return
            log.info("the CA bundle changed: verifying Connect with it", extra={"file": self._ca_file.path})
            # Pooled connections were verified with the old CA: new requests get a new session; requests in
            # flight finish on the old one, closed once they had time to.
            old, self._http = self._http, None
            if old is not None:
                closing = asyncio.create_task(_close_later(old, self.timeout))
                self._retired.add(closing)
                closing.add_done_callback(self._retired.discard)

    async def _exchange(self, method: str, path: str, params: dict[str, str] | None, limit: int) -> Reply:
        """One HTTP exchange; any failure to get a whole answer becomes an ``UnreachableError``, a body
        longer than ``limit`` bytes a ``TooLargeError`` (read no further than that)."""
        await self._reload()
        url = URL(self.url + path, encoded=True)
        headers = {"Authorization": self._authorization, "Accept": "application/json"}
        where = f"{method} {path}"
        try:
            async with self._session().request(
                method,
                url,
                params=params,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as response:
                body = await _read_bounded(response, limit, where, method, path)
        except TimeoutError:
            raise ConnectTimeoutError(
                f"{where}: no answer within {self.timeout:g}s", method=method, path=path
            ) from None
        except aiohttp.ClientConnectorCertificateError as err:
            raise CertificateError(
                f"{where}: TLS verification failed: {err.certificate_error}", method=method, path=path
            ) from None
        except aiohttp.ClientError as err:
            # The aiohttp error is not chained: it keeps the request's headers, token included.
            raise UnreachableError(
                f"{where}: cannot reach Connect at {self.url}: {type(err).__name__}: {err}", method=method, path=path
            ) from None
        self.server_version = response.headers.get("1Password-Connect-Version", self.server_version)
        return Reply(method, path, response.status, response.headers, body)


def _valid_token(token: str) -> str:
    token = token.strip()
    if not token or not token.isprintable() or any(c.isspace() for c in token):
        # Said without the token itself: it must never appear in a message.
        raise ValueError("the Connect token is empty or contains whitespace or control characters")
    return token


async def _close_later(session: aiohttp.ClientSession, delay: float) -> None:
    try:
        await asyncio.sleep(delay)
    finally:
        await session.close()


async def _read_bounded(response: aiohttp.ClientResponse, limit: int, where: str, method: str, path: str) -> bytes:
    """The body, refused from ``Content-Length`` when announced larger than ``limit``, else read in chunks
    and refused as soon as it exceeds ``limit`` (an answer may announce no length, or lie)."""

    def too_large() -> TooLargeError:
        return TooLargeError(
            f"{where}: the answer is larger than opsync accepts ({limit / MIB:g} MiB)",
            limit=limit,
            status=response.status,
            method=method,
            path=path,
        )

    if response.content_length is not None and response.content_length > limit:
        raise too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise too_large()
        chunks.append(chunk)
    return b"".join(chunks)
