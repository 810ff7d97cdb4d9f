"""The desired Secret: what one producer (a OnePasswordItem, or the workloads naming a Secret) wants it to be.

``desired_secret`` is the one place that assembles a Secret: the sanitised name, the data (``secretdata``),
the producer's labels and annotations, opsync's bookkeeping annotations, the managed label and the owner
references. What exists in the cluster plays no part here: ``controllers.merge`` merges the result into it.

Which labels and annotations each producer gives its Secret is the Go operator's rule (see
docs/compatibility.md); opsync adds, under ``opsync.dev/``, the keys it owns (so it only ever removes those)
and a data-version token that moves only when the data does (``controllers.restarts`` rolls workloads on it).

Pure functions.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from controllers.constants import (
    ALLOWED_SECRET_TYPES,
    AUTO_RESTART_ANNOTATION,
    DATA_DIGEST_ANNOTATION,
    DATA_VERSION_ANNOTATION,
    DEFAULT_SECRET_TYPE,
    EXTRA_ITEMS_ANNOTATION,
    GO_FALSE_VALUES,
    GO_TRUE_VALUES,
    ITEM_PATH_ANNOTATION,
    ITEM_VERSION_ANNOTATION,
    KUBERNETES_ANNOTATION_DOMAINS,
    MANAGED_LABEL,
    MANAGED_LABEL_VALUE,
    NON_OPERATOR_ANNOTATIONS,
    OPERATOR_ANNOTATION_PATTERN,
    OPI_API_VERSION,
    OPI_KIND,
    OWNED_METADATA_ANNOTATION,
)
from controllers.resources import ROLLOUTS
from controllers.sanitisers import secret_name
from controllers.secretdata import InvalidSecretError, ItemInput, build_secret_data, validate_secret_data
from controllers.shaping import Shaping, shape, shaped_metadata
from opsync.resources import CRONJOBS, DAEMONSETS, DEPLOYMENTS, STATEFULSETS, KubeObject, Resource

WORKLOAD_KINDS: tuple[Resource, ...] = (DEPLOYMENTS, STATEFULSETS, DAEMONSETS, CRONJOBS, ROLLOUTS)
"""The workload kinds whose annotations make Secrets and which opsync restarts (the Go operator handles
Deployments only). Argo ``Rollout``s only where their CRD is installed."""

# --- Labels and annotations each producer gives its Secret -----------------------------------------------------


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

    All labels are copied (Go behaviour). With ``enable_annotations`` all annotations are copied except those
    under ``kubernetes.io`` and ``k8s.io`` (instructions to Kubernetes, and
    ``kubectl.kubernetes.io/last-applied-configuration``). The ``auto-restart`` annotation is copied when it is
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


# --- Owner references ------------------------------------------------------------------------------------------


def opi_owner_reference(opi: KubeObject) -> KubeObject:
    """The controller reference from a Secret to its OnePasswordItem: garbage collection deletes the Secret
    with the item, and foreground deletion of the item waits for it."""
    meta = opi["metadata"]
    return {
        "apiVersion": OPI_API_VERSION,
        "kind": OPI_KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def workload_owner_reference(kind: Resource, workload: KubeObject) -> KubeObject:
    """A plain (non-controller) reference from a shared Secret to one workload that uses it: garbage
    collection deletes the Secret only once every such workload is gone."""
    meta = workload["metadata"]
    return {"apiVersion": kind.api_version, "kind": kind.kind, "name": meta["name"], "uid": meta["uid"]}


# --- The desired Secret ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DesiredSecret:
    secret: KubeObject = field(repr=False)  # holds the data: kept out of reprs
    """A complete ``v1/Secret`` to create, or to merge into the existing one (``controllers.merge``)."""
    warnings: tuple[str, ...] = ()
    """Fields, files or annotations left out, by label and key (never a value): for an Event."""
    keep_data: bool = False
    """The item is tagged ``ignore-secret``: an existing Secret keeps its data, only its metadata advances."""


def desired_secret(
    *,
    name: str,
    namespace: str,
    item: ItemInput,
    secret_type: str = "",
    metadata: SecretMetadata | None = None,
    owner_references: Sequence[KubeObject] = (),
    allow_empty: bool = False,
    shaping: Shaping | None = None,
    extra_items: Sequence[ItemInput] = (),
) -> DesiredSecret:
    """The Secret ``item`` should produce, named after ``name`` (sanitised with ``secret_name``).

    ``metadata`` comes from ``opi_metadata`` or ``workload_metadata``; on top of it go the item-path (resolved
    IDs), item-version, opsync's data-version and owned-metadata annotations and the managed label;
    ``keep_data`` follows the item's ``ignore-secret`` tag. ``shaping`` (``controllers.shaping``) reshapes the
    data and metadata, from ``item`` and ``extra_items`` (one per ``shaping.extra_items``), whose versions
    go into the extra-items annotation and the data-version token. Raises ``InvalidSecretError`` (with a
    condition reason) when the name, the shaping or the data cannot work.
    """
    sanitised = secret_name(name)
    if sanitised is None:
        raise InvalidSecretError(f"{name!r} cannot be made a valid Secret name")
    metadata = metadata or SecretMetadata({}, {})
    if shaping is None:
        built = build_secret_data(item, allow_empty=allow_empty)
        data, warnings = built.data, metadata.warnings + built.warnings
        labels, base_annotations = dict(metadata.labels), dict(metadata.annotations)
    else:
        shaped = shape(
            shaping,
            item,
            extra_items,
            secret_type=secret_type,
            labels=metadata.labels,
            annotations=metadata.annotations,
            allow_empty=allow_empty,
        )
        data, warnings, secret_type = shaped.data, metadata.warnings + shaped.warnings, shaped.secret_type
        labels, base_annotations = shaped.labels, shaped.annotations
    secret_type = secret_type or DEFAULT_SECRET_TYPE
    if secret_type not in ALLOWED_SECRET_TYPES:
        raise InvalidSecretError(
            f"opsync does not write Secrets of type {secret_type}; allowed: {', '.join(sorted(ALLOWED_SECRET_TYPES))}"
        )
    validate_secret_data(secret_type, data)
    versions = [data_version(source.path, str(source.version)) for source in (item, *extra_items)]
    secret = _assemble(
        name=sanitised,
        namespace=namespace,
        labels=labels,
        annotations={
            **base_annotations,
            ITEM_PATH_ANNOTATION: item.path,
            ITEM_VERSION_ANNOTATION: str(item.version),
            DATA_VERSION_ANNOTATION: ",".join(versions),
        },
        extra_versions={extra.path: extra.version for extra in extra_items},
        secret_type=secret_type,
        data={key: base64.b64encode(value).decode("ascii") for key, value in data.items()},
        owner_references=owner_references,
        allow_empty=allow_empty,
    )
    return DesiredSecret(secret, warnings, keep_data=item.ignores_secret)


def _assemble(
    *,
    name: str,
    namespace: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    extra_versions: Mapping[str, int],
    secret_type: str,
    data: Mapping[str, str],
    owner_references: Sequence[KubeObject],
    allow_empty: bool,
) -> KubeObject:
    """The Secret object: ``data`` base64-encoded, opsync's label and bookkeeping annotations added."""
    labels = {**labels, MANAGED_LABEL: MANAGED_LABEL_VALUE}
    annotations = {**annotations, DATA_DIGEST_ANNOTATION: data_digest(namespace, name, data, allow_empty=allow_empty)}
    if extra_versions:
        annotations[EXTRA_ITEMS_ANNOTATION] = json.dumps(dict(extra_versions), separators=(",", ":"))
    annotations[OWNED_METADATA_ANNOTATION] = json.dumps(
        {"annotations": sorted(annotations), "labels": sorted(labels)}, separators=(",", ":")
    )
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [dict(ref) for ref in owner_references],
        },
        "type": secret_type,
        "data": dict(data),
    }


def data_digest(namespace: str, name: str, data: Mapping[str, str], *, allow_empty: bool) -> str:
    """The data-digest annotation of a Secret holding ``data`` (base64 values, as the API has them), built
    with ``ALLOW_EMPTY_VALUES`` = ``allow_empty``. Salted with the Secret's namespace and name."""
    digest = hashlib.sha256(f"{namespace}/{name}\0{int(allow_empty)}\0".encode())
    for key in sorted(data):
        digest.update(f"{key}\0{data[key]}\0".encode())
    return "sha256:" + digest.hexdigest()


def desired_from_existing(
    existing: KubeObject,
    *,
    name: str,
    namespace: str,
    secret_type: str = "",
    metadata: SecretMetadata | None = None,
    owner_references: Sequence[KubeObject] = (),
    allow_empty: bool = False,
    shaping: Shaping | None = None,
) -> DesiredSecret | None:
    """The desired Secret of a producer whose items are known to be unchanged, without the items: the existing
    Secret's data (and item paths and versions), with the metadata the producer wants now (for a shaped one,
    ``shaping``: its type, labels and annotations come from the spec, never from the items).

    None when the data cannot be trusted to be what opsync built from those items with this setting: no
    digest, a digest that does not match (edited by hand, or built with another ``allow_empty``), recorded
    extra items that are not one per ``shaping.extra_items``, or a type opsync does not write. The caller then
    fetches the items. That the data was built with this ``shaping`` is the caller's to know (the spec did not
    change since that sync). ``plan_update(existing, result)`` is None exactly when the Secret is as the
    producer wants it.
    """
    sanitised = secret_name(name)
    meta = existing.get("metadata") or {}
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    data: Mapping[str, str] = existing.get("data") or {}
    path, version = annotations.get(ITEM_PATH_ANNOTATION), annotations.get(ITEM_VERSION_ANNOTATION)
    recorded = annotations.get(DATA_DIGEST_ANNOTATION)
    extras = recorded_extra_items(existing)
    wanted_extras = len(shaping.extra_items) if shaping is not None else 0
    metadata = metadata or SecretMetadata({}, {})
    labels, base_annotations = metadata.labels, metadata.annotations
    if shaping is not None:
        secret_type, labels, base_annotations = shaped_metadata(
            shaping, secret_type=secret_type, labels=labels, annotations=base_annotations
        )
    secret_type = secret_type or DEFAULT_SECRET_TYPE
    if (
        sanitised is None
        or not path
        or not version
        or not recorded
        or extras is None
        or len(extras) != wanted_extras
        or (wanted_extras == 0 and EXTRA_ITEMS_ANNOTATION in annotations)
        or secret_type not in ALLOWED_SECRET_TYPES
        or recorded != data_digest(namespace, sanitised, data, allow_empty=allow_empty)
    ):
        return None
    versions = [data_version(path, version), *(data_version(p, str(v)) for p, v in extras.items())]
    secret = _assemble(
        name=sanitised,
        namespace=namespace,
        labels=labels,
        annotations={
            **base_annotations,
            ITEM_PATH_ANNOTATION: path,
            ITEM_VERSION_ANNOTATION: version,
            DATA_VERSION_ANNOTATION: ",".join(versions),
        },
        extra_versions=extras,
        secret_type=secret_type,
        data=data,
        owner_references=owner_references,
        allow_empty=allow_empty,
    )
    return DesiredSecret(secret, metadata.warnings)


# --- The data-version token -----------------------------------------------------------------------------------


def data_version(item_path: str, item_version: str) -> str:
    """The data-version token for data written from ``item_path`` at ``item_version``.

    It includes the path because a re-created item starts again at version 1. A Secret with
    ``spec.extraItems`` joins the tokens of all its items with commas.
    """
    return f"{item_path}@{item_version}"


def item_versions(secret: KubeObject) -> dict[str, str]:
    """``{item path (ids): version}`` of the items a Secret's data was made from: its item-path and item-version
    annotations, and a shaped Secret's extra-items annotation. Empty or garbled entries are left out."""
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    found = {str(annotations.get(ITEM_PATH_ANNOTATION) or ""): str(annotations.get(ITEM_VERSION_ANNOTATION) or "")}
    found |= {path: str(version) for path, version in (recorded_extra_items(secret) or {}).items()}
    return {path: version for path, version in found.items() if path and version}


def recorded_extra_items(secret: KubeObject) -> dict[str, int] | None:
    """``{item path (ids): version}`` of a shaped Secret's extra items, in ``spec.extraItems`` order, as its
    extra-items annotation records them (empty without one); None when the annotation is garbled."""
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    try:
        extra = json.loads(annotations.get(EXTRA_ITEMS_ANNOTATION) or "{}")
    except ValueError:
        return None
    if not isinstance(extra, dict):
        return None
    valid = {path: v for path, v in extra.items() if path and isinstance(v, int) and not isinstance(v, bool)}
    return valid if len(valid) == len(extra) else None


def secret_data_version(secret: KubeObject) -> str | None:
    """A token that changes exactly when 1Password changed the Secret's data (None: not a managed Secret).

    opsync's data-version annotation, else (a Secret the Go operator made) its item path and version.
    """
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    if annotations.get(DATA_VERSION_ANNOTATION):
        return str(annotations[DATA_VERSION_ANNOTATION])
    path, version = annotations.get(ITEM_PATH_ANNOTATION), annotations.get(ITEM_VERSION_ANNOTATION)
    return data_version(path, version) if path and version else None
