"""``opsync render``: print the Secret opsync would make, from an item path or a OnePasswordItem file.

``opsync render vaults/<vault>/items/<item>`` shows an item as the 1Password operator copies it;
``opsync render -f item.yaml`` shows what each OnePasswordItem in the file becomes, with its shaping
(docs/shaping.md: field mappings, sections, extra items, templates, labels and annotations), so a template
can be got right before it is applied. 1Password is reached through the same environment variables as
``opsync run`` (``OP_CONNECT_HOST``, ``OP_CONNECT_TOKEN`` or ``OP_CONNECT_TOKEN_FILE``, ``OP_CONNECT_CA_FILE``;
or ``OP_SERVICE_ACCOUNT_TOKEN`` or ``OP_SERVICE_ACCOUNT_TOKEN_FILE``).
Values are hidden (each key shows its size) unless ``--show-values`` is given; warnings go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from controllers import config
from controllers.constants import OPI_API_VERSION, OPI_KIND
from controllers.desired import desired_secret, opi_metadata
from controllers.main import access_backend, sign_in
from controllers.sanitisers import secret_name
from controllers.secretdata import InvalidSecretError, item_input_from_connect
from controllers.shaping import shaping_of
from onepassword_access.paths import ItemPathError
from onepassword_access.resolve import ItemResolver, ResolveError
from opsync.resources import KubeObject


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """The options of ``opsync render``."""
    parser.add_argument(
        "item_path", metavar="PATH", nargs="?", help="vaults/<vault id or title>/items/<item id or title>"
    )
    parser.add_argument("-f", "--filename", type=Path, help="a YAML file of OnePasswordItems (instead of PATH)")
    parser.add_argument("--name", help="the Secret's name (default: the item's title, made a valid name)")
    parser.add_argument("--namespace", default="default", help="the Secret's namespace (default: %(default)s)")
    parser.add_argument("--type", default="", help="the Secret's type, as a OnePasswordItem's top-level type")
    parser.add_argument("--show-values", action="store_true", help="print the values (base64, as in data)")
    parser.add_argument("--allow-empty-values", action="store_true", help="keep fields with empty values")
    parser.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml", help="output format")


class RenderError(Exception):
    """The input cannot be rendered (no PATH or file, an unreadable file)."""


def hide_values(secret: KubeObject) -> KubeObject:
    """``secret`` with each data value replaced by its size."""
    data = {key: f"<hidden: {len(base64.b64decode(value))} bytes>" for key, value in (secret.get("data") or {}).items()}
    return {**secret, "data": data}


def items_of(args: argparse.Namespace) -> list[KubeObject]:
    """The OnePasswordItems to render: those in ``args.filename``, else one for ``args.item_path``."""
    if args.filename is None:
        if not args.item_path:
            raise RenderError("give an item path or -f FILE")
        return [{"metadata": {"name": args.name or ""}, "spec": {"itemPath": args.item_path}, "type": args.type}]
    try:
        documents = list(yaml.safe_load_all(args.filename.read_text()))
    except (OSError, yaml.YAMLError) as err:
        raise RenderError(f"cannot read {args.filename}: {err}") from None
    found = [
        doc
        for doc in documents
        if isinstance(doc, dict) and (doc.get("apiVersion"), doc.get("kind")) == (OPI_API_VERSION, OPI_KIND)
    ]
    if not found:
        raise RenderError(f"{args.filename} holds no {OPI_KIND}")
    return found


async def render_item(
    resolver: ItemResolver, opi: KubeObject, *, namespace: str, allow_empty: bool
) -> tuple[KubeObject, tuple[str, ...]]:
    """The Secret ``opi`` makes (values shown) and the warnings about it; raises what a reconcile reports."""
    spec = opi.get("spec") or {}
    shaping = shaping_of(spec)
    resolved = await resolver.resolve(str(spec.get("itemPath") or ""))
    extra_items = []
    for extra in shaping.extra_items if shaping is not None else ():
        extra_resolved = await resolver.resolve(extra.item_path)
        extra_items.append(item_input_from_connect(extra_resolved.item, extra_resolved.files))
    meta = opi.get("metadata") or {}
    desired = desired_secret(
        name=meta.get("name") or secret_name(resolved.item.title) or resolved.item.id,
        namespace=meta.get("namespace") or namespace,
        item=item_input_from_connect(resolved.item, resolved.files),
        secret_type=str(opi.get("type") or ""),
        metadata=opi_metadata(opi),
        allow_empty=allow_empty,
        shaping=shaping,
        extra_items=extra_items,
    )
    secret = desired.secret
    del secret["metadata"]["ownerReferences"]  # opsync adds its OnePasswordItem or workloads
    return secret, desired.warnings


async def render_all(args: argparse.Namespace, settings: config.Settings) -> list[tuple[KubeObject, tuple[str, ...]]]:
    """The Secret of each item ``items_of(args)`` names, values hidden unless ``args.show_values``."""
    items = items_of(args)
    backend = access_backend(settings)
    try:
        await sign_in(backend)
        resolver = ItemResolver(backend)
        rendered = [
            await render_item(resolver, opi, namespace=args.namespace, allow_empty=args.allow_empty_values)
            for opi in items
        ]
    finally:
        await backend.close()
    return [(secret if args.show_values else hide_values(secret), warnings) for secret, warnings in rendered]


def _write(secrets: Sequence[KubeObject], output: str) -> None:
    if output == "json":
        body: object = secrets[0] if len(secrets) == 1 else {"apiVersion": "v1", "kind": "List", "items": secrets}
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump_all(secrets, sort_keys=False))


def main(args: argparse.Namespace) -> int:
    """Print the Secrets; exit 1 when an item cannot be read or cannot make a Secret."""
    settings = config.settings_or_exit(argparse.Namespace(), os.environ)
    try:
        rendered = asyncio.run(render_all(args, settings))
    except (RenderError, ItemPathError, ResolveError, InvalidSecretError, config.ConfigError) as err:
        sys.stderr.write(f"opsync render: {err}\n")
        return 1
    for secret, warnings in rendered:
        for warning in warnings:
            sys.stderr.write(f"warning: {secret['metadata']['name']}: {warning}\n")
    _write([secret for secret, _ in rendered], args.output)
    return 0
