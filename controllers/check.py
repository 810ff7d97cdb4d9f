"""``opsync check``: is this configuration going to work? A short table; exit 1 when something is not fine.

Checked, with the flags and environment of ``opsync run``:

- the configuration (every setting valid; warnings shown);
- 1Password: Connect answers ``/health`` (or, with a service account, the SDK signs in), accepts the token,
  and the token reads the vaults that the OnePasswordItems in the watched namespaces name;
- Kubernetes: a SelfSubjectAccessReview for every verb of every permission in
  ``controllers.permissions.REQUIRED`` (and ``MANAGE_CONNECT`` with ``MANAGE_CONNECT=true``), where its scope
  says (each watched namespace or all of them; the watched Namespace objects by name; cluster-scoped kinds;
  the leader-election namespace; opsync's own namespace). A missing one is
  named with its verb, its place and why opsync needs it, e.g.
  ``kubernetes: secrets  FAIL  missing: delete in team-a — write the Secrets; ...``;
- the served OnePasswordItem CRD: ``warn`` when it is older than opsync's (1Password's, left by the Go
  operator: Ready conditions lose their reason) with how to upgrade it, ``FAIL`` when there is none.

The permissions judged are the caller's, or with ``--as USER`` those of USER by impersonation: from an admin's
laptop, ``opsync check --as system:serviceaccount:opsync-system:opsync`` judges what the operator's
ServiceAccount may do (the chart's ``helm test`` runs ``opsync check`` as that ServiceAccount itself).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import aiohttp

from controllers import config
from controllers.connect_setup import operator_namespace
from controllers.crdschema import ITEMS_CRD, ServedCrd, read_served_crd
from controllers.main import OUTSIDE_A_POD, access_backend, kubernetes_client, leader_election_namespace
from controllers.permissions import MANAGE_CONNECT, REQUIRED, Permission, Scope
from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.backend import Backend, ConnectBackend
from onepassword_access.errors import ConnectError
from onepassword_access.paths import ItemPathError, parse_item_path
from onepassword_access.sdk import SdkBackend
from opsync.client import ApiError, Client
from opsync.resources import NAMESPACES, SELF_SUBJECT_ACCESS_REVIEWS
from opsync.rest import ConfigException

Status = Literal["ok", "warn", "FAIL"]


@dataclass(frozen=True, slots=True)
class Row:
    check: str
    status: Status
    detail: str = ""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """The flags of ``opsync run`` (the same configuration is checked), and ``--as``."""
    config.configure_parser(parser)
    parser.add_argument(
        "--as",
        dest="as_user",
        metavar="USER",
        default="",
        help="judge the Kubernetes permissions of USER (e.g. system:serviceaccount:NAMESPACE:NAME) by impersonation,"
        " instead of the caller's; the caller needs the impersonate verb",
    )


# --- 1Password ---------------------------------------------------------------------------------------------


async def check_access(backend: Backend, vault_segments: Iterable[str]) -> list[Row]:
    """Connect's health (with Connect) or the sign-in (with a service account), the credentials, and access
    to each vault named (by name or id)."""
    if isinstance(backend, ConnectBackend):
        prefix = "connect"
        try:
            health = await backend.client.health()
        except ConnectError as err:
            return [Row("connect: reachable", "FAIL", str(err))]
        rows = [Row("connect: reachable", "ok", f"{health.name} {health.version} at {backend.client.url}")]
    else:
        prefix = "service account"
        try:
            if isinstance(backend, SdkBackend):
                await backend.authenticate()
        except ConnectError as err:  # a malformed token too (TokenFormatError)
            return [Row("service account: sign-in", "FAIL", str(err))]
        rows = [Row("service account: sign-in", "ok", "the 1Password SDK signed in")]
    try:
        vaults = await backend.list_vaults()
    except ConnectError as err:
        return [*rows, Row(f"{prefix}: token", "FAIL", str(err))]
    rows.append(Row(f"{prefix}: token", "ok" if vaults else "warn", f"reads {len(vaults)} vault(s)"))
    known = {vault.id for vault in vaults} | {vault.name.casefold() for vault in vaults}
    for segment in sorted(set(vault_segments)):
        readable = segment in known or segment.casefold() in known
        detail = "readable" if readable else "not among the vaults this token reads"
        rows.append(Row(f"{prefix}: vault {segment}", "ok" if readable else "FAIL", detail))
    return rows


async def used_vaults(kube: Client, namespaces: Sequence[str]) -> tuple[set[str], list[Row]]:
    """The vault segments of the OnePasswordItems in ``namespaces`` (all when empty)."""
    segments: set[str] = set()
    scopes: Sequence[str | None] = namespaces or [None]
    for namespace in scopes:
        try:
            found = await kube.list(ONEPASSWORDITEMS, namespace)
        except (ApiError, aiohttp.ClientError, TimeoutError) as err:
            return segments, [Row("kubernetes: list OnePasswordItems", "FAIL", str(err))]
        for item in found.get("items") or []:
            try:
                segments.add(parse_item_path(str((item.get("spec") or {}).get("itemPath") or "")).vault)
            except ItemPathError:
                continue
    return segments, []


# --- Kubernetes ------------------------------------------------------------------------------------------


async def selected_namespaces(kube: Client, selector: str) -> tuple[Row, tuple[str, ...]]:
    """The namespaces ``WATCH_NAMESPACE_SELECTOR`` selects now (opsync follows the selection live)."""
    check = f"kubernetes: namespaces selected by {selector}"
    try:
        found = await kube.list(NAMESPACES, label_selector=selector)
    except (ApiError, aiohttp.ClientError, TimeoutError) as err:
        return Row(check, "FAIL", str(err)), ()
    names = tuple(sorted(ns["metadata"]["name"] for ns in found.get("items") or []))
    if not names:
        return Row(check, "warn", "none yet: opsync syncs nothing until a namespace gets these labels"), ()
    return Row(check, "ok", ", ".join(names)), names


async def allowed(kube: Client, permission: Permission, verb: str, namespace: str, name: str = "") -> bool:
    """Whether opsync's identity may ``verb`` the resource (in ``namespace``; "" = all or cluster-scoped)."""
    attributes = {
        "verb": verb,
        "group": permission.group,
        "resource": permission.resource,
        "subresource": permission.subresource,
        "namespace": namespace,
        "name": name,
    }
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {k: v for k, v in attributes.items() if v}},
    }
    answer = await kube.create(SELF_SUBJECT_ACCESS_REVIEWS, review)
    return bool((answer.get("status") or {}).get("allowed"))


def _targets(permission: Permission, settings: config.Settings) -> list[tuple[str, str]]:
    """(namespace, name) pairs to review ``permission`` in ("" = all namespaces, or any name)."""
    match permission.scope:
        case Scope.LEADER_ELECTION:
            return [(leader_election_namespace(settings), "")]
        case Scope.LEADER_ELECTION_LEASE:
            return [(leader_election_namespace(settings), settings.leader_election_id)]
        case Scope.CLUSTER:
            return [("", name) for name in permission.names] or [("", "")]
        case Scope.WATCHED_BY_NAME:
            return [("", name) for name in settings.watch_namespaces] or [("", "")]
        case Scope.WATCHED:
            return [(namespace, "") for namespace in settings.watch_namespaces] or [("", "")]
        case Scope.OPERATOR_NAMESPACE:
            return [(operator_namespace(), "")]


def _place(namespace: str, name: str) -> str:
    if namespace:
        return f"in {namespace}"
    return f"on {name}" if name else "cluster-wide"


async def check_permissions(kube: Client, settings: config.Settings) -> list[Row]:
    """One row per required permission: ok, or each verb and place it lacks, named, with why it is needed."""
    rows = []
    for permission in (*REQUIRED, *(MANAGE_CONNECT if settings.manage_connect else ())):
        if permission.scope in (Scope.LEADER_ELECTION, Scope.LEADER_ELECTION_LEASE) and not settings.leader_elect:
            continue
        try:
            targets = _targets(permission, settings)
        except config.ConfigError as err:
            rows.append(Row(f"kubernetes: {permission.display}", "FAIL", str(err)))
            continue
        missing = [
            f"{verb} {_place(namespace, name)}"
            for namespace, name in targets
            for verb in permission.verbs
            if not await allowed(kube, permission, verb, namespace, name)
        ]
        if missing:
            detail = f"missing: {', '.join(missing)} — {permission.why}"
            rows.append(Row(f"kubernetes: {permission.display}", "FAIL", detail))
        else:
            rows.append(Row(f"kubernetes: {permission.display}", "ok", " ".join(permission.verbs)))
    return rows


def crd_row(found: ServedCrd) -> Row:
    """The row about the served OnePasswordItem CRD."""
    if found.missing:
        status: Status = "FAIL"
    else:
        status = "ok" if found.dropped == () and not found.outdated else "warn"
    return Row(f"crd: {ITEMS_CRD}", status, found.describe())


# --- the command -----------------------------------------------------------------------------------------


async def run_checks(settings: config.Settings, *, as_user: str = "") -> list[Row]:
    """Every check after the configuration's; the Kubernetes ones as ``as_user`` when given."""
    rows: list[Row] = []
    segments: set[str] = set()
    try:
        async with await kubernetes_client(settings) as kube:
            if as_user:
                kube.impersonate(as_user)
                rows.append(Row("kubernetes: identity", "ok", f"{as_user} (impersonated)"))
            namespaces = settings.watch_namespaces
            if settings.watch_namespace_selector:
                row, namespaces = await selected_namespaces(kube, settings.watch_namespace_selector)
                rows.append(row)
            if namespaces or not settings.watch_namespace_selector:  # () without a selector: every namespace
                segments, listed = await used_vaults(kube, namespaces)
                rows += listed
            rows += await check_permissions(kube, settings)
            rows.append(crd_row(await read_served_crd(kube)))
    except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as err:
        rows.append(Row("kubernetes: API server", "FAIL", str(err) or type(err).__name__))
    except ConfigException as err:  # no kubeconfig, or not in a pod
        rows.append(Row("kubernetes: credentials", "FAIL", f"{err} ({OUTSIDE_A_POD})"))
    backend = access_backend(settings)
    try:
        rows = await check_access(backend, segments) + rows
    finally:
        await backend.close()
    return rows


def print_table(rows: Sequence[Row]) -> None:
    width = max(len(row.check) for row in rows)
    for row in rows:
        sys.stdout.write(f"{row.check:<{width}}  {row.status:<4}  {row.detail}\n")


def main(args: argparse.Namespace) -> int:
    """Print the table; 0 when nothing failed, 1 otherwise."""
    try:
        settings = config.load_settings(args, os.environ)
    except config.ConfigError as err:
        print_table([Row("configuration", "FAIL", str(err))])
        return 1
    rows = [Row("configuration", "ok"), *(Row("configuration", "warn", warning) for warning in settings.warnings)]
    rows += asyncio.run(run_checks(settings, as_user=args.as_user))
    print_table(rows)
    return 1 if any(row.status == "FAIL" for row in rows) else 0
