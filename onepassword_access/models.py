"""Connect's JSON objects as pydantic models (wire names: camelCase, except ``File.content_path``).

The server is written in Go and leaves out empty values, so every property has a default except the ids.
Unknown keys are kept (``extra="allow"``) and unknown enum values are accepted as plain strings, because
newer Connect versions add categories and field types that must not break an older client.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, AliasChoices, Base64Bytes, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class VaultType(StrEnum):
    """``Vault.type`` values known at Connect 1.8."""

    USER_CREATED = "USER_CREATED"
    PERSONAL = "PERSONAL"
    EVERYONE = "EVERYONE"
    TRANSFER = "TRANSFER"


class ItemCategory(StrEnum):
    """``Item.category`` values known at Connect 1.8."""

    LOGIN = "LOGIN"
    PASSWORD = "PASSWORD"  # noqa: S105 (a category name, not a credential)
    API_CREDENTIAL = "API_CREDENTIAL"
    SERVER = "SERVER"
    DATABASE = "DATABASE"
    CREDIT_CARD = "CREDIT_CARD"
    MEMBERSHIP = "MEMBERSHIP"
    PASSPORT = "PASSPORT"
    SOFTWARE_LICENSE = "SOFTWARE_LICENSE"
    OUTDOOR_LICENSE = "OUTDOOR_LICENSE"
    SECURE_NOTE = "SECURE_NOTE"
    WIRELESS_ROUTER = "WIRELESS_ROUTER"
    BANK_ACCOUNT = "BANK_ACCOUNT"
    DRIVER_LICENSE = "DRIVER_LICENSE"
    IDENTITY = "IDENTITY"
    REWARD_PROGRAM = "REWARD_PROGRAM"
    DOCUMENT = "DOCUMENT"
    EMAIL_ACCOUNT = "EMAIL_ACCOUNT"
    SOCIAL_SECURITY_NUMBER = "SOCIAL_SECURITY_NUMBER"
    MEDICAL_RECORD = "MEDICAL_RECORD"
    SSH_KEY = "SSH_KEY"
    CUSTOM = "CUSTOM"


class FieldType(StrEnum):
    """``Field.type`` values seen on the wire (the spec says ``TOTP``; servers send ``OTP``)."""

    STRING = "STRING"
    EMAIL = "EMAIL"
    CONCEALED = "CONCEALED"
    URL = "URL"
    OTP = "OTP"
    DATE = "DATE"
    MONTH_YEAR = "MONTH_YEAR"
    MENU = "MENU"


class FieldPurpose(StrEnum):
    """``Field.purpose``: the autofill role of a field."""

    NONE = ""
    USERNAME = "USERNAME"
    PASSWORD = "PASSWORD"  # noqa: S105 (a purpose name, not a credential)
    NOTES = "NOTES"


class ItemState(StrEnum):
    """``Item.state``, absent for ordinary items."""

    ARCHIVED = "ARCHIVED"
    DELETED = "DELETED"


def _as_utc(value: datetime) -> datetime:
    # Naive timestamps would make "oldest wins" comparisons raise; Connect writes UTC anyway.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


Timestamp = Annotated[datetime, AfterValidator(_as_utc)]
"""An RFC 3339 timestamp, always timezone-aware."""


# Known values become enum members; values added by newer servers stay plain strings.
OpenVaultType = Annotated[VaultType | str, Field(union_mode="left_to_right")]
OpenCategory = Annotated[ItemCategory | str, Field(union_mode="left_to_right")]
OpenFieldType = Annotated[FieldType | str, Field(union_mode="left_to_right")]
OpenPurpose = Annotated[FieldPurpose | str, Field(union_mode="left_to_right")]
OpenState = Annotated[ItemState | str, Field(union_mode="left_to_right")]


class WireModel(BaseModel):
    """Base of every Connect object: camelCase aliases, unknown keys kept, input by either name."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """Declared fields only (values are excluded per field): unknown keys Connect sent may hold anything, so
        a repr names them without their values."""
        extra = self.__pydantic_extra__ or {}
        for name, value in super().__repr_args__():
            if name not in extra:
                yield name, value
        if extra:
            yield "unknown_keys", sorted(extra)

    def to_wire(self) -> dict[str, object]:
        """The JSON object as Connect writes it (aliases, empty values left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Vault(WireModel):
    """A vault (``GET /v1/vaults``). ``content_version`` rises whenever any item in it changes."""

    id: str
    name: str = ""
    description: str = ""
    attribute_version: int = 0
    content_version: int = 0
    items: int = 0
    type: OpenVaultType = ""
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class Ref(WireModel):
    """A reference by id: ``item.vault``, ``field.section``, ``file.section``."""

    id: str


class ItemURL(WireModel):
    """One of an item's websites."""

    href: str = ""
    label: str = ""
    primary: bool = False


class Section(WireModel):
    """A section of an item; ids are arbitrary strings, not 26-character ids."""

    id: str = ""
    label: str = ""


class GeneratorRecipe(WireModel):
    """How the server generates a value for a field with ``generate: true``."""

    length: int = 32
    character_sets: list[str] = Field(default_factory=list)
    exclude_characters: str = ""


class ItemField(WireModel):
    """A field. ``totp`` (not in the spec) holds the current code of an ``OTP`` field."""

    id: str = ""
    section: Ref | None = None
    type: OpenFieldType = FieldType.STRING
    purpose: OpenPurpose = FieldPurpose.NONE
    label: str = ""
    # Values are secrets: kept out of reprs, which end up in logs and assertion messages.
    value: str = Field("", repr=False)
    generate: bool = False
    recipe: GeneratorRecipe | None = None
    entropy: float | None = None
    totp: str | None = Field(None, repr=False)


class File(WireModel):
    """A file attached to an item. ``content`` is only there with ``inline_files=true``."""

    id: str
    name: str = ""
    size: int = 0
    content_path: str = Field(
        "", validation_alias=AliasChoices("content_path", "contentPath"), serialization_alias="content_path"
    )
    section: Ref | None = None
    content: Base64Bytes | None = Field(None, repr=False)


class ItemSummary(WireModel):
    """An item as listed by ``GET /v1/vaults/{id}/items``: no fields, sections or files."""

    id: str
    title: str = ""
    vault: Ref
    category: OpenCategory = ""
    urls: list[ItemURL] = Field(default_factory=list)
    favorite: bool = False
    tags: list[str] = Field(default_factory=list)
    version: int = 0
    state: OpenState | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None
    last_edited_by: str = ""


class ListingEntry(BaseModel):
    """An item as a vault listing gives it, reduced to what ``Listed`` keeps: the answer's other keys (URLs,
    vault, category...) are skipped while parsing instead of being built into models and dropped."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    id: str
    title: str = ""
    version: int = 0
    state: OpenState | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None
    tags: list[str] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Listed:
    """One item of a vault listing, as much as title resolution, ``verify``, change detection and the access
    policies need. Listings are held as these: an ``ItemSummary`` model takes about 3.4 KB (docs/benchmarks.md,
    "Memory"), a ``Listed`` a few hundred bytes, and a vault may list tens of thousands of items."""

    id: str
    title: str
    version: int
    created_at: datetime | None
    updated_at: datetime | None
    tags: tuple[str, ...]
    active: bool

    @classmethod
    def of(cls, summary: ItemSummary | ListingEntry) -> Listed:
        """The parts of ``summary`` a listing keeps (``active``: not archived or deleted)."""
        return cls(
            summary.id,
            summary.title,
            summary.version,
            summary.created_at,
            summary.updated_at,
            tuple(summary.tags),
            summary.state is None,
        )


class Item(ItemSummary):
    """A full item (``GET /v1/vaults/{id}/items/{id}``)."""

    sections: list[Section] = Field(default_factory=list)
    fields: list[ItemField] = Field(default_factory=list)
    files: list[File] = Field(default_factory=list)


class ServiceDependency(WireModel):
    """One dependency reported by ``/health``."""

    service: str = ""
    status: str = ""
    message: str = ""


class Health(WireModel):
    """The ``/health`` answer."""

    name: str
    version: str
    dependencies: list[ServiceDependency] = Field(default_factory=list)
