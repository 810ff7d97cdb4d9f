"""1Password access: one ``Backend`` interface over Connect (``ConnectBackend``) and service accounts through
1Password's SDK (``SdkBackend``), the models both answer in, item resolution, change detection, and an emulator.

The emulator (``onepassword_access.emulator``) is not imported here: the operator does not need it.
"""

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
from onepassword_access.sdk import SdkBackend, TokenFormatError

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
