"""Item documents as the emulator keeps and serves them: ids, validation of writes, generated values,
TOTP codes, rendering with Go's omit-empty habits, and Connect's JSON Patch dialect."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import math
import secrets
import string
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from onepassword_access.models import ItemCategory

Doc = dict[str, Any]
BUILTIN_FIELD_IDS = {"USERNAME": "username", "PASSWORD": "password", "NOTES": "notesPlain"}
NOT_CREATABLE = {ItemCategory.DOCUMENT.value, ItemCategory.CUSTOM.value}
SERVER_OWNED = ("id", "vault", "version", "createdAt", "updatedAt", "lastEditedBy", "files", "state")
_CHARACTER_SETS = {"LETTERS": string.ascii_letters, "DIGITS": string.digits, "SYMBOLS": "!#$%&()*+,-./:;<=>?@[]^_{|}~"}


class ApiProblem(Exception):
    """A request Connect would refuse: answered as ``{"status": ..., "message": ...}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def stable_id(*parts: str) -> str:
    """A 26-character ``[a-z2-7]`` id derived from ``parts`` (the same data file gives the same ids)."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()[:16]
    return base64.b32encode(digest).decode().rstrip("=").lower()


def new_id() -> str:
    """A fresh 26-character id, as Connect's (lowercase base32 of 16 random bytes)."""
    return base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()


def rfc3339(moment: datetime) -> str:
    """UTC with a ``Z`` and Go's trimmed fractional seconds (a ``+00:00`` offset broke a Go client)."""
    fraction = f".{moment.microsecond:06d}".rstrip("0") if moment.microsecond else ""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


def totp_code(value: str, now: float) -> str | None:
    """The current RFC 6238 code for an ``otpauth://`` URI (or a bare base32 secret); None if unusable."""
    digits, period, algorithm, secret = 6, 30, "sha1", value
    try:
        if value.startswith("otpauth://"):
            query = {k: v[0] for k, v in parse_qs(urlsplit(value).query).items()}
            secret = query["secret"]
            digits = int(query.get("digits", 6))
            period = int(query.get("period", 30))
            algorithm = query.get("algorithm", "SHA1").lower()
        cleaned = secret.replace(" ", "").upper()
        key = base64.b32decode(cleaned + "=" * (-len(cleaned) % 8))
        mac = hmac.new(key, int(now // period).to_bytes(8, "big"), algorithm).digest()
    except (KeyError, ValueError, TypeError, ZeroDivisionError, OverflowError):
        return None
    offset = mac[-1] & 0x0F
    code = (int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF) % 10**digits
    return str(code).zfill(digits)


def generate_value(recipe: object) -> tuple[str, float]:
    """A random value from a ``GeneratorRecipe`` and its entropy in bits (letters and digits by default)."""
    recipe = recipe if isinstance(recipe, Mapping) else {}
    length = recipe.get("length", 32)
    sets = recipe.get("characterSets") or ["LETTERS", "DIGITS"]
    exclude = recipe.get("excludeCharacters", "")
    if not isinstance(length, int) or not 1 <= length <= 64:
        raise ApiProblem(400, "Invalid recipe: length must be between 1 and 64")
    if not isinstance(sets, list) or any(s not in _CHARACTER_SETS for s in sets) or not isinstance(exclude, str):
        raise ApiProblem(400, "Invalid recipe: characterSets must be LETTERS, DIGITS or SYMBOLS")
    alphabet = sorted(set("".join(_CHARACTER_SETS[s] for s in sets)) - set(exclude))
    if not alphabet:
        raise ApiProblem(400, "Invalid recipe: every character is excluded")
    value = "".join(secrets.choice(alphabet) for _ in range(length))
    return value, round(length * math.log2(len(alphabet)), 2) if len(alphabet) > 1 else 0.0


def _text(body: Mapping[str, Any], key: str, default: str = "") -> str:
    value = body.get(key, default)
    if not isinstance(value, str):
        raise ApiProblem(400, f"Invalid item: {key} must be a string")
    return value


def _objects(body: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = body.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ApiProblem(400, f"Invalid item: {key} must be a list of objects")
    return value


def _field(raw: Mapping[str, Any], taken: set[str]) -> Doc:
    """A stored field: type upper-cased (clients send ``"string"``), id assigned, value generated if asked."""
    purpose = _text(raw, "purpose").upper()
    field_id = _text(raw, "id") or BUILTIN_FIELD_IDS.get(purpose, "")
    if not field_id or field_id in taken:
        field_id = new_id()
    taken.add(field_id)
    field: Doc = {
        **raw,
        "id": field_id,
        "type": _text(raw, "type", "STRING").upper() or "STRING",
        "label": _text(raw, "label") or BUILTIN_FIELD_IDS.get(purpose, ""),
        "value": _text(raw, "value"),
        "purpose": purpose,
    }
    section = raw.get("section")
    if section is not None and not (isinstance(section, Mapping) and isinstance(section.get("id"), str)):
        raise ApiProblem(400, "Invalid item: field section must be {id}")
    if field.pop("generate", False):
        field["value"], field["entropy"] = generate_value(field.get("recipe"))
    field.pop("recipe", None)
    field.pop("totp", None)  # computed when served
    return field


def normalise(body: object, *, item_id: str, vault_id: str, existing: Doc | None) -> Doc:
    """The stored item for a POST/PUT body. Server-owned properties come from ``existing``, not the body."""
    if not isinstance(body, Mapping):
        raise ApiProblem(400, "Invalid item: the body must be an item object")
    category = _text(body, "category", existing["category"] if existing else "").upper()
    known = {c.value for c in ItemCategory}
    if category not in known or (existing is None and category in NOT_CREATABLE):
        raise ApiProblem(400, "Invalid item category")
    tags = body.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ApiProblem(400, "Invalid item: tags must be a list of strings")
    urls = []
    for url in _objects(body, "urls"):
        if not isinstance(url.get("href"), str):
            raise ApiProblem(400, "Invalid item: every URL needs an href")
        urls.append({"href": url["href"], "label": _text(url, "label"), "primary": bool(url.get("primary"))})
    sections = [
        {"id": _text(s, "id") or "Section_" + new_id().upper(), "label": _text(s, "label")}
        for s in _objects(body, "sections")
    ]
    taken: set[str] = set()
    fields = [_field(f, taken) for f in _objects(body, "fields")]
    owned = {key: existing[key] for key in SERVER_OWNED if existing and key in existing}
    return {
        "id": item_id,
        "title": _text(body, "title"),
        "vault": {"id": vault_id},
        "category": category,
        "urls": urls,
        "favorite": bool(body.get("favorite")),
        "tags": list(tags),
        "sections": sections,
        "fields": fields,
        "files": [],
        **owned,
    }


def _compact(doc: Doc, *, always: tuple[str, ...] = ()) -> Doc:
    """``doc`` without the empty values Go's ``omitempty`` leaves out (``always`` kept regardless)."""
    return {k: v for k, v in doc.items() if k in always or not _empty(v)}


def _empty(value: object) -> bool:
    return value is None or value is False or (isinstance(value, str | list) and not value)


def render(item: Doc, *, summary: bool, now: float) -> Doc:
    """The item as Connect serves it: empty properties left out, ``totp`` on OTP fields."""
    out = _compact(item, always=("title", "category", "version"))
    if "urls" in out:
        out["urls"] = [_compact(url, always=("href",)) for url in out["urls"]]
    if summary:
        for key in ("sections", "fields", "files"):
            out.pop(key, None)
    elif "fields" in out:
        out["fields"] = [_render_field(field, now) for field in out["fields"]]
    return out


def _render_field(field: Doc, now: float) -> Doc:
    out = _compact(field, always=("id", "type", "value"))
    if field.get("type") == "OTP":
        code = totp_code(field.get("value", ""), now)
        if code is not None:
            out["totp"] = code
    return out


def apply_patch(item: Doc, operations: object) -> Doc:
    """The item body after Connect's JSON Patch: ``add``/``remove``/``replace``; fields and sections addressed
    by id (``/fields/{id}[/attr]``), an object added to ``/fields`` appended, ``/`` replacing the whole item.
    Read-only properties cannot be patched."""
    if not isinstance(operations, list):
        raise ApiProblem(400, "Invalid patch: the body must be a list of operations")
    doc = copy.deepcopy(item)
    for operation in operations:
        if not isinstance(operation, Mapping) or operation.get("op") not in ("add", "remove", "replace"):
            raise ApiProblem(400, "Invalid patch: op must be add, remove or replace")
        path = operation.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ApiProblem(400, "Invalid patch: path must be a JSON pointer")
        op, value = operation["op"], operation.get("value")
        if path == "/":
            if op != "replace" or not isinstance(value, Mapping):
                raise ApiProblem(400, "Invalid patch: / can only be replaced by an item")
            doc = {**copy.deepcopy(dict(value)), **{k: doc[k] for k in SERVER_OWNED if k in doc}}
            continue
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]
        if tokens[0] in SERVER_OWNED:
            raise ApiProblem(400, f"Invalid patch: {tokens[0]} is read-only")
        if tokens[0] in ("fields", "sections") and len(tokens) > 1:
            _patch_by_id(doc.setdefault(tokens[0], []), tokens, op, value)
        elif tokens[0] in ("fields", "sections") and op == "add" and isinstance(value, Mapping):
            doc.setdefault(tokens[0], []).append(dict(value))  # "add a new field", in Connect's words
        else:
            _pointer(doc, tokens, op, value)
    return doc


def _patch_by_id(entries: list[Doc], tokens: list[str], op: str, value: object) -> None:
    """``/fields/{id}`` and ``/fields/{id}/{attr...}``: entries of ``fields``/``sections`` by their id."""
    index = next((i for i, entry in enumerate(entries) if entry.get("id") == tokens[1]), None)
    if len(tokens) > 2:
        if index is None:
            raise ApiProblem(400, f"The item doesn't have a {tokens[1]} field.")
        _pointer(entries[index], tokens[2:], op, value)
    elif op == "remove" or (op == "replace" and index is None):
        if index is None:
            raise ApiProblem(400, f"The item doesn't have a {tokens[1]} field.")
        del entries[index]
    elif not isinstance(value, Mapping):
        raise ApiProblem(400, f"Invalid patch: the value for /{tokens[0]}/{tokens[1]} must be an object")
    elif index is None:
        entries.append({**value, "id": tokens[1]})
    else:
        entries[index] = {**value, "id": tokens[1]}


def _pointer(doc: Any, tokens: list[str], op: str, value: object) -> None:
    """RFC 6902 ``add``/``remove``/``replace`` at a JSON pointer (``-`` appends to a list)."""
    target = doc
    try:
        for token in tokens[:-1]:
            target = target[int(token)] if isinstance(target, list) else target[token]
        last = tokens[-1]
        if isinstance(target, dict):
            if op == "remove":
                del target[last]
            else:
                target[last] = value
        elif isinstance(target, list):
            position = len(target) if last == "-" and op == "add" else int(last)
            if op == "add":
                target.insert(position, value)
            elif op == "replace":
                target[position] = value
            else:
                del target[position]
        else:
            raise TypeError(last)
    except (KeyError, IndexError, ValueError, TypeError):
        raise ApiProblem(400, f"Invalid patch: nothing at /{'/'.join(tokens)}") from None
