"""The 1Password SDK's native core, emulated over the emulator's store.

``onepassword-sdk`` is a Python layer over a native library: ``UniffiCore`` hands it JSON through
``init_client(config)`` and ``invoke({"invocation": {"clientId", "parameters": {"name", "parameters"}}})``
and reads JSON back, or an error whose ``msg`` is ``{"name", "message"}`` JSON. ``EmulatedCore`` stands in for
that library and nothing else: the SDK's own ``Client``, its error mapping (``RateLimitExceeded`` becomes
``RateLimitExceededException``) and its pydantic types, which validate every answer, run as shipped. It
answers from the same ``Store`` as the Connect API, with the same ``Faults``:

- ``init_client``: the checks the real core makes offline, with its messages (no integration name or version,
  an empty or malformed token); then the token, ``ops_`` + base64 of ``{"emulatorToken": <a data-file
  token>}`` (``Emulator.service_account_token`` makes one), refused when unknown, revoked or expired.
- ``VaultsList``, ``VaultsGetOverview``, ``ItemsList``, ``ItemsGet``, ``ItemsGetAll`` (50 ids at most),
  ``ItemsFilesRead``. Vaults the token has no access to are not listed and refused by id.
- Faults (matched as ``sdk:<invocation>``; sign-in as ``sdk:InitClient``): ``latency``; status 429 becomes
  ``RateLimitExceeded``, other statuses and outages the core's ``http error`` texts; ``body`` is answered
  verbatim, so the SDK's types reject it. Tokens revoked or expired meanwhile fail every invocation.

Items look as the SDK shows them: Connect's notes field becomes ``notes``, fields without a value are left
out, websites have no primary flag (the primary URL comes first), a Document item's file is its ``document``.
Error texts are built from phrases of the SDK core 0.4.2 (found in its library); how the real core words an
expired or revoked token in full is not published, so those are this emulator's reading of those phrases.

``installed()`` puts the emulated core behind every ``onepassword.Client`` authenticated meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

import onepassword.client
import onepassword.core

from onepassword_access.emulator.faults import FaultInjector
from onepassword_access.emulator.items import Doc, totp_code
from onepassword_access.emulator.store import Grant, Store, VaultState
from onepassword_access.sdk import CATEGORIES, FIELD_TYPES, GET_ALL_LIMIT, VAULT_TYPES

TOKEN_PREFIX = "ops_"  # noqa: S105 (the service-account token prefix, not a credential)
_INVALID_INPUT = "invalid user input: encountered the following errors: "
_TOKEN_PARSING = (
    "invalid service account token, please make sure you provide a valid service account token as parameter:  "  # noqa: S105 (a message)
)
_INTERNAL = (
    "an internal error occurred, please contact 1Password at support@1password.com or "
    "https://developer.1password.com/joinslack: "
)
_TOKEN_ENDED = {
    "revoked": "authentication error: you are not authenticated",
    "expired": "authentication error: bad service account token, please rotate it: session expired",
}
_SDK_CATEGORIES = {connect: sdk for sdk, connect in CATEGORIES.items()}
_SDK_FIELD_TYPES = {connect: sdk for sdk, connect in FIELD_TYPES.items()}
_SDK_VAULT_TYPES = {connect: sdk for sdk, connect in VAULT_TYPES.items()}


class CoreError(Exception):
    """What the native core raises: ``msg`` is the ``{"name", "message"}`` JSON the SDK's ``errors.py`` reads."""

    def __init__(self, name: str, message: str) -> None:
        self.msg = json.dumps({"name": name, "message": message})
        super().__init__(self.msg)


def service_account_token(token: str) -> str:
    """The service-account token the emulated core accepts for the data-file token ``token``."""
    payload = base64.urlsafe_b64encode(json.dumps({"emulatorToken": token}).encode()).decode().rstrip("=")
    return TOKEN_PREFIX + payload


def _token_secret(token: str) -> str:
    """The data-file token inside a service-account token; ``CoreError`` as the real core words it."""
    if not token:
        raise CoreError("InvalidConfiguration", _INVALID_INPUT + "service account token was not specified")
    if not token.startswith(TOKEN_PREFIX):
        raise CoreError("InvalidConfiguration", _INVALID_INPUT + "service account token had invalid format")
    body = token[len(TOKEN_PREFIX) :]
    try:
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError):
        raise CoreError(
            "ServiceAccountTokenParsing",
            _TOKEN_PARSING + "service account token base64 decoding failed, please create another token",
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("emulatorToken"), str):
        raise CoreError(
            "ServiceAccountTokenParsing",
            _TOKEN_PARSING + "service account deserialization failed, please create another token",
        )
    return str(data["emulatorToken"])


class EmulatedCore:
    """The stand-in for ``onepassword.lib.<arch>.op_uniffi_core`` (see the module docstring)."""

    def __init__(self, store: Callable[[], Store], injector: FaultInjector, counts: Counter[str]) -> None:
        self._store = store
        self._injector = injector
        self._counts = counts
        self._clients: dict[int, str] = {}  # client id -> the data-file token it signed in with
        self._next_client = 0
        self._handlers: dict[str, Callable[[Grant, dict[str, Any]], object]] = {
            "VaultsList": self._vaults_list,
            "VaultsGetOverview": self._vaults_get_overview,
            "ItemsList": self._items_list,
            "ItemsGet": self._items_get,
            "ItemsGetAll": self._items_get_all,
            "ItemsFilesRead": self._items_files_read,
        }

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """While the block runs, every ``onepassword.Client.authenticate`` gets this core behind the SDK's own
        ``UniffiCore`` (only the native library it would load is replaced)."""
        emulated = self

        class EmulatedUniffiCore(onepassword.core.UniffiCore):  # type: ignore[misc]
            def __init__(self) -> None:
                self.core = emulated

        previous = onepassword.client.UniffiCore
        onepassword.client.UniffiCore = EmulatedUniffiCore
        try:
            yield
        finally:
            onepassword.client.UniffiCore = previous

    # --- the native interface ----------------------------------------------------------------------------

    async def init_client(self, config: str) -> str:
        """Sign in: a new client id, as text."""
        settings = json.loads(config)
        for key, what in (("integrationName", "integration name"), ("integrationVersion", "integration version")):
            if not settings.get(key):
                raise CoreError("InvalidConfiguration", _INVALID_INPUT + f"{what} was not specified")
        secret = _token_secret(str(settings.get("serviceAccountToken") or ""))
        await self._faults("sdk:InitClient")
        self._signed_in(secret)
        self._next_client += 1
        self._clients[self._next_client] = secret
        return str(self._next_client)

    async def invoke(self, invocation: str) -> str:
        """One invocation's answer, as JSON text."""
        request = json.loads(invocation)["invocation"]
        secret = self._clients.get(request.get("clientId"))
        if secret is None:
            raise CoreError("Internal", _INTERNAL + "invalid client id")
        name, parameters = request["parameters"]["name"], request["parameters"]["parameters"]
        self._counts[f"SDK {name}"] += 1
        broken_body = await self._faults(f"sdk:{name}")
        grant = self._signed_in(secret)
        handler = self._handlers.get(name)
        if handler is None:
            raise CoreError("Internal", _INTERNAL + f"{name} is not emulated")
        answer = handler(grant, parameters)
        return broken_body if broken_body is not None else json.dumps(answer)

    def invoke_sync(self, invocation: str) -> str:
        """Only ``Secrets.validate_secret_reference`` and friends use it; opsync does not."""
        raise CoreError("Internal", _INTERNAL + "synchronous invocations are not emulated")

    def release_client(self, client_id: str) -> None:
        """Forget a client (the SDK calls it when the client is collected)."""
        with contextlib.suppress(ValueError, TypeError):
            self._clients.pop(int(json.loads(client_id)), None)

    # --- checks ------------------------------------------------------------------------------------------

    def _signed_in(self, secret: str) -> Grant:
        store = self._store()
        grant = store.active_grant(secret)
        if grant is None:
            raise CoreError("Internal", _TOKEN_ENDED[store.ended.get(secret, "revoked")])
        return grant

    async def _faults(self, name: str) -> str | None:
        """Apply the emulator's faults to one call: raise what the core would, or return a body to answer."""
        injector = self._injector
        if injector.faults.outage == "503":
            raise CoreError("Internal", "http error: unexpected http status: 503 Service Unavailable")
        if injector.faults.outage == "refuse":
            raise CoreError("Internal", "http error: error sending request")
        if not injector.applies(name):
            return None
        if injector.faults.latency:
            await asyncio.sleep(injector.faults.latency)
        broken = injector.breaks()
        if broken is None:
            return None
        if broken.body is not None:
            return broken.body
        status = broken.status or 500
        if status == 429:
            raise CoreError("RateLimitExceeded", "rate limit exceeded")
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        raise CoreError("Internal", f"http error: unexpected http status: {status} {phrase}".rstrip())

    def _vault(self, grant: Grant, vault_id: object) -> VaultState:
        vault = self._store().vaults.get(str(vault_id))
        if vault is None:
            raise CoreError("Internal", "error performing a vault operation: vault couldn't be found")
        if grant.access(vault.id) is None:
            raise CoreError(
                "Internal",
                "error performing a vault operation: you don't have the right permissions to access this resource",
            )
        return vault

    @staticmethod
    def _item(vault: VaultState, item_id: object) -> Doc:
        doc = vault.items.get(str(item_id))
        if doc is None or doc.get("state") == "DELETED":
            raise CoreError("Internal", "error performing an item operation: item couldn't be found")
        return doc

    # --- invocations -------------------------------------------------------------------------------------

    def _vaults_list(self, grant: Grant, parameters: dict[str, Any]) -> object:
        return [_vault_overview(v) for v in self._store().vaults.values() if grant.access(v.id) is not None]

    def _vaults_get_overview(self, grant: Grant, parameters: dict[str, Any]) -> object:
        return _vault_overview(self._vault(grant, parameters.get("vault_id")))

    def _items_list(self, grant: Grant, parameters: dict[str, Any]) -> object:
        vault = self._vault(grant, parameters.get("vault_id"))
        states = {"active"}  # without a filter, as the SDK documents: active items only
        for item_filter in parameters.get("filters") or []:
            if item_filter.get("type") == "ByState":
                content = item_filter.get("content") or {}
                states = {state for state in ("active", "archived") if content.get(state)}
        overviews = [_item_overview(vault, doc) for doc in vault.items.values() if doc.get("state") != "DELETED"]
        return [o for o in overviews if o["state"] in states]

    def _items_get(self, grant: Grant, parameters: dict[str, Any]) -> object:
        vault = self._vault(grant, parameters.get("vault_id"))
        return _sdk_item(vault, self._item(vault, parameters.get("item_id")))

    def _items_get_all(self, grant: Grant, parameters: dict[str, Any]) -> object:
        vault = self._vault(grant, parameters.get("vault_id"))
        ids = list(parameters.get("item_ids") or [])
        if len(ids) > GET_ALL_LIMIT:
            raise CoreError("Internal", f"you can only retrieve up to {GET_ALL_LIMIT} items at once")
        responses: list[dict[str, Any]] = []
        for item_id in ids:
            doc = vault.items.get(str(item_id))
            if doc is None or doc.get("state") == "DELETED":
                responses.append({"error": {"type": "itemNotFound"}})
            else:
                responses.append({"content": _sdk_item(vault, doc)})
        return {"individualResponses": responses}

    def _items_files_read(self, grant: Grant, parameters: dict[str, Any]) -> object:
        vault = self._vault(grant, parameters.get("vault_id"))
        doc = self._item(vault, parameters.get("item_id"))
        file_id = str((parameters.get("attr") or {}).get("id"))
        if not any(f["id"] == file_id for f in doc["files"]):
            raise CoreError("Internal", "error performing a file operation: file couldn't be found")
        return list(vault.contents[(doc["id"], file_id)])


# --- documents as the SDK shows them ---------------------------------------------------------------------


def _vault_overview(vault: VaultState) -> Doc:
    doc = vault.doc
    return {
        "id": doc["id"],
        "title": doc["name"],
        "description": doc.get("description", ""),
        "vaultType": _SDK_VAULT_TYPES.get(doc.get("type", ""), "unsupported"),
        "activeItemCount": doc.get("items", 0),
        "contentVersion": doc["contentVersion"],
        "attributeVersion": doc.get("attributeVersion", 1),
        "createdAt": doc["createdAt"],
        "updatedAt": doc["updatedAt"],
    }


def _websites(doc: Doc) -> list[Doc]:
    # The SDK has no primary flag: the primary URL comes first (stable otherwise).
    urls = sorted(doc.get("urls") or [], key=lambda url: not url.get("primary"))
    return [{"url": u["href"], "label": u.get("label", ""), "autofillBehavior": "AnywhereOnWebsite"} for u in urls]


def _item_overview(vault: VaultState, doc: Doc) -> Doc:
    return {
        "id": doc["id"],
        "title": doc["title"],
        "category": _SDK_CATEGORIES.get(doc["category"], "Unsupported"),
        "vaultId": vault.id,
        "websites": _websites(doc),
        "tags": list(doc.get("tags") or []),
        "createdAt": doc["createdAt"],
        "updatedAt": doc["updatedAt"],
        "state": "archived" if doc.get("state") == "ARCHIVED" else "active",
    }


def _sdk_field(field: Doc) -> Doc:
    out: Doc = {
        "id": field["id"],
        "title": field.get("label", ""),
        "sectionId": (field.get("section") or {}).get("id"),
        "fieldType": _SDK_FIELD_TYPES.get(field.get("type", "STRING"), "Unsupported"),
        "value": field.get("value", ""),
    }
    if field.get("type") == "OTP":
        code = totp_code(field.get("value", ""), time.time())
        out["details"] = {"type": "Otp", "content": {"code": code} if code else {"errorMessage": "invalid secret"}}
    return out


def _sdk_item(vault: VaultState, doc: Doc) -> Doc:
    fields = doc.get("fields") or []
    notes = next((f.get("value", "") for f in fields if f.get("purpose") == "NOTES"), "")
    files = [
        {
            "attributes": {"name": f["name"], "id": f["id"], "size": f["size"]},
            "sectionId": (f.get("section") or {}).get("id", ""),
            "fieldId": f["id"],
        }
        for f in doc.get("files") or []
    ]
    document = None
    if doc["category"] == "DOCUMENT" and files:
        document, files = files[0]["attributes"], files[1:]
    return {
        **_item_overview(vault, doc),
        "fields": [_sdk_field(f) for f in fields if f.get("purpose") != "NOTES" and f.get("value")],
        "sections": [{"id": s["id"], "title": s.get("label", "")} for s in doc.get("sections") or []],
        "notes": notes,
        "version": doc["version"],
        "files": files,
        "document": document,
    }
