"""Every string and default the operator shares with 1Password's Go operator (v1.12.0), plus opsync's own.

The Go operator's strings are quoted exactly from its source: existing manifests, Secrets and Deployments made
by it keep working unchanged (docs/compatibility.md). opsync's additions live under ``opsync.dev/`` so they never
collide with keys the Go operator or users write.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Final

# --- Annotations read and written by the Go operator ------------------------------------------------------------
ANNOTATION_PREFIX: Final = "operator.1password.io/"
ITEM_PATH_ANNOTATION: Final = "operator.1password.io/item-path"
ITEM_NAME_ANNOTATION: Final = "operator.1password.io/item-name"
ITEM_VERSION_ANNOTATION: Final = "operator.1password.io/item-version"
AUTO_RESTART_ANNOTATION: Final = "operator.1password.io/auto-restart"
LAST_RESTARTED_ANNOTATION: Final = "operator.1password.io/last-restarted"
"""Set on a workload's pod template (RFC 3339, second precision) to roll it."""

OPERATOR_ANNOTATION_PATTERN: Final = re.compile(r"operator\.1password\.io/[a-zA-Z.]")
"""An "operator annotation" on a workload: the Go regex is matched at the start and not end-anchored."""
NON_OPERATOR_ANNOTATIONS: Final = frozenset({LAST_RESTARTED_ANNOTATION, AUTO_RESTART_ANNOTATION})
"""Keys that match the pattern but do not make a workload "annotated" (the Go operator excludes them)."""

GO_TRUE_VALUES: Final = frozenset({"1", "t", "true"})
GO_FALSE_VALUES: Final = frozenset({"0", "f", "false"})
"""Go's ``strconv.ParseBool`` set, lower-cased: the Go operator lower-cases values first, so any case works."""


# --- 1Password item tag, finalizer, item paths ----------------------------------------------------------------
IGNORE_SECRET_TAG: Final = "operator.1password.io:ignore-secret"  # noqa: S105 - not a password
"""An item tag (exact, case-sensitive): version changes only advance the Secret's annotations."""
FINALIZER: Final = "onepassword.com/finalizer.secret"
ITEM_PATH_FORMAT: Final = "vaults/{vault_id}/items/{item_id}"

SHAPING_FIELDS: Final = (
    "fieldMapping",
    "onlyMapped",
    "sections",
    "extraItems",
    "template",
    "secretMetadata",
    "copyItemLabels",
)
"""opsync's optional ``spec`` fields that make an item shaped (``docs/shaping.md``)."""

# --- Names of the Go operator's controllers, event sources and Events -------------------------------------------
ITEM_CONTROLLER: Final = "onepassworditem"
DEPLOYMENT_EVENT_COMPONENT: Final = "onepassword-operator-deployment"
READY_CONDITION: Final = "Ready"


class EventReason(StrEnum):
    """Reasons of the Events opsync records; the first two are the Go operator's."""

    RATE_LIMITED = "RateLimited"
    RECONCILE_ERROR = "ReconcileError"
    SYNCED = "Synced"
    RESTARTED = "Restarted"
    INVALID_AUTO_RESTART = "InvalidAutoRestart"
    DATA_WARNING = "DataWarning"
    SECRET_CONFLICT = "SecretConflict"  # noqa: S105 - not a password
    ACCESS_DENIED = "AccessDenied"
    """A OnePasswordAccessPolicy does not let the namespace sync the item."""
    REFRESHED = "Refreshed"
    """The item was fetched again on demand (``opsync.dev/refresh``)."""
    INVALID_RESTART_DELAY = "InvalidRestartDelay"
    OLD_CRD = "OutdatedCRD"
    """The served OnePasswordItem CRD drops a status field opsync records."""


RECONCILE_ERROR_EVENT_MESSAGE: Final = "Failed to sync secret from 1Password: {error}"
SECRET_TYPE_IMMUTABLE_MESSAGE: Final = "cannot change secret type: secret type is immutable"  # noqa: S105 - not a password


class ConditionReason(StrEnum):
    """``reason`` of the OnePasswordItem ``Ready`` condition (opsync adds reasons; the Go operator has none)."""

    SYNCED = "Synced"
    INVALID_ITEM_PATH = "InvalidItemPath"
    VAULT_NOT_FOUND = "VaultNotFound"
    ITEM_NOT_FOUND = "ItemNotFound"
    CONNECT_UNAVAILABLE = "ConnectUnavailable"
    RATE_LIMITED = "RateLimited"
    UNAUTHORIZED = "Unauthorized"
    ACCESS_DENIED = "AccessDenied"
    """Connect refused the token (403), or no OnePasswordAccessPolicy lets the namespace sync the item."""
    SECRET_CONFLICT = "SecretConflict"  # noqa: S105 - not a password
    """A Secret of that name exists and was made neither by opsync nor by the Go operator."""
    SECRET_TYPE_IMMUTABLE = "SecretTypeImmutable"  # noqa: S105 - not a password
    INVALID_SECRET = "InvalidSecret"  # noqa: S105 - not a password
    """The item cannot make a valid Secret (missing keys for its type, bad name...)."""
    SECRET_TOO_LARGE = "SecretTooLarge"  # noqa: S105 - not a password
    INVALID_SPEC = "InvalidSpec"
    """The item's shaping fields (``controllers.shaping``) cannot work as written."""
    FIELD_NOT_FOUND = "FieldNotFound"
    """``fieldMapping`` names a label the item does not have."""
    KEY_CONFLICT = "KeyConflict"
    """Two sources (items, mappings, templates) produce the same Secret key."""
    TEMPLATE_ERROR = "TemplateError"
    """A ``spec.template`` entry does not parse, fails, or produces too much."""
    INVALID_AUTO_RESTART = "InvalidAutoRestart"
    KUBERNETES_ERROR = "KubernetesError"
    """The API server refused or failed a write (permissions, validation, outage)."""


# --- Defaults ---------------------------------------------------------------------------------------------------
DEFAULT_POLLING_INTERVAL: Final = 600
"""Seconds between polls of 1Password (the Go default; its shipped manifest sets 10)."""
RATE_LIMIT_REQUEUE: Final = 15 * 60.0
"""Seconds to wait after a 1Password rate-limit error before trying the item again."""
PREFETCH_CONCURRENCY: Final = 16
"""Items the poller fetches at once for the Secrets it found changed (``ItemFetcher.prefetch``): enough to
hide Connect's round trip behind the API writes, few enough not to crowd out the reconcilers' own requests."""
DEFAULT_LEADER_ELECTION_ID: Final = "c26807fd.onepassword.com"
DEFAULT_METRICS_BIND_ADDRESS: Final = ":8080"
DEFAULT_HEALTH_PROBE_BIND_ADDRESS: Final = ":8081"
OPI_API_VERSION: Final = "onepassword.com/v1"
OPI_KIND: Final = "OnePasswordItem"
DEFAULT_SECRET_TYPE: Final = "Opaque"  # noqa: S105 - not a password
ALLOWED_SECRET_TYPES: Final = frozenset(
    {
        "Opaque",
        "kubernetes.io/tls",
        "kubernetes.io/dockerconfigjson",
        "kubernetes.io/dockercfg",
        "kubernetes.io/basic-auth",
        "kubernetes.io/ssh-auth",
    }
)
"""Secret types opsync writes (also the CRD's enum). Others carry meaning to Kubernetes itself: a
``kubernetes.io/service-account-token`` Secret is filled with a token by the token controller, a
``bootstrap.kubernetes.io/token`` one lets nodes join; an item must not mint either."""
KUBERNETES_ANNOTATION_DOMAINS: Final = ("kubernetes.io", "k8s.io")
"""Annotations under these domains (and their subdomains) are never copied to a Secret: they are
instructions to Kubernetes (``kubernetes.io/service-account.name`` binds a token Secret to an account)."""
MAX_SECRET_SIZE: Final = 1024 * 1024
"""The API server's limit on the summed size of a Secret's values (bytes)."""

# --- opsync's own metadata --------------------------------------------------------------------------------------
MANAGED_LABEL: Final = "opsync.dev/managed"
MANAGED_LABEL_VALUE: Final = "true"
"""On every Secret opsync writes, so the Secret informer can select managed Secrets by label and never cache
others' data. A dedicated key rather than ``app.kubernetes.io/managed-by``: OnePasswordItem labels are copied to
the Secret (Go behaviour) and Helm-installed items commonly carry ``managed-by: Helm`` already. Secrets made by
the Go operator lack it; they are recognised by their item-path and item-version annotations and adopted."""
MANAGED_SELECTOR: Final = f"{MANAGED_LABEL}={MANAGED_LABEL_VALUE}"

OWNED_METADATA_ANNOTATION: Final = "opsync.dev/owned-metadata"
"""On a Secret: JSON of the label and annotation keys opsync wrote, so it can later remove the ones it no longer
wants while keeping keys that other tools added."""
DATA_VERSION_ANNOTATION: Final = "opsync.dev/data-version"
"""On a Secret: ``<item path>@<item version>`` as of the last change of its data. item-version also advances
for ``ignore-secret`` items whose data is kept, and must not restart workloads; this only moves with the data."""
DATA_DIGEST_ANNOTATION: Final = "opsync.dev/data-digest"
"""On a Secret: a SHA-256 digest of its data as opsync wrote it (with the Secret's name and the
``ALLOW_EMPTY_VALUES`` setting it was built with), so that after a restart a Secret whose item is unchanged can
be trusted without fetching the item: data edited by hand, or built under another setting, no longer matches."""
EXTRA_ITEMS_ANNOTATION: Final = "opsync.dev/extra-item-versions"
"""On a Secret made with ``spec.extraItems``: JSON ``{item path (ids): version}`` of those items, so the poller
tracks them like the main item (whose version stays in ``item-version``)."""
RESTART_VERSIONS_ANNOTATION: Final = "opsync.dev/restart-versions"
"""On a workload's metadata (not its pod template, whose edits roll it): JSON ``{secret name: data version}``
as of the last restart or observation; see ``controllers.restarts``."""
REFRESH_ANNOTATION: Final = "opsync.dev/refresh"
"""On a OnePasswordItem or an annotated workload: set to a new value (any string) to fetch the item from
1Password now. The value last acted on is recorded (``REFRESH_STATUS_FIELD``, ``REFRESHED_ANNOTATION``)."""
REFRESH_STATUS_FIELD: Final = "observedRefresh"
"""In a OnePasswordItem's status: the ``opsync.dev/refresh`` value last acted on."""
REFRESHED_ANNOTATION: Final = "opsync.dev/refreshed"
"""On a workload's metadata (workloads have no status of opsync's): the ``opsync.dev/refresh`` value last acted
on."""
RESTART_DELAY_ANNOTATION: Final = "opsync.dev/restart-delay"
"""On a workload: wait this long (``30s``, ``5m``, ``1h`` or seconds) after a Secret change before rolling, so
that several changes make one rollout."""
MIN_ITEM_POLLING_INTERVAL: Final = 10
"""The smallest ``spec.pollingInterval`` of a OnePasswordItem (seconds; the CRD enforces it too)."""
