"""Item → Secret: the sanitisers, the data precedence rules and the desired Secret (pure functions).

The rules are the Go operator's (reference section 3) with its sharp edges fixed:

- A sanitiser returns a key or name the API server accepts, or None: never ``.``, ``..x``, ``a..b``.
- When two URL labels sanitise to the same key the winner is defined (the Go operator iterates a map).
- Existing Secrets keep labels and annotations that other tools added; opsync records which keys it wrote
  (``OWNED_METADATA_ANNOTATION``) and only ever removes those.
- Problems the API server would reject (missing keys of a typed Secret, more than 1 MiB) are reported before
  any write, as ``InvalidSecretError`` carrying the ``Ready`` condition reason.

Nothing here reads or logs a value: warnings name labels and keys only.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from controllers.constants import (
    ALLOWED_SECRET_TYPES,
    AUTO_RESTART_ANNOTATION,
    DATA_VERSION_ANNOTATION,
    DEFAULT_SECRET_TYPE,
    GO_FALSE_VALUES,
    GO_TRUE_VALUES,
    IGNORE_SECRET_TAG,
    ITEM_PATH_ANNOTATION,
    ITEM_PATH_FORMAT,
    ITEM_VERSION_ANNOTATION,
    KUBERNETES_ANNOTATION_DOMAINS,
    MANAGED_LABEL,
    MANAGED_LABEL_VALUE,
    MAX_SECRET_SIZE,
    NON_OPERATOR_ANNOTATIONS,
    OPERATOR_ANNOTATION_PATTERN,
    OWNED_METADATA_ANNOTATION,
    SECRET_TYPE_IMMUTABLE_MESSAGE,
    ConditionReason,
)
from opsync.resources import KubeObject

MAX_KEY_LENGTH = 253
MAX_NAME_LENGTH = 253
_KEY = re.compile(r"[-._a-zA-Z0-9]+")
_KEY_INVALID_RUN = re.compile(r"[^-._a-zA-Z0-9]+")
_KEY_INVALID_ENDS = re.compile(r"\A[^-._a-zA-Z0-9]+|[^-._a-zA-Z0-9]+\Z")
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_NAME_INVALID_RUN = re.compile(r"[^-.a-z0-9]+")


# --- Sanitisers -------------------------------------------------------------------------------------------------


def is_valid_secret_key(key: str) -> bool:
    """Whether the API server accepts ``key`` as a Secret data key (Kubernetes ``IsConfigMapKey``)."""
    return len(key) <= MAX_KEY_LENGTH and _KEY.fullmatch(key) is not None and key != "." and not key.startswith("..")


def is_valid_secret_name(name: str) -> bool:
    """Whether ``name`` is a DNS-1123 subdomain, as Secret names must be."""
    return len(name) <= MAX_NAME_LENGTH and _DNS_SUBDOMAIN.fullmatch(name) is not None


def secret_data_key(label: str) -> str | None:
    """The Secret data key for a field label, URL label or file name (Go ``formatSecretDataName``), or None.

    A valid key is kept as is (case too). Otherwise invalid characters at both ends are dropped, every other
    run of them becomes one ``-`` and the result is cut to 253 characters: ``"first host"`` → ``first-host``,
    ``"😄 ice-cream type"`` → ``ice-cream-type``. None when nothing usable is left or the result is still not a
    valid key (``.``, ``..x``: the Go operator sends those and the API server refuses the whole Secret).
    """
    if is_valid_secret_key(label):
        return label
    key = _KEY_INVALID_RUN.sub("-", _KEY_INVALID_ENDS.sub("", label))[:MAX_KEY_LENGTH]
    return key if is_valid_secret_key(key) else None


def secret_name(name: str) -> str | None:
    """The Secret name for an OnePasswordItem name or ``item-name`` value (Go ``formatSecretName``), or None.

    A valid DNS-1123 subdomain is kept. Otherwise: lower-case, every run of characters outside ``[-.a-z0-9]``
    becomes ``-``, cut to 253, ``-`` and ``.`` trimmed from both ends (``"My Secret!"`` → ``my-secret``). Then,
    unlike the Go operator, dot-separated parts are repaired so the API server accepts the result: empty parts
    are dropped and ``-`` trimmed from each (``"Foo..Bar"`` → ``foo.bar``, ``"a.-b"`` → ``a.b``). None when
    nothing usable is left.
    """
    if is_valid_secret_name(name):
        return name
    # Go lower-cases rune by rune (simple case mapping): "İ" becomes "i", not Python's two-character "i̇".
    lowered = "".join(char.lower()[0] for char in name)
    go_result = _NAME_INVALID_RUN.sub("-", lowered)[:MAX_NAME_LENGTH].strip("-.")
    repaired = ".".join(part.strip("-") for part in go_result.split(".") if part.strip("-"))
    return repaired if is_valid_secret_name(repaired) else None


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


@dataclass(frozen=True, slots=True)
class ItemFile:
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ItemInput:
    """What a Secret is made from: a 1Password item with its sections flattened and its files downloaded."""

    id: str
    vault_id: str
    version: int
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


class _ConnectField(Protocol):
    @property
    def label(self) -> str | None: ...
    @property
    def value(self) -> str | None: ...


class _ConnectFile(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str | None: ...


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
    def tags(self) -> Sequence[str] | None: ...
    @property
    def urls(self) -> Sequence[_ConnectUrl] | None: ...
    @property
    def fields(self) -> Sequence[_ConnectField] | None: ...
    @property
    def files(self) -> Sequence[_ConnectFile] | None: ...


def item_input_from_connect(item: ConnectItem, files: Mapping[str, bytes]) -> ItemInput:
    """Adapt a Connect item model (and its downloaded file contents, by file id) to ``ItemInput``."""
    return ItemInput(
        id=item.id,
        vault_id=item.vault.id,
        version=item.version or 0,
        tags=tuple(item.tags or ()),
        urls=tuple(ItemUrl(u.href, u.label or "", bool(u.primary)) for u in item.urls or ()),
        fields=tuple(ItemField(f.label or "", f.value or "") for f in item.fields or ()),
        files=tuple(ItemFile(f.id, f.name or "") for f in item.files or ()),
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


# --- Metadata: which labels and annotations each producer writes (reference 3.6) --------------------------------


@dataclass(frozen=True, slots=True)
class SecretMetadata:
    labels: dict[str, str]
    annotations: dict[str, str]
    warnings: tuple[str, ...] = ()


def is_go_bool(value: str) -> bool:
    """Whether the Go operator parses ``value`` as a boolean (any case)."""
    return value.lower() in GO_TRUE_VALUES | GO_FALSE_VALUES


def _kubernetes_annotation(key: str) -> bool:
    """``kubernetes.io/...``, ``*.kubernetes.io/...``, ``k8s.io/...``, ...: never copied (includes
    ``kubectl.kubernetes.io/last-applied-configuration``)."""
    domain = key.partition("/")[0] if "/" in key else ""
    return any(domain == d or domain.endswith("." + d) for d in KUBERNETES_ANNOTATION_DOMAINS)


def opi_metadata(opi: KubeObject, *, enable_annotations: bool = False) -> SecretMetadata:
    """Labels and annotations an OnePasswordItem gives its Secret.

    All labels are copied (Go behaviour). With ``enable_annotations`` all annotations are copied except
    ``kubectl.kubernetes.io/last-applied-configuration``. The ``auto-restart`` annotation is copied when it is
    a valid boolean; an invalid one is left out with a warning (the Go operator refuses to write the Secret).
    """
    meta = opi.get("metadata") or {}
    source: Mapping[str, str] = meta.get("annotations") or {}
    annotations = {k: v for k, v in source.items() if not _kubernetes_annotation(k)} if enable_annotations else {}
    annotations.pop(AUTO_RESTART_ANNOTATION, None)
    warnings: tuple[str, ...] = ()
    auto_restart = source.get(AUTO_RESTART_ANNOTATION, "")
    if auto_restart and is_go_bool(auto_restart):
        annotations[AUTO_RESTART_ANNOTATION] = auto_restart
    elif auto_restart:
        warnings = (f"{AUTO_RESTART_ANNOTATION}={auto_restart!r} is not true or false; it is ignored",)
    return SecretMetadata(dict(meta.get("labels") or {}), annotations, warnings)


def operator_annotations(workload: KubeObject) -> dict[str, str]:
    """The workload's ``operator.1password.io/*`` annotations (Go ``FilterAnnotations``), empty if none.

    Taken from the workload's metadata, or, only when that has none, from its pod template (never mixed).
    ``last-restarted`` and ``auto-restart`` do not count.
    """
    template = ((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}
    for meta in (workload.get("metadata") or {}, template):
        found = {
            key: value
            for key, value in (meta.get("annotations") or {}).items()
            if OPERATOR_ANNOTATION_PATTERN.match(key) and key not in NON_OPERATOR_ANNOTATIONS
        }
        if found:
            return found
    return {}


def workload_metadata(workload: KubeObject) -> SecretMetadata:
    """Labels (none) and annotations (its operator annotations) a workload gives the Secret it names."""
    return SecretMetadata({}, operator_annotations(workload))


def owner_reference(api_version: str, kind: str, owner: KubeObject) -> KubeObject:
    """An owner reference to ``owner`` as the Go operator writes it (no controller/blockOwnerDeletion)."""
    meta = owner["metadata"]
    return {"apiVersion": api_version, "kind": kind, "name": meta["name"], "uid": meta["uid"]}


# --- The desired Secret, and how it is merged into an existing one ----------------------------------------------


@dataclass(frozen=True, slots=True)
class DesiredSecret:
    secret: KubeObject = field(repr=False)
    """A complete ``v1/Secret`` to create, or to merge into the existing one with ``merge_into``."""
    warnings: tuple[str, ...] = ()


def desired_secret(
    *,
    name: str,
    namespace: str,
    item: ItemInput,
    secret_type: str = "",
    metadata: SecretMetadata | None = None,
    owner_references: Sequence[KubeObject] = (),
    allow_empty: bool = False,
) -> DesiredSecret:
    """The Secret ``item`` should produce, named after ``name`` (sanitised with ``secret_name``).

    ``metadata`` comes from ``opi_metadata`` or ``workload_metadata``; on top of it go the item-path (resolved
    IDs), item-version, opsync's data-version and owned-metadata annotations and the managed label.
    Raises ``InvalidSecretError`` (with a condition reason) when the name or the data cannot work.
    """
    sanitised = secret_name(name)
    if sanitised is None:
        raise InvalidSecretError(f"{name!r} cannot be made a valid Secret name")
    metadata = metadata or SecretMetadata({}, {})
    built = build_secret_data(item, allow_empty=allow_empty)
    secret_type = secret_type or DEFAULT_SECRET_TYPE
    if secret_type not in ALLOWED_SECRET_TYPES:
        raise InvalidSecretError(
            f"opsync does not write Secrets of type {secret_type}; allowed: {', '.join(sorted(ALLOWED_SECRET_TYPES))}"
        )
    validate_secret_data(secret_type, built.data)
    labels = {**metadata.labels, MANAGED_LABEL: MANAGED_LABEL_VALUE}
    annotations = {
        **metadata.annotations,
        ITEM_PATH_ANNOTATION: item.path,
        ITEM_VERSION_ANNOTATION: str(item.version),
        DATA_VERSION_ANNOTATION: data_version(item.path, str(item.version)),
    }
    annotations[OWNED_METADATA_ANNOTATION] = json.dumps(
        {"annotations": sorted(annotations), "labels": sorted(labels)}, separators=(",", ":")
    )
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": sanitised,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [dict(ref) for ref in owner_references],
        },
        "type": secret_type,
        "data": {key: base64.b64encode(value).decode("ascii") for key, value in built.data.items()},
    }
    return DesiredSecret(secret, metadata.warnings + built.warnings)


class Ownership(StrEnum):
    MANAGED = "managed"
    """Carries opsync's managed label."""
    LEGACY = "legacy"
    """Made by the Go operator (item-path and item-version annotations, no label): opsync takes it over."""
    FOREIGN = "foreign"
    """Someone else's Secret: opsync must not touch it (report ``SecretConflict``)."""


def secret_ownership(secret: KubeObject) -> Ownership:
    """Who an existing Secret with the wanted name belongs to."""
    meta = secret.get("metadata") or {}
    if (meta.get("labels") or {}).get(MANAGED_LABEL) == MANAGED_LABEL_VALUE:
        return Ownership.MANAGED
    annotations = meta.get("annotations") or {}
    if annotations.get(ITEM_PATH_ANNOTATION) and annotations.get(ITEM_VERSION_ANNOTATION):
        return Ownership.LEGACY
    return Ownership.FOREIGN


def data_version(item_path: str, item_version: str) -> str:
    """The data-version token for data written from ``item_path`` at ``item_version``.

    It includes the path because a re-created item starts again at version 1.
    """
    return f"{item_path}@{item_version}"


def secret_data_version(secret: KubeObject) -> str | None:
    """A token that changes exactly when 1Password changed the Secret's data (None: not a managed Secret).

    opsync's data-version annotation, else (a Secret the Go operator made) its item path and version.
    """
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    if annotations.get(DATA_VERSION_ANNOTATION):
        return str(annotations[DATA_VERSION_ANNOTATION])
    path, version = annotations.get(ITEM_PATH_ANNOTATION), annotations.get(ITEM_VERSION_ANNOTATION)
    return data_version(path, version) if path and version else None


def _owned_keys(meta: Mapping[str, Any]) -> dict[str, set[str]]:
    """The label and annotation keys opsync wrote last time (empty for Secrets it has not written)."""
    try:
        owned = json.loads((meta.get("annotations") or {}).get(OWNED_METADATA_ANNOTATION, "{}"))
        return {kind: {str(key) for key in owned.get(kind, [])} for kind in ("labels", "annotations")}
    except (ValueError, AttributeError, TypeError):  # edited by hand into something else: own nothing
        return {"labels": set(), "annotations": set()}


def _same_type(a: str | None, b: str | None) -> bool:
    return (a or DEFAULT_SECRET_TYPE) == (b or DEFAULT_SECRET_TYPE)


def merge_into(existing: KubeObject, desired: KubeObject, *, keep_data: bool = False) -> KubeObject:
    """The object to write: ``existing`` (a copy) with opsync's part replaced by ``desired``'s.

    - ``data`` becomes the desired data, unless ``keep_data`` (an ``ignore-secret`` item whose Secret exists).
    - Labels and annotations: the desired ones are set, the ones opsync wrote before and no longer wants are
      removed, all others (added by other tools) are kept.
    - The data-version annotation only moves when the data changes, so restarts follow data, not versions
      (an ``ignore-secret`` item, or data repaired after a manual edit, restarts nothing).
    - Desired owner references missing by UID are added; others are kept.
    Raises ``SecretTypeImmutableError`` when the types differ (``""`` and ``Opaque`` are equal).
    """
    if not _same_type(existing.get("type"), desired.get("type")):
        raise SecretTypeImmutableError(SECRET_TYPE_IMMUTABLE_MESSAGE)
    merged = copy.deepcopy(existing)
    meta = merged.setdefault("metadata", {})
    wanted = desired["metadata"]
    previously = _owned_keys(existing.get("metadata") or {})
    for kind in ("labels", "annotations"):
        values = {k: v for k, v in (meta.get(kind) or {}).items() if k not in previously[kind] - wanted[kind].keys()}
        meta[kind] = {**values, **wanted[kind]}
    if keep_data or (existing.get("data") or {}) == desired["data"]:
        kept = secret_data_version(existing)
        if kept is not None:
            meta["annotations"][DATA_VERSION_ANNOTATION] = kept
    if not keep_data:
        merged["data"] = dict(desired["data"])
    refs = list(meta.get("ownerReferences") or [])
    uids = {ref.get("uid") for ref in refs}
    refs += [dict(ref) for ref in wanted.get("ownerReferences") or [] if ref.get("uid") not in uids]
    if refs:
        meta["ownerReferences"] = refs
    merged.setdefault("type", desired.get("type"))
    return merged


def secret_differs(a: KubeObject, b: KubeObject) -> bool:
    """Whether two Secrets differ in what opsync writes: labels, annotations, owners, data, type."""
    return _comparable(a) != _comparable(b)


def _comparable(secret: KubeObject) -> tuple[Any, ...]:
    meta = secret.get("metadata") or {}
    return (
        meta.get("labels") or {},
        meta.get("annotations") or {},
        meta.get("ownerReferences") or [],
        secret.get("data") or {},
        secret.get("type") or DEFAULT_SECRET_TYPE,
    )


def secret_needs_update(existing: KubeObject, desired: KubeObject, *, keep_data: bool = False) -> bool:
    """Whether writing ``merge_into(existing, desired)`` would change anything opsync owns.

    Compares data, type, opsync's labels and annotations and owner references; foreign labels and
    annotations never cause a write. Raises ``SecretTypeImmutableError`` like ``merge_into``.
    """
    return secret_differs(merge_into(existing, desired, keep_data=keep_data), existing)
