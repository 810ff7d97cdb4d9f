"""``opsync check``: is this configuration going to work? A short table; exit 1 when something is not fine.

Checked, with the flags and environment of ``opsync run``:

- the configuration (every setting valid; warnings shown);
- Connect: it answers ``/health``, accepts the token, and the token reads the vaults that the
  OnePasswordItems in the watched namespaces name;
- Kubernetes: a SelfSubjectAccessReview for every verb of every permission in
  ``controllers.permissions.REQUIRED``, where its scope says (each watched namespace or all of them; the
  watched Namespace objects by name; cluster-scoped kinds; the leader-election namespace). A missing one is
  named with its verb, its place and why opsync needs it, e.g.
  ``kubernetes: secrets  FAIL  missing: delete in team-a — write the Secrets; ...``.
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
from kubernetes_asyncio.config import ConfigException

from controllers import config
from controllers.main import OUTSIDE_A_POD, connect_client, kubernetes_client, leader_election_namespace
from controllers.permissions import REQUIRED, Permission, Scope
from controllers.resources import ONEPASSWORDITEMS
from onepassword_access.client import ConnectClient
from onepassword_access.errors import ConnectError
from onepassword_access.paths import ItemPathError, parse_item_path
from opsync.client import ApiError, Client
from opsync.resources import SELF_SUBJECT_ACCESS_REVIEWS

Status = Literal["ok", "warn", "FAIL"]


@dataclass(frozen=True, slots=True)
class Row:
    check: str
    status: Status
    detail: str = ""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """The flags of ``opsync run``: the same configuration is checked."""
    config.configure_parser(parser)


# --- Connect ---------------------------------------------------------------------------------------------


async def check_connect(connect: ConnectClient, vault_segments: Iterable[str]) -> list[Row]:
    """Health, token and access to each vault named (by name or id)."""
    try:
        health = await connect.health()
    except ConnectError as err:
        return [Row("connect: reachable", "FAIL", str(err))]
    rows = [Row("connect: reachable", "ok", f"{health.name} {health.version} at {connect.url}")]
    try:
        vaults = await connect.list_vaults()
    except ConnectError as err:
        return [*rows, Row("connect: token", "FAIL", str(err))]
    rows.append(Row("connect: token", "ok" if vaults else "warn", f"reads {len(vaults)} vault(s)"))
    known = {vault.id for vault in vaults} | {vault.name.casefold() for vault in vaults}
    for segment in sorted(set(vault_segments)):
        readable = segment in known or segment.casefold() in known
        detail = "readable" if readable else "not among the vaults this token reads"
        rows.append(Row(f"connect: vault {segment}", "ok" if readable else "FAIL", detail))
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
            return [("", "")]
        case Scope.WATCHED_BY_NAME:
            return [("", name) for name in settings.watch_namespaces] or [("", "")]
        case Scope.WATCHED:
            return [(namespace, "") for namespace in settings.watch_namespaces] or [("", "")]


def _place(namespace: str, name: str) -> str:
    if namespace:
        return f"in {namespace}"
    return f"on {name}" if name else "cluster-wide"


async def check_permissions(kube: Client, settings: config.Settings) -> list[Row]:
    """One row per required permission: ok, or each verb and place it lacks, named, with why it is needed."""
    rows = []
    for permission in REQUIRED:
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


# --- the command -----------------------------------------------------------------------------------------


async def run_checks(settings: config.Settings) -> list[Row]:
    """Every check after the configuration's."""
    rows: list[Row] = []
    segments: set[str] = set()
    try:
        async with await kubernetes_client(settings) as kube:
            segments, listed = await used_vaults(kube, settings.watch_namespaces)
            rows += listed
            rows += await check_permissions(kube, settings)
    except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as err:
        rows.append(Row("kubernetes: API server", "FAIL", str(err) or type(err).__name__))
    except ConfigException as err:  # no kubeconfig, or not in a pod
        rows.append(Row("kubernetes: credentials", "FAIL", f"{err} ({OUTSIDE_A_POD})"))
    async with connect_client(settings) as connect:
        rows = await check_connect(connect, segments) + rows
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
    rows += asyncio.run(run_checks(settings))
    print_table(rows)
    return 1 if any(row.status == "FAIL" for row in rows) else 0
