"""1Password access (Connect today): wire models, an async client, item resolution, change detection, and an emulator.

The emulator (``onepassword_access.emulator``) is not imported here: the operator does not need it.
"""

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
from onepassword_access.resolve import ItemResolver, ResolvedItem, ResolveError, ResolveMemo

__all__ = [
    "BadRequestError",
    "CertificateError",
    "ChangeReport",
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
    "ResolveMemo",
    "ResolvedItem",
    "RetryPolicy",
    "Section",
    "ServerError",
    "TooLargeError",
    "UnauthorizedError",
    "UnreachableError",
    "Vault",
    "VaultChange",
    "VaultChangeDetector",
    "looks_like_id",
    "parse_item_path",
]
