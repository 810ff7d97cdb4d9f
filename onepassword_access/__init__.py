"""1Password access: one ``Backend`` interface over Connect (``ConnectBackend``) and service accounts through
1Password's SDK (``SdkBackend``), the models both answer in, item resolution, change detection, and an emulator.

The emulator (``onepassword_access.emulator``) is not imported here: the operator does not need it. Nor is
the SDK backend until it is asked for (``SdkBackend``, ``TokenFormatError``): 1Password's SDK costs several
MiB that an operator on Connect never uses (docs/benchmarks.md, "Memory").
"""

from typing import TYPE_CHECKING, Any

from onepassword_access.backend import Backend, ConnectBackend
from onepassword_access.changes import ChangeReport, VaultChange, VaultChangeDetector
from onepassword_access.client import ConnectClient, RetryPolicy
from onepassword_access.errors import (
    BadRequestError,
    CertificateError,
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
)
from onepassword_access.models import (
    FieldPurpose,
    FieldType,
    File,
    Health,
    Item,
    ItemCategory,
    ItemField,
    ItemSummary,
    ItemURL,
    Section,
    Vault,
)
from onepassword_access.paths import ItemPath, ItemPathError, looks_like_id, parse_item_path
from onepassword_access.resolve import ItemResolver, ResolvedItem, ResolveError, ResolveErrorKind

if TYPE_CHECKING:
    from onepassword_access.sdk import SdkBackend, TokenFormatError

_LAZY = frozenset({"SdkBackend", "TokenFormatError"})


def __getattr__(name: str) -> Any:
    """``SdkBackend`` and ``TokenFormatError``, importing ``onepassword_access.sdk`` on first use (PEP 562)."""
    if name in _LAZY:
        from onepassword_access import sdk  # noqa: PLC0415 -- the point: only when asked for

        return getattr(sdk, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Backend",
    "BadRequestError",
    "CertificateError",
    "ChangeReport",
    "ConnectBackend",
    "ConnectClient",
    "ConnectError",
    "ConnectTimeoutError",
    "FieldPurpose",
    "FieldType",
    "File",
    "ForbiddenError",
    "Health",
    "InvalidResponseError",
    "Item",
    "ItemCategory",
    "ItemField",
    "ItemPath",
    "ItemPathError",
    "ItemResolver",
    "ItemSummary",
    "ItemURL",
    "NotFoundError",
    "RateLimitedError",
    "ResolveError",
    "ResolveErrorKind",
    "ResolvedItem",
    "RetryPolicy",
    "SdkBackend",
    "Section",
    "ServerError",
    "TokenFormatError",
    "TooLargeError",
    "UnauthorizedError",
    "UnreachableError",
    "Vault",
    "VaultChange",
    "VaultChangeDetector",
    "looks_like_id",
    "parse_item_path",
]
