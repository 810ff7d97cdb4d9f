"""Item → Secret data: the item as the operator sees it, the precedence rules, and the API server's checks.

The precedence is the Go operator's (see docs/compatibility.md): URLs, then fields overwriting them, then
files into free keys only. Unlike the Go operator, when two URL labels sanitise to the same key the winner is
defined (the Go operator iterates a map). Problems the API server would reject (missing keys of a typed
Secret, more than 1 MiB) are reported before any write, as ``InvalidSecretError`` carrying the ``Ready``
condition reason.

Pure functions. Nothing here logs or reports a value: warnings name labels and keys only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from controllers.constants import IGNORE_SECRET_TAG, ITEM_PATH_FORMAT, MAX_SECRET_SIZE, ConditionReason
from controllers.sanitisers import secret_data_key
from opsync.timestamps import rfc3339

# --- The item, independent of the Connect models ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemUrl:
    href: str
    label: str = ""
    primary: bool = False


@dataclass(frozen=True, slots=True)
class ItemField:
    label: str
    value: str = field(repr=False)  # reprs reach logs and assertion messages: secret-bearing parts are left out
    section: str = ""
    """The label of the field's section ("" for none, or an unlabelled one)."""


@dataclass(frozen=True, slots=True)
class ItemFile:
    id: str
    name: str
    section: str = ""


@dataclass(frozen=True, slots=True)
class ItemInput:
    """What a Secret is made from: a 1Password item with its sections flattened and its files downloaded."""

    id: str
    vault_id: str
    version: int
    title: str = ""
    category: str = ""
    created_at: str = ""
    updated_at: str = ""
    """RFC 3339 times, "" when Connect gave none."""
    tags: tuple[str, ...] = ()
    urls: tuple[ItemUrl, ...] = ()
    fields: tuple[ItemField, ...] = ()
    files: tuple[ItemFile, ...] = ()
    file_contents: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    """Content by file id; a file missing here was not downloaded and is skipped."""

    @property
    def path(self) -> str:
        """``vaults/<vault id>/items/<item id>``: what the Secret's item-path annotation holds."""
        return ITEM_PATH_FORMAT.format(vault_id=self.vault_id, item_id=self.id)

    @property
    def ignores_secret(self) -> bool:
        """Whether the item is tagged ``operator.1password.io:ignore-secret`` (keep the Secret's data)."""
        return IGNORE_SECRET_TAG in self.tags


class _ConnectUrl(Protocol):
    @property
    def href(self) -> str: ...
    @property
    def label(self) -> str | None: ...
    @property
    def primary(self) -> bool | None: ...


class _ConnectRef(Protocol):
    @property
    def id(self) -> str: ...


class _ConnectSection(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def label(self) -> str | None: ...


class _ConnectField(Protocol):
    @property
    def label(self) -> str | None: ...
    @property
    def value(self) -> str | None: ...
    @property
    def section(self) -> _ConnectRef | None: ...


class _ConnectFile(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str | None: ...
    @property
    def section(self) -> _ConnectRef | None: ...


class _ConnectVault(Protocol):
    @property
    def id(self) -> str: ...


class ConnectItem(Protocol):
    """The attributes of a Connect item model that a Secret is made from."""

    @property
    def id(self) -> str: ...
    @property
    def vault(self) -> _ConnectVault: ...
    @property
    def version(self) -> int | None: ...
    @property
    def title(self) -> str | None: ...
    @property
    def category(self) -> str | None: ...
    @property
    def created_at(self) -> datetime | None: ...
    @property
    def updated_at(self) -> datetime | None: ...
    @property
    def sections(self) -> Sequence[_ConnectSection] | None: ...
    @property
    def tags(self) -> Sequence[str] | None: ...
    @property
    def urls(self) -> Sequence[_ConnectUrl] | None: ...
    @property
    def fields(self) -> Sequence[_ConnectField] | None: ...
    @property
    def files(self) -> Sequence[_ConnectFile] | None: ...


def item_input_from_connect(item: ConnectItem, files: Mapping[str, bytes]) -> ItemInput:
    """Adapt a Connect item model (and its downloaded file contents, by file id) to ``ItemInput``."""
    sections = {section.id: section.label or "" for section in item.sections or ()}

    def section_of(ref: _ConnectRef | None) -> str:
        return sections.get(ref.id, "") if ref is not None else ""

    return ItemInput(
        id=item.id,
        vault_id=item.vault.id,
        version=item.version or 0,
        title=item.title or "",
        category=str(item.category or ""),
        created_at=rfc3339(item.created_at) if item.created_at else "",
        updated_at=rfc3339(item.updated_at) if item.updated_at else "",
        tags=tuple(item.tags or ()),
        urls=tuple(ItemUrl(u.href, u.label or "", bool(u.primary)) for u in item.urls or ()),
        fields=tuple(ItemField(f.label or "", f.value or "", section_of(f.section)) for f in item.fields or ()),
        files=tuple(ItemFile(f.id, f.name or "", section_of(f.section)) for f in item.files or ()),
        file_contents=dict(files),
    )


# --- Data ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecretData:
    data: dict[str, bytes] = field(repr=False)
    warnings: tuple[str, ...] = ()
    """Entries skipped or replaced, by label and key (never a value): for a log line or an Event."""


def _unusable(kind: str, label: str) -> str:
    return f"{kind} {label!r} cannot be made a Secret key; skipped"


def _urls_by_key(urls: Sequence[ItemUrl], warnings: list[str]) -> dict[str, ItemUrl]:
    """One URL per key: the last primary URL, else the last URL (the Go rule, applied per key, not per raw
    label, so labels that sanitise alike give a defined result)."""
    chosen: dict[str, ItemUrl] = {}
    labels: dict[str, list[str]] = {}
    for url in urls:
        key = secret_data_key(url.label)
        if key is None:
            if url.label.strip():  # an unlabelled URL is normal and silently unused
                warnings.append(_unusable("URL label", url.label))
            continue
        current = chosen.get(key)
        if current is None or url.primary or not current.primary:
            chosen[key] = url
        if url.label not in labels.setdefault(key, []):
            labels[key].append(url.label)
    for key, raw in labels.items():
        if len(raw) > 1:
            names = ", ".join(repr(label) for label in raw)
            warnings.append(f"URL labels {names} all give key {key!r}; the primary (else the last) URL is used")
    return chosen


def build_secret_data(item: ItemInput, *, allow_empty: bool = False) -> SecretData:
    """The Secret data of ``item``: URLs, then fields (overwriting), then files (only into free keys).

    Empty values are skipped unless ``allow_empty`` (``--allow-empty-values``). Strings are UTF-8 encoded.
    """
    warnings: list[str] = []
    data: dict[str, bytes] = {}
    for url_key, url in _urls_by_key(item.urls, warnings).items():
        if url.href or allow_empty:
            data[url_key] = url.href.encode()
    for item_field in item.fields:
        key = secret_data_key(item_field.label)
        if key is None:
            if item_field.label.strip():
                warnings.append(_unusable("field label", item_field.label))
            continue
        if not item_field.value and not allow_empty:
            continue
        if key in data:
            warnings.append(f"field {item_field.label!r} replaces an earlier URL or field with key {key!r}")
        data[key] = item_field.value.encode()
    for item_file in item.files:
        key = secret_data_key(item_file.name)
        content = item.file_contents.get(item_file.id)
        if key is None:
            if item_file.name.strip():
                warnings.append(_unusable("file name", item_file.name))
        elif content is None:
            warnings.append(f"file {item_file.name!r} was not downloaded; skipped")
        elif not content and not allow_empty:
            continue
        elif key in data:
            warnings.append(f"file {item_file.name!r} ignored because a field or URL has the same key {key!r}")
        else:
            data[key] = content
    return SecretData(data, tuple(warnings))


# --- Validation ------------------------------------------------------------------------------------------------


class InvalidSecretError(Exception):
    """The item cannot become the wanted Secret; ``reason`` is the ``Ready`` condition reason to report."""

    reason: ConditionReason = ConditionReason.INVALID_SECRET


class SecretTooLargeError(InvalidSecretError):
    reason = ConditionReason.SECRET_TOO_LARGE


class SecretTypeImmutableError(InvalidSecretError):
    reason = ConditionReason.SECRET_TYPE_IMMUTABLE


# type -> (keys, whether all are needed or any one); what the API server's Secret validation requires
_REQUIRED_KEYS: dict[str, tuple[tuple[str, ...], bool]] = {
    "kubernetes.io/tls": (("tls.crt", "tls.key"), True),
    "kubernetes.io/dockerconfigjson": ((".dockerconfigjson",), True),
    "kubernetes.io/dockercfg": ((".dockercfg",), True),
    "kubernetes.io/basic-auth": (("username", "password"), False),
    "kubernetes.io/ssh-auth": (("ssh-privatekey",), True),
}
_JSON_OBJECT_KEYS = {"kubernetes.io/dockerconfigjson": ".dockerconfigjson", "kubernetes.io/dockercfg": ".dockercfg"}


def validate_secret_data(secret_type: str, data: Mapping[str, bytes]) -> None:
    """Raise ``InvalidSecretError`` for data the API server would refuse for ``secret_type``.

    Checks the keys a typed Secret needs (fields or files with exactly these names), that docker configs are
    JSON objects, and the 1 MiB limit on the summed values.
    """
    required = _REQUIRED_KEYS.get(secret_type)
    if required is not None:
        keys, need_all = required
        present = [key for key in keys if key in data]
        if (need_all and len(present) < len(keys)) or not present:
            wanted = " and ".join(keys) if need_all else " or ".join(keys)
            missing = ", ".join(key for key in keys if key not in data)
            raise InvalidSecretError(
                f"a Secret of type {secret_type} needs {wanted} (item fields or files named exactly so); "
                f"missing: {missing}"
            )
    json_key = _JSON_OBJECT_KEYS.get(secret_type)
    if json_key is not None and not _is_json_object(data[json_key]):
        raise InvalidSecretError(f"the {json_key} key of a {secret_type} Secret must hold a JSON object")
    size = sum(len(value) for value in data.values())
    if size > MAX_SECRET_SIZE:
        raise SecretTooLargeError(
            f"the item makes {size} bytes of Secret data; a Secret holds at most {MAX_SECRET_SIZE} bytes (1 MiB)"
        )


def _is_json_object(value: bytes) -> bool:
    try:
        return isinstance(json.loads(value), dict)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError; their text could quote the value
        return False
