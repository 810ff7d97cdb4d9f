"""``opsync refresh``: ask the running operator to fetch items from 1Password now.

It sets the ``opsync.dev/refresh`` annotation of OnePasswordItems (or of annotated workloads, ``--kind``) to
the current time, a value never used before; the operator sees the new value, fetches the item and syncs
its Secret, and records the value as acted on. It needs only ``get``/``list`` and ``patch`` on the objects,
not access to 1Password, and works whichever replica leads.

    opsync refresh team-a/db-credentials             # one item
    opsync refresh -n team-a --selector app=shop     # the items of a namespace matching a label selector
    opsync refresh --all-namespaces --selector tier=db
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import aiohttp

from controllers.constants import REFRESH_ANNOTATION
from controllers.resources import ONEPASSWORDITEMS, ROLLOUTS
from controllers.restarts import parse_bool
from opsync.client import ApiError, Client
from opsync.resources import CRONJOBS, DAEMONSETS, DEPLOYMENTS, STATEFULSETS, Resource
from opsync.rest import ConfigException
from opsync.timestamps import rfc3339_micro

KINDS: dict[str, Resource] = {
    "onepassworditem": ONEPASSWORDITEMS,
    "deployment": DEPLOYMENTS,
    "statefulset": STATEFULSETS,
    "daemonset": DAEMONSETS,
    "cronjob": CRONJOBS,
    "rollout": ROLLOUTS,  # Argo Rollouts: annotated like the others
}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """The options of ``opsync refresh``."""
    parser.add_argument("targets", nargs="*", metavar="NAMESPACE/NAME", help="objects to refresh")
    parser.add_argument("--kind", choices=sorted(KINDS), default="onepassworditem", help="(default: %(default)s)")
    parser.add_argument("-n", "--namespace", help="with --selector: the namespace to look in")
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="with --selector: every namespace")
    parser.add_argument("-l", "--selector", help="label selector of the objects to refresh")
    parser.add_argument("--kubeconfig", help="kubeconfig (default: KUBECONFIG, else in-cluster)")


def _targets(args: argparse.Namespace) -> list[tuple[str, str]] | str:
    """(namespace, name) pairs named on the command line, or an error message."""
    if args.selector is not None:
        if args.targets:
            return "give NAMESPACE/NAME arguments or --selector, not both"
        if bool(args.all_namespaces) == bool(args.namespace):
            return "--selector needs exactly one of --namespace and --all-namespaces"
        return []
    if not args.targets:
        return "nothing to refresh: give NAMESPACE/NAME, or --selector with --namespace or --all-namespaces"
    pairs = []
    for target in args.targets:
        namespace, _, name = target.partition("/")
        if not namespace or not name or "/" in name:
            return f"{target!r} is not NAMESPACE/NAME"
        pairs.append((namespace, name))
    return pairs


async def refresh(client: Client, kind: Resource, targets: list[tuple[str, str]], value: str) -> list[str]:
    """Set the refresh annotation of each target to ``value``; returns one line per object."""
    patch = {"metadata": {"annotations": {REFRESH_ANNOTATION: value}}}
    lines = []
    for namespace, name in targets:
        await client.patch(kind, name, patch, namespace)
        lines.append(f"{kind.kind.lower()} {namespace}/{name}: {REFRESH_ANNOTATION}={value}")
    return lines


async def _selected(client: Client, kind: Resource, namespace: str | None, selector: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    token: str | None = None
    while True:
        page = await client.list(kind, namespace, label_selector=selector, limit=500, continue_token=token)
        found += [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in page.get("items") or []]
        token = page["metadata"].get("continue") or None
        if token is None:
            return found


async def _main(args: argparse.Namespace, targets: list[tuple[str, str]], *, http2: bool) -> int:
    kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG")
    kind = KINDS[args.kind]
    client = await Client.from_kubeconfig(kubeconfig, http2=http2) if kubeconfig else Client.in_cluster(http2=http2)
    async with client:
        if args.selector is not None:
            namespace = None if args.all_namespaces else args.namespace
            targets = await _selected(client, kind, namespace, args.selector)
            if not targets:
                sys.stderr.write(f"opsync refresh: no {kind.plural} match {args.selector!r}\n")
                return 1
        for line in await refresh(client, kind, targets, rfc3339_micro()):
            sys.stdout.write(line + "\n")
    return 0


def main(args: argparse.Namespace) -> int:
    """``opsync refresh``: 0 when every object was annotated, 1 when one could not be, 2 on bad arguments."""
    targets = _targets(args)
    if isinstance(targets, str):
        sys.stderr.write(f"opsync refresh: {targets}\n")
        return 2
    disable_http2 = parse_bool(os.environ.get("DISABLE_HTTP2") or "false")  # as ``opsync run`` reads it
    if disable_http2 is None:
        sys.stderr.write(f"opsync refresh: DISABLE_HTTP2: must be true or false, got {os.environ['DISABLE_HTTP2']!r}\n")
        return 2
    try:
        return asyncio.run(_main(args, targets, http2=not disable_http2))
    except ApiError as error:
        sys.stderr.write(f"opsync refresh: {error}\n")
        return 1
    except (aiohttp.ClientError, TimeoutError, ConfigException) as error:
        sys.stderr.write(f"opsync refresh: cannot reach Kubernetes: {error or type(error).__name__}\n")
        return 1
