"""1Password Connect: wire models, an async client, item resolution, change detection, and an emulator.

The emulator (``opsync.onepassword.emulator``) is not imported here: the operator does not need it.
"""

from opsync.onepassword.changes import ChangeReport, VaultChange, VaultChangeDetector
from opsync.onepassword.client import ConnectClient, RetryPolicy
from opsync.onepassword.errors import (
    BadRequestError,
    CertificateError,
    ConnectError,
    ConnectTimeoutError,
    ForbiddenError,
    InvalidResponseError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    UnauthorizedError,
    UnreachableError,
)
from opsync.onepassword.models import (
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
from opsync.onepassword.paths import ItemPath, ItemPathError, looks_like_id, parse_item_path
from opsync.onepassword.resolve import ItemResolver, ResolvedItem, ResolveError, ResolveMemo

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
    "UnauthorizedError",
    "UnreachableError",
    "Vault",
    "VaultChange",
    "VaultChangeDetector",
    "looks_like_id",
    "parse_item_path",
]
