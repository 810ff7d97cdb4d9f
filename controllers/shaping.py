"""Secrets shaped the way applications need them: the optional shaping fields of a OnePasswordItem's spec.

``fieldMapping``/``onlyMapped`` pick and rename, ``sections: prefix`` keeps same-labelled fields of different
sections apart, ``extraItems`` merges more items, ``template`` composes values (``controllers.templating``),
``secretMetadata``/``copyItemLabels`` set the Secret's labels and annotations. docs/shaping.md is the user's
guide; the rules where two of them meet are decided here and stated there:

- One item's entries keep the Go precedence (URLs, fields overwriting them, files into free keys only). A
  ``fieldMapping`` entry is explicit: its key clashing with another entry's key, another mapping's key, a key
  of another item or a ``template.data`` key is a ``KeyConflict``.
- Items merge in order (main, then ``extraItems``); a key two items produce is a ``KeyConflict``, never an
  overwrite. ``prefix`` applies to an extra item's keys that its ``fieldMapping`` did not name.
- ``template.data`` keys come last and replace a key an item produced by default (a warning says so).
- Labels and annotations: the item's own (unless ``copyItemLabels: false``; annotations as the Go operator
  copies them), then ``secretMetadata``, then ``template.metadata``; opsync's own keys cannot be set.
- ``template.type`` and the top-level ``type`` must agree when both are set.

An item without any of these fields is not shaped at all (``shaping_of`` returns None): its Secret is the Go
operator's, byte for byte. Pure functions; nothing here logs or reports a value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controllers.constants import (
    ANNOTATION_PREFIX,
    AUTO_RESTART_ANNOTATION,
    ITEM_NAME_ANNOTATION,
    SHAPING_FIELDS,
    ConditionReason,
)
from controllers.sanitisers import is_valid_secret_key, secret_data_key
from controllers.secretdata import InvalidSecretError, ItemInput, build_secret_data
from onepassword_access.paths import ItemPathError, parse_item_path

RESERVED_PREFIX = "opsync.dev/"
_RESERVED_ANNOTATIONS = {AUTO_RESTART_ANNOTATION, ITEM_NAME_ANNOTATION}  # settable: they are the user's to give


class InvalidSpecError(InvalidSecretError):
    """A shaping field cannot work as written (a bad key, prefix or path, a reserved label, types that disagree)."""

    reason = ConditionReason.INVALID_SPEC


class FieldNotFoundError(InvalidSecretError):
    """``fieldMapping`` names a label the item does not have."""

    reason = ConditionReason.FIELD_NOT_FOUND


class KeyConflictError(InvalidSecretError):
    """Two sources give the same key; the message names the keys and the sources."""

    reason = ConditionReason.KEY_CONFLICT


# --- The spec --------------------------------------------------------------------------------------------------


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class MetadataSpec(_Spec):
    """``spec.secretMetadata`` and ``spec.template.metadata``."""

    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class TemplateSpec(_Spec):
    """``spec.template``."""

    data: dict[str, str] = {}
    type: str = ""
    metadata: MetadataSpec = MetadataSpec()


class ExtraItem(_Spec):
    """One entry of ``spec.extraItems``."""

    item_path: str = Field(alias="itemPath")
    field_mapping: dict[str, str] = Field({}, alias="fieldMapping")
    prefix: str = ""


class Shaping(_Spec):
    """The shaping fields of one OnePasswordItem spec (CRD: crds/onepassword.com_onepassworditems.yaml)."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    field_mapping: dict[str, str] = Field({}, alias="fieldMapping")
    only_mapped: bool = Field(False, alias="onlyMapped")
    sections: Literal["prefix"] | None = None
    extra_items: tuple[ExtraItem, ...] = Field((), alias="extraItems")
    template: TemplateSpec = TemplateSpec()
    secret_metadata: MetadataSpec = Field(MetadataSpec(), alias="secretMetadata")
    copy_item_labels: bool = Field(True, alias="copyItemLabels")


def shaping_of(spec: Mapping[str, Any] | None) -> Shaping | None:
    """The shaping asked for by ``spec``, None when it has none of ``SHAPING_FIELDS``.

    Raises ``InvalidSpecError`` (naming the field, never quoting values) when a field cannot work; the CRD's
    schema rejects most of these already, this also covers clusters whose CRD has no schema for them.
    """
    spec = spec or {}
    if not any(name in spec for name in SHAPING_FIELDS):
        return None
    try:
        shaping = Shaping.model_validate(dict(spec))
    except ValidationError as err:
        problems = "; ".join(f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors())
        raise InvalidSpecError(problems) from None
    _check(shaping)
    return shaping


def item_paths(spec: Mapping[str, Any]) -> list[str]:
    """The item paths a spec names as written: ``itemPath`` and each ``extraItems[].itemPath`` (never raises)."""
    extras = spec.get("extraItems")
    paths = [spec.get("itemPath")]
    paths += [extra.get("itemPath") for extra in extras if isinstance(extra, dict)] if isinstance(extras, list) else []
    return [path for path in paths if isinstance(path, str) and path]


def _check(shaping: Shaping) -> None:
    mappings = {"spec.fieldMapping": shaping.field_mapping} | {
        f"spec.extraItems[{i}].fieldMapping": extra.field_mapping for i, extra in enumerate(shaping.extra_items)
    }
    for where, mapping in mappings.items():
        bad = sorted(key for key in mapping.values() if not is_valid_secret_key(key))
        if bad:
            raise InvalidSpecError(f"{where}: {_names(bad)} are not valid Secret keys")
    bad = sorted(key for key in shaping.template.data if not is_valid_secret_key(key))
    if bad:
        raise InvalidSpecError(f"spec.template.data: {_names(bad)} are not valid Secret keys")
    for i, extra in enumerate(shaping.extra_items):
        if extra.prefix and not is_valid_secret_key(extra.prefix + "x"):
            raise InvalidSpecError(f"spec.extraItems[{i}].prefix: only letters, digits, '-', '_' and '.' may be used")
        try:
            parse_item_path(extra.item_path)
        except ItemPathError as err:
            raise InvalidSpecError(f"spec.extraItems[{i}].itemPath: {err}") from None
    metadata = {"spec.secretMetadata": shaping.secret_metadata, "spec.template.metadata": shaping.template.metadata}
    for where, meta in metadata.items():
        for kind, values in (("labels", meta.labels), ("annotations", meta.annotations)):
            reserved = sorted(key for key in values if _reserved(key))
            if reserved:
                raise InvalidSpecError(f"{where}.{kind}: {_names(reserved)} are opsync's to set")
    if shaping.template.data:
        from controllers.templating import check_syntax  # noqa: PLC0415 -- Jinja2 only for specs with templates

        check_syntax(shaping.template.data)


def _reserved(key: str) -> bool:
    if key.startswith(RESERVED_PREFIX):
        return True
    return key.startswith(ANNOTATION_PREFIX) and key not in _RESERVED_ANNOTATIONS


def _names(keys: Sequence[str]) -> str:
    return ", ".join(repr(key) for key in keys)


# --- One item's keys -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceData:
    """The keys one item gives (``source_data``)."""

    data: dict[str, bytes]
    mapped: frozenset[str]
    """Keys a ``fieldMapping`` named (explicit: they clash, they are never prefixed or replaced)."""
    warnings: tuple[str, ...]


def _mapping_names(item: ItemInput) -> set[str]:
    names = {url.label for url in item.urls} | {entry.label for entry in item.fields}
    names |= {f"{entry.section}/{entry.label}" for entry in item.fields if entry.section}
    names |= {f.name for f in item.files} | {f"{f.section}/{f.name}" for f in item.files if f.section}
    return names


def source_data(
    item: ItemInput,
    *,
    source: str,
    mapping: Mapping[str, str],
    only_mapped: bool = False,
    section_prefix: bool = False,
    prefix: str = "",
    allow_empty: bool = False,
) -> SourceData:
    """The keys one item gives: its entries renamed by ``mapping`` (by label, or ``<section>/<label>`` for one
    section's field), the others kept unless ``only_mapped``, named ``<section>-<label>`` with
    ``section_prefix``, then ``prefix`` before every key ``mapping`` did not name. ``source`` names the item in
    messages. Raises ``FieldNotFoundError`` and ``KeyConflictError``.
    """
    unknown = sorted(set(mapping) - _mapping_names(item))
    if unknown:
        raise FieldNotFoundError(f"{source} has no field, URL or file labelled {_names(unknown)} (fieldMapping)")
    targets: dict[str, set[str]] = {}  # key -> the mapping entries naming it
    defaults: set[str] = set()  # the names of the entries left unmapped

    def rename(label: str, section: str, *, may_prefix_section: bool) -> str | None:
        qualified = f"{section}/{label}"
        entry = qualified if section and qualified in mapping else label if label in mapping else None
        if entry is not None:
            targets.setdefault(mapping[entry], set()).add(entry)
            return mapping[entry]
        if only_mapped:
            return None
        prefixed = section and label.strip() and section_prefix and may_prefix_section  # unlabelled: skipped as ever
        name = f"{section}-{label}" if prefixed else label
        defaults.add(name)
        return name

    urls = tuple(replace(u, label=name) for u in item.urls if (name := rename(u.label, "", may_prefix_section=False)))
    fields = tuple(
        replace(f, label=name) for f in item.fields if (name := rename(f.label, f.section, may_prefix_section=True))
    )
    files = tuple(
        replace(f, name=name) for f in item.files if (name := rename(f.name, f.section, may_prefix_section=False))
    )
    # A mapped key is explicit: two mapping entries naming it, or an unmapped entry whose key it is, would
    # make one of them silently lose.
    default_keys = {key for name in defaults if (key := secret_data_key(name)) is not None}
    clashes = sorted(key for key, entries in targets.items() if len(entries) > 1 or key in default_keys)
    if clashes:
        raise KeyConflictError(f"{source}: fieldMapping gives {_names(clashes)}, which other entries also give")
    built = build_secret_data(replace(item, urls=urls, fields=fields, files=files), allow_empty=allow_empty)
    data = {key if key in targets else prefix + key: value for key, value in built.data.items()}
    unusable = sorted(key for key in data if not is_valid_secret_key(key))
    if unusable:
        raise InvalidSpecError(f"{source}: the prefix makes {_names(unusable)}, which are not valid Secret keys")
    return SourceData(data, frozenset(targets), built.warnings)


# --- The shaped Secret -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shaped:
    """What ``shape`` makes: the Secret's data, type, labels and annotations, and warnings (no values)."""

    data: dict[str, bytes]
    secret_type: str
    labels: dict[str, str]
    annotations: dict[str, str]
    warnings: tuple[str, ...]


def shape(
    shaping: Shaping,
    item: ItemInput,
    extra_items: Sequence[ItemInput],
    *,
    secret_type: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    allow_empty: bool = False,
) -> Shaped:
    """The data, type, labels and annotations of the Secret ``shaping`` makes from ``item`` and
    ``extra_items`` (one per ``shaping.extra_items``, in order). ``labels`` and ``annotations`` are what the
    item gives by the Go rules (``desired.opi_metadata``). Raises ``InvalidSecretError`` subclasses.
    """
    assert len(extra_items) == len(shaping.extra_items)
    sources = [
        source_data(
            item,
            source="the item",
            mapping=shaping.field_mapping,
            only_mapped=shaping.only_mapped,
            section_prefix=shaping.sections == "prefix",
            allow_empty=allow_empty,
        )
    ]
    for index, (spec, extra) in enumerate(zip(shaping.extra_items, extra_items, strict=True)):
        sources.append(
            source_data(
                extra,
                source=f"spec.extraItems[{index}] ({spec.item_path})",
                mapping=spec.field_mapping,
                only_mapped=shaping.only_mapped,
                section_prefix=shaping.sections == "prefix",
                prefix=spec.prefix,
                allow_empty=allow_empty,
            )
        )
    data, mapped, warnings = _merge(sources, [f"spec.extraItems[{i}]" for i in range(len(extra_items))])
    templated: dict[str, bytes] = {}
    if shaping.template.data:
        from controllers.templating import render_templates  # noqa: PLC0415 -- as above (docs/benchmarks.md)

        templated = render_templates(shaping.template.data, [item, *extra_items])
    explicit = sorted(set(templated) & mapped)
    if explicit:
        raise KeyConflictError(f"spec.template.data and fieldMapping both give {_names(explicit)}")
    replaced = sorted(set(templated) & set(data))
    if replaced:
        warnings.append(f"spec.template.data replaces the item keys {_names(replaced)}")
    data.update(templated)
    secret_type, labels, annotations = shaped_metadata(
        shaping, secret_type=secret_type, labels=labels, annotations=annotations
    )
    return Shaped(data=data, secret_type=secret_type, labels=labels, annotations=annotations, warnings=tuple(warnings))


def shaped_metadata(
    shaping: Shaping, *, secret_type: str, labels: Mapping[str, str], annotations: Mapping[str, str]
) -> tuple[str, dict[str, str], dict[str, str]]:
    """The type, labels and annotations of a shaped Secret (as ``shape`` makes them): from the spec and the
    OnePasswordItem's own metadata only, never from the items. Raises ``InvalidSpecError`` when the types
    disagree."""
    return (
        _secret_type(secret_type, shaping.template.type),
        {
            **(labels if shaping.copy_item_labels else {}),
            **shaping.secret_metadata.labels,
            **shaping.template.metadata.labels,
        },
        {**annotations, **shaping.secret_metadata.annotations, **shaping.template.metadata.annotations},
    )


def _merge(sources: Sequence[SourceData], extra_names: Sequence[str]) -> tuple[dict[str, bytes], set[str], list[str]]:
    names = ["the item", *extra_names]
    data: dict[str, bytes] = {}
    origin: dict[str, str] = {}
    mapped: set[str] = set()
    warnings: list[str] = []
    for name, source in zip(names, sources, strict=True):
        clashes = sorted(set(source.data) & set(data))
        if clashes:
            first = sorted({origin[key] for key in clashes})
            raise KeyConflictError(f"{name} and {' and '.join(first)} both give the keys {_names(clashes)}")
        data.update(source.data)
        origin.update(dict.fromkeys(source.data, name))
        mapped |= source.mapped
        warnings += source.warnings
    return data, mapped, warnings


def _secret_type(top_level: str, templated: str) -> str:
    if top_level and templated and top_level != templated:
        raise InvalidSpecError(f"type {top_level!r} and spec.template.type {templated!r} disagree; set one of them")
    return templated or top_level
