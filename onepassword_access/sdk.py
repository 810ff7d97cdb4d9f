"""``SdkBackend``: 1Password through a service account and 1Password's SDK (``onepassword-sdk``), no Connect.

The SDK's ``Client`` is asyncio-native; each of its calls crosses into the SDK's native core, which talks to
1Password. What this module adds:

- **Items as Connect's models**, by the Go operator's SDK adapter rules: a field's ``title`` is its label, the
  websites are the URLs (the first one primary), the files come from ``files[].attributes`` plus the document
  of a Document item. Unlike that adapter, the notes become a ``notesPlain`` field, so a Secret looks the same
  whichever backend made it (docs/compatibility.md lists what the SDK's model changes).
- **Cheap change detection.** ``vaults.list()`` returns every vault's ``contentVersion`` in one call, so a quiet
  poll costs one call for all vaults. Where a vault moved, ``items.list`` (overviews carry ``updatedAt``, not
  the version) says which items moved, and one ``items.get_all`` (50 ids a call, the SDK's limit) fetches the
  tracked ones among them; those items are kept for the reconcilers' next ``get_item``, so a change costs
  O(changed vaults) calls, not O(items).
- **Errors as ``ConnectError``s.** The SDK raises ``RateLimitExceededException`` for rate limits and a bare
  ``Exception`` carrying the core's message otherwise; the message's wording (the core's own phrases, such as
  ``you are not authenticated``) picks the class. A token the SDK refuses offline is a ``TokenFormatError``.
- **Every call** has a timeout and is reported to ``on_call(operation, outcome)`` (operation: the core's
  invocation name, ``Authenticate`` for signing in; outcome: ``ok``, ``rate_limited`` or ``error``).

No token, item value or file content reaches an error text, a log line or ``repr``.

Over 400 lines on purpose: the SDK's item model, its errors and its change detection are mapped together,
as one adapter mirroring ``ConnectBackend``; split, each part would need the others' private mapping rules.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import onepassword
from pydantic import ValidationError

from onepassword_access.backend import Tracked
from onepassword_access.changes import ChangeReport, VaultChange
from onepassword_access.errors import (
    ConnectError,
    ConnectTimeoutError,
    ForbiddenError,
    InvalidResponseError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TooLargeError,
    UnauthorizedError,
    UnreachableError,
    validation_summary,
)
from onepassword_access.limits import MAX_FILE_BYTES, MAX_ITEM_BYTES, MIB
from onepassword_access.models import (
    FieldPurpose,
    File,
    Item,
    ItemField,
    ItemSummary,
    ItemURL,
    Listed,
    Ref,
    Section,
    Vault,
)
from onepassword_access.watched import RELOAD_CHECK, WatchedFile

log = logging.getLogger(__name__)

T = TypeVar("T")
INTEGRATION_NAME = "opsync"
GET_ALL_LIMIT = 50
"""Items per ``items.get_all`` call (the SDK core refuses more)."""
_MAX_MESSAGE = 200

# The SDK's names for categories, field types and vault types -> Connect's (for the shared models).
CATEGORIES = {
    "Login": "LOGIN",
    "SecureNote": "SECURE_NOTE",
    "CreditCard": "CREDIT_CARD",
    "CryptoWallet": "CRYPTO_WALLET",
    "Identity": "IDENTITY",
    "Password": "PASSWORD",
    "Document": "DOCUMENT",
    "ApiCredentials": "API_CREDENTIAL",
    "BankAccount": "BANK_ACCOUNT",
    "Database": "DATABASE",
    "DriverLicense": "DRIVER_LICENSE",
    "Email": "EMAIL_ACCOUNT",
    "MedicalRecord": "MEDICAL_RECORD",
    "Membership": "MEMBERSHIP",
    "OutdoorLicense": "OUTDOOR_LICENSE",
    "Passport": "PASSPORT",
    "Rewards": "REWARD_PROGRAM",
    "Router": "WIRELESS_ROUTER",
    "Server": "SERVER",
    "SshKey": "SSH_KEY",
    "SocialSecurityNumber": "SOCIAL_SECURITY_NUMBER",
    "SoftwareLicense": "SOFTWARE_LICENSE",
}
FIELD_TYPES = {
    "Text": "STRING",
    "Concealed": "CONCEALED",
    "Email": "EMAIL",
    "Url": "URL",
    "Totp": "OTP",
    "Date": "DATE",
    "MonthYear": "MONTH_YEAR",
    "Menu": "MENU",
    "Phone": "PHONE",
}
VAULT_TYPES = {"userCreated": "USER_CREATED", "personal": "PERSONAL", "everyone": "EVERYONE", "transfer": "TRANSFER"}
NOTES_LABEL = "notesPlain"
"""The label of Connect's built-in notes field, and of the field the SDK's ``notes`` become."""

# Phrases of the SDK core's error messages (lower-cased), first match wins.
_PHRASES: tuple[tuple[str, type[ConnectError]], ...] = (
    ("rate limit exceeded", RateLimitedError),
    ("not authenticated", UnauthorizedError),
    ("bad service account token", UnauthorizedError),
    ("authentication error", UnauthorizedError),
    ("session expired", UnauthorizedError),
    ("unexpected http status: 401", UnauthorizedError),
    ("right permissions", ForbiddenError),
    ("unexpected http status: 403", ForbiddenError),
    ("couldn't be found", NotFoundError),
    ("resource not found", NotFoundError),
    ("unexpected http status: 404", NotFoundError),
    ("unexpected http status: 5", ServerError),
    ("server error", ServerError),
    ("error sending request", UnreachableError),
    ("request timeout", UnreachableError),
    ("operation timed out", UnreachableError),
)
# How the core says, without asking 1Password, that a token is no token (InvalidConfiguration and
# ServiceAccountTokenParsing errors; the Python layer keeps only their message).
_TOKEN_FORMAT = ("invalid user input", "invalid service account token")


class TokenFormatError(UnauthorizedError):
    """The SDK refused the service-account token offline: it is malformed, not merely expired or revoked."""


def error_from_message(operation: str, message: str) -> ConnectError:
    """The ``ConnectError`` for an SDK failure of ``operation`` with the core's ``message``."""
    text = f"1Password SDK {operation}: {message.strip()[:_MAX_MESSAGE] or 'failed'}"
    lowered = message.lower()
    if operation == "Authenticate" and lowered.startswith(_TOKEN_FORMAT):
        return TokenFormatError(text)
    for phrase, kind in _PHRASES:
        if phrase in lowered:
            return kind(text, status=None)
    return ConnectError(text)


# --- the SDK's models -> Connect's -----------------------------------------------------------------------


def vault_from_sdk(overview: Any) -> Vault:
    """A ``VaultOverview`` as a ``Vault``."""
    return Vault(
        id=overview.id,
        name=overview.title,
        description=overview.description,
        attribute_version=overview.attribute_version,
        content_version=overview.content_version,
        items=overview.active_item_count,
        type=VAULT_TYPES.get(overview.vault_type.value, overview.vault_type.value),
        created_at=overview.created_at,
        updated_at=overview.updated_at,
    )


def _urls(websites: Sequence[Any]) -> list[ItemURL]:
    # The Go operator's SDK adapter marks the first website primary; the SDK has no primary flag.
    return [ItemURL(href=site.url, label=site.label, primary=index == 0) for index, site in enumerate(websites)]


def _summary(overview: Any) -> dict[str, Any]:
    """What an ``ItemOverview`` and an ``Item`` share, as ``ItemSummary`` keywords."""
    return {
        "id": overview.id,
        "title": overview.title,
        "vault": Ref(id=overview.vault_id),
        "category": CATEGORIES.get(overview.category.value, overview.category.value),
        "urls": _urls(overview.websites),
        "tags": list(overview.tags),
        "created_at": overview.created_at,
        "updated_at": overview.updated_at,
    }


def summary_from_sdk(overview: Any) -> ItemSummary:
    """An ``ItemOverview`` as an ``ItemSummary`` (version 0: overviews carry none)."""
    return ItemSummary(**_summary(overview))


def item_from_sdk(item: Any) -> Item:
    """An SDK ``Item`` as Connect's ``Item``: notes first (where Connect lists its notes field before custom
    fields), then the fields in order; the files, then a Document item's document."""
    fields = [ItemField(id=NOTES_LABEL, label=NOTES_LABEL, value=item.notes, purpose=FieldPurpose.NOTES)]
    fields = fields if item.notes else []
    for sdk_field in item.fields:
        fields.append(
            ItemField(
                id=sdk_field.id,
                label=sdk_field.title,
                value=sdk_field.value,
                type=FIELD_TYPES.get(sdk_field.field_type.value, sdk_field.field_type.value),
                section=Ref(id=sdk_field.section_id) if sdk_field.section_id else None,
            )
        )
    files = [
        File(
            id=sdk_file.attributes.id,
            name=sdk_file.attributes.name,
            size=sdk_file.attributes.size,
            section=Ref(id=sdk_file.section_id) if sdk_file.section_id else None,
        )
        for sdk_file in item.files
    ]
    if item.document is not None:
        files.append(File(id=item.document.id, name=item.document.name, size=item.document.size))
    return Item(
        **_summary(item),
        version=item.version,
        sections=[Section(id=section.id, label=section.title) for section in item.sections],
        fields=fields,
        files=files,
    )


PER_ENTRY_BYTES = 56
"""What Connect's JSON spends on one field beyond its id, label and value (keys, type, purpose, punctuation;
56 bytes measured on the emulator), counted for each section, file, website and tag too: an item measured as
its texts plus this per entry meets ``MAX_ITEM_BYTES`` about where its Connect answer would."""


def item_too_large(item: Any) -> TooLargeError | None:
    """The error for an SDK ``Item`` larger than ``MAX_ITEM_BYTES`` (its texts, plus ``PER_ENTRY_BYTES`` per
    entry), else None. Counted entry by entry, stopping at the bound: the item is in memory already (the
    native core read and the SDK parsed it), but no Connect model, cache entry or Secret is built from it."""
    size = len(item.id) + len(item.title) + len((item.notes or "").encode())
    entries: list[Iterable[str | None]] = [
        *((f.id, f.title, f.value, f.section_id) for f in item.fields),
        *((s.id, s.title) for s in item.sections),
        *((f.attributes.id, f.attributes.name, f.section_id) for f in item.files),
        *((w.url, w.label) for w in item.websites),
        *((tag,) for tag in item.tags),
    ]
    for texts in entries:
        size += PER_ENTRY_BYTES + sum(len(text.encode()) for text in texts if text)
        if size > MAX_ITEM_BYTES:
            return TooLargeError(
                f"1Password SDK ItemsGet: the item is larger than opsync accepts ({MAX_ITEM_BYTES / MIB:g} MiB)",
                limit=MAX_ITEM_BYTES,
            )
    return None


def _get_all(client: Any, *, vault_id: str, ids: list[str]) -> Awaitable[Any]:
    return client.items.get_all(vault_id, ids)  # type: ignore[no-any-return]


# --- the backend -----------------------------------------------------------------------------------------


@dataclass
class _Seen:
    """One vault as of the last poll that read it."""

    content_version: int
    updated: dict[str, datetime]  # item id -> updatedAt, every active item
    versions: dict[str, int] = field(default_factory=dict)  # item id -> version, the items fetched


class SdkBackend:
    """A ``Backend`` on a service account. ``authenticate()`` signs in (else the first call does)."""

    name = "sdk"
    titles_case_sensitive = True

    def __init__(
        self,
        token: str,
        *,
        integration_version: str,
        timeout: float = 30.0,
        on_call: Callable[[str, str], None] | None = None,
        token_file: str | None = None,
    ) -> None:
        """``timeout`` bounds each SDK call, in seconds; ``on_call(operation, outcome)`` sees every call.

        ``token_file`` (the file ``token`` was read from) is watched: when it holds another token (a rotated
        Secret), the next call signs in with it; a half-written or empty file is ignored with a warning."""
        self._token = token
        self._token_file = WatchedFile(token_file) if token_file else None
        self._checked = time.monotonic()
        self._integration_version = integration_version
        self.timeout = timeout
        self._on_call = on_call
        self._client: Any = None
        self._signing_in = asyncio.Lock()
        self._seen: dict[str, _Seen] = {}
        self._fetched: dict[tuple[str, str], Item] = {}  # fetched by a poll, not yet handed out

    def __repr__(self) -> str:
        return "SdkBackend()"

    async def authenticate(self) -> None:
        """Sign in now. Raises ``TokenFormatError`` for a malformed token, another ``ConnectError`` otherwise."""
        await self._sdk()

    def _reload(self) -> None:
        """Sign in again with a changed token file (checked at most every ``RELOAD_CHECK`` seconds)."""
        if self._token_file is None or time.monotonic() - self._checked < RELOAD_CHECK:
            return
        self._checked = time.monotonic()
        text = self._token_file.changed()
        if text is None or text.strip() == self._token:
            return
        token = text.strip()
        if not token or not token.isprintable() or any(c.isspace() for c in token):
            log.warning(
                "ignoring the changed service-account token file: empty, or not a single word",
                extra={"file": self._token_file.path},
            )
            return
        self._token, self._client = token, None  # requests in flight finish on the old client
        log.info("the service-account token file changed: signing in with it", extra={"file": self._token_file.path})

    async def _sdk(self) -> Any:
        self._reload()
        if self._client is None:
            async with self._signing_in:
                if self._client is None:
                    self._client = await self._timed(
                        "Authenticate",
                        lambda: onepassword.Client.authenticate(
                            auth=self._token,
                            integration_name=INTEGRATION_NAME,
                            integration_version=self._integration_version,
                        ),
                    )
        return self._client

    async def _call(self, operation: str, call: Callable[[Any], Awaitable[T]]) -> T:
        client = await self._sdk()
        return await self._timed(operation, lambda: call(client))

    async def _timed(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        outcome = "error"
        try:
            async with asyncio.timeout(self.timeout):
                result = await call()
            outcome = "ok"
            return result
        except onepassword.RateLimitExceededException as err:
            outcome = "rate_limited"
            raise RateLimitedError(error_from_message(operation, str(err)).message, status=None) from None
        except TimeoutError:
            raise ConnectTimeoutError(f"1Password SDK {operation}: no answer within {self.timeout:g}s") from None
        except ValidationError as err:  # the SDK validates every answer with its pydantic types
            raise InvalidResponseError(
                f"1Password SDK {operation}: unexpected answer: {validation_summary(err)}"
            ) from None
        except Exception as err:
            # The SDK's errors are bare Exceptions with the core's message, or the core's own error (``msg``
            # JSON) when that message was not JSON; anything else is a bug and propagates.
            if type(err) is not Exception and not hasattr(err, "msg"):
                raise
            error = error_from_message(operation, str(getattr(err, "msg", err)))
            if isinstance(error, RateLimitedError):
                outcome = "rate_limited"
            raise error from None
        finally:
            if self._on_call is not None:
                self._on_call(operation, outcome)

    # --- lookups -----------------------------------------------------------------------------------------

    async def list_vaults(self, *, name: str | None = None) -> list[Vault]:
        """``vaults.list()``, filtered by name here (case-insensitive, as the Go operator's SDK adapter)."""
        vaults = [vault_from_sdk(v) for v in await self._call("VaultsList", lambda c: c.vaults.list())]
        return vaults if name is None else [v for v in vaults if v.name.casefold() == name.casefold()]

    async def list_items(self, vault_id: str, *, title: str) -> list[ItemSummary]:
        """``items.list(vault)``, the active items with exactly this title (the Go operator's SDK rule)."""
        overviews = await self._active_overviews(vault_id)
        return [summary_from_sdk(o) for o in overviews if o.title == title]

    async def list_all_items(self, vault_id: str) -> list[Listed]:
        """``items.list(vault)``: the active items (version 0: overviews carry none)."""
        return [Listed.of(summary_from_sdk(o)) for o in await self._active_overviews(vault_id)]

    async def _active_overviews(self, vault_id: str) -> list[Any]:
        overviews = await self._call("ItemsList", lambda c: c.items.list(vault_id))
        return [o for o in overviews if o.state.value == "active"]

    async def get_item(self, vault_id: str, item_id: str) -> Item:
        """The item a poll just fetched, else ``items.get``."""
        fetched = self._fetched.pop((vault_id, item_id), None)
        if fetched is not None:
            return fetched
        item = await self._call("ItemsGet", lambda c: c.items.get(vault_id, item_id))
        too_large = item_too_large(item)
        if too_large is not None:
            raise too_large
        return item_from_sdk(item)

    async def read_file(self, vault_id: str, item_id: str, file: File) -> bytes:
        """``items.files.read``; ``TooLargeError`` for content larger than ``MAX_FILE_BYTES`` (a file announced
        larger is refused from its metadata before this: ``onepassword_access.resolve``)."""
        attributes = onepassword.FileAttributes(id=file.id, name=file.name, size=file.size)
        content: bytes = await self._call("ItemsFilesRead", lambda c: c.items.files.read(vault_id, item_id, attributes))
        if len(content) > MAX_FILE_BYTES:  # the metadata said less: not kept, whatever the core read
            raise TooLargeError(
                f"1Password SDK ItemsFilesRead: the file is {len(content)} bytes; a Secret holds at most "
                f"{MAX_FILE_BYTES} bytes",
                limit=MAX_FILE_BYTES,
            )
        return content

    # --- change detection --------------------------------------------------------------------------------

    def versions(self, vault_id: str) -> Mapping[str, int] | None:
        """The versions of the tracked items of ``vault_id`` learnt so far (None: the vault was never read)."""
        seen = self._seen.get(vault_id)
        return dict(seen.versions) if seen else None

    async def poll(self, tracked: Tracked, *, keep: Iterable[str] = ()) -> ChangeReport:
        """One ``vaults.list()``; then, per tracked vault whose ``contentVersion`` moved, ``items.list`` and
        ``items.get_all`` of the tracked items whose ``updatedAt`` moved. Vaults in ``keep`` (not due this
        time) are not read but not forgotten either."""
        kept = set(keep)
        for gone in self._seen.keys() - tracked.keys() - kept:
            del self._seen[gone]
        # A fetched item not asked for yet is the newest version any poll saw; only untracked ones go.
        self._fetched = {
            key: item for key, item in self._fetched.items() if key[0] in kept or key[1] in tracked.get(key[0], ())
        }
        if not tracked:
            return ChangeReport(changes={}, errors={})
        try:
            overviews = {v.id: v for v in await self._call("VaultsList", lambda c: c.vaults.list())}
        except ConnectError as err:
            return ChangeReport(changes={}, errors=dict.fromkeys(sorted(tracked), err))
        changes: dict[str, VaultChange] = {}
        errors: dict[str, ConnectError] = {}
        for vault_id in sorted(tracked):
            overview = overviews.get(vault_id)
            if overview is None:
                errors[vault_id] = NotFoundError(
                    f"1Password SDK VaultsList: vault {vault_id} is not among those the service account reads",
                    status=None,
                )
                continue
            seen = self._seen.get(vault_id)
            if seen is not None and seen.content_version == overview.content_version:
                continue
            try:
                changes[vault_id] = await self._poll_vault(vault_id, overview.content_version, seen, tracked[vault_id])
            except ConnectError as err:
                errors[vault_id] = err  # nothing remembered: the next poll reads the vault again
        # The listing names every vault too: the resolver need not look a vault's name up again (a restart in
        # sync asks vaults.list() once, not once more per vault name).
        vaults = tuple(vault_from_sdk(overview) for overview in overviews.values())
        return ChangeReport(changes=changes, errors=errors, vaults=vaults)

    async def _poll_vault(
        self, vault_id: str, content_version: int, seen: _Seen | None, wanted: Set[str]
    ) -> VaultChange:
        # Listed after the vault: a change in between moves contentVersion again and is seen next poll.
        updated = {o.id: o.updated_at for o in await self._active_overviews(vault_id)}
        before = seen or _Seen(content_version=-1, updated={})
        moved = sorted(i for i in wanted if i in updated and before.updated.get(i) != updated[i])
        versions = {i: v for i, v in before.versions.items() if i in updated}
        gone: set[str] = set()
        for start in range(0, len(moved), GET_ALL_LIMIT):
            chunk = moved[start : start + GET_ALL_LIMIT]
            answer = await self._call("ItemsGetAll", functools.partial(_get_all, vault_id=vault_id, ids=chunk))
            found: set[str] = set()
            for response in answer.individual_responses:  # matched by the items' ids, not by position
                if response.content is not None:
                    found.add(response.content.id)
                    versions[response.content.id] = response.content.version
                    if item_too_large(response.content) is None:  # else get_item refuses it, this item only
                        self._fetched[(vault_id, response.content.id)] = item_from_sdk(response.content)
                elif response.error is None or response.error.type.value != "itemNotFound":
                    raise ConnectError(f"1Password SDK ItemsGetAll: {getattr(response.error, 'message', 'failed')}")
            gone |= set(chunk) - found  # deleted between the listing and now
        for item_id in gone:
            updated.pop(item_id, None)
            versions.pop(item_id, None)
        self._seen[vault_id] = _Seen(content_version, updated, versions)
        removed = frozenset(before.updated.keys() - updated.keys())
        changed = frozenset(i for i, v in versions.items() if before.versions.get(i) != v)
        return VaultChange(
            vault_id=vault_id,
            content_version=content_version,
            versions=dict(versions),
            changed=changed,
            removed=removed,
            first_seen=seen is None,
            changed_at={i: updated[i].timestamp() for i in changed if updated.get(i)},
        )

    async def close(self) -> None:
        """Forget the client and what polls fetched (the SDK releases its core client when collected)."""
        self._client = None
        self._fetched.clear()
