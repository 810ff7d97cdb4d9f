"""The emulator's data file: tokens, vaults and their items (YAML or JSON; see docs/connect-emulator.md)."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel


class Spec(BaseModel):
    """Base of the data-file models: camelCase keys (snake_case accepted), unknown keys are errors."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class FileSpec(Spec):
    """A file attached to an item: text ``content`` or ``contentBase64``."""

    name: str
    id: str | None = None
    content: str | None = None
    content_base64: str | None = None
    section: str | None = None
    """A section id or label."""

    @model_validator(mode="after")
    def _one_content(self) -> Self:
        if (self.content is None) == (self.content_base64 is None):
            raise ValueError(f"file {self.name!r} needs exactly one of content and contentBase64")
        if self.content_base64 is not None:
            try:
                base64.b64decode(self.content_base64, validate=True)
            except binascii.Error:
                raise ValueError(f"file {self.name!r}: contentBase64 is not base64") from None
        return self

    def data(self) -> bytes:
        """The file's bytes."""
        if self.content_base64 is not None:
            return base64.b64decode(self.content_base64)
        return (self.content or "").encode()


class FieldSpec(Spec):
    """A field; ``section`` is a section id or label (created if the item does not declare it)."""

    label: str
    value: str = ""
    id: str | None = None
    type: str = "STRING"
    purpose: str = ""
    section: str | None = None


class URLSpec(Spec):
    """A website of an item."""

    href: str
    label: str = ""
    primary: bool = False


class SectionSpec(Spec):
    """A section of an item."""

    label: str
    id: str | None = None


class ItemSpec(Spec):
    """An item. Without an ``id`` one is derived from the vault, the title and its rank among equal titles."""

    title: str
    id: str | None = None
    category: str = "LOGIN"
    tags: list[str] = []
    urls: list[URLSpec] = []
    sections: list[SectionSpec] = []
    fields: list[FieldSpec] = []
    files: list[FileSpec] = []
    favorite: bool = False
    created_at: datetime | None = None


class VaultSpec(Spec):
    """A vault and its items."""

    name: str
    id: str | None = None
    description: str = ""
    type: str = "USER_CREATED"
    created_at: datetime | None = None
    items: list[ItemSpec] = []


class TokenSpec(Spec):
    """A bearer token and the vaults it may use: vault name or id (or ``*``: every vault) -> ``r`` or ``rw``."""

    token: str = Field(min_length=1, repr=False)
    name: str = ""
    vaults: dict[str, Literal["r", "rw"]] = {"*": "rw"}


class Settings(Spec):
    """Server behaviour that real servers differ on."""

    version: str = "1.8.1"
    """Sent as ``1Password-Connect-Version`` and in ``/health``."""
    read_only_write_status: Literal[401, 403] = 401
    """Status of a write with a read-only token (401 was seen in 2021; the spec suggests 403)."""
    max_inline_file_size_kb: int = Field(100, ge=0)
    """``OP_MAX_INLINE_FILE_SIZE_KB``: larger files get 413 with ``inline_files=true``."""


class EmulatorData(Spec):
    """The whole data file."""

    tokens: list[TokenSpec] = Field(min_length=1)
    vaults: list[VaultSpec] = []
    settings: Settings = Settings()


def parse_data(data: EmulatorData | dict[str, Any]) -> EmulatorData:
    """Validate a data mapping (as loaded from YAML)."""
    return data if isinstance(data, EmulatorData) else EmulatorData.model_validate(data)


def load_data(path: str | Path) -> EmulatorData:
    """Read and validate a YAML (or JSON) data file. Blocking: call before the event loop or in a thread."""
    return parse_data(yaml.safe_load(Path(path).read_text()) or {})
