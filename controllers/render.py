"""``opsync render vaults/<vault>/items/<item>``: print the Secret opsync would make from an item.

1Password is reached through the same environment variables as ``opsync run`` (``OP_CONNECT_HOST``,
``OP_CONNECT_TOKEN`` or ``OP_CONNECT_TOKEN_FILE``, ``OP_CONNECT_CA_FILE``; or ``OP_SERVICE_ACCOUNT_TOKEN`` or
``OP_SERVICE_ACCOUNT_TOKEN_FILE``). Values are hidden (each key shows
its size) unless ``--show-values`` is given; warnings about skipped fields go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys

import yaml

from controllers import config
from controllers.desired import SecretMetadata, desired_secret
from controllers.main import access_backend, sign_in
from controllers.sanitisers import secret_name
from controllers.secretdata import InvalidSecretError, item_input_from_connect
from onepassword_access.paths import ItemPathError
from onepassword_access.resolve import ItemResolver, ResolveError
from opsync.resources import KubeObject


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """The options of ``opsync render``."""
    parser.add_argument("item_path", metavar="PATH", help="vaults/<vault id or title>/items/<item id or title>")
    parser.add_argument("--name", help="the Secret's name (default: the item's title, made a valid name)")
    parser.add_argument("--namespace", default="default", help="the Secret's namespace (default: %(default)s)")
    parser.add_argument("--type", default="", help="the Secret's type, as a OnePasswordItem's top-level type")
    parser.add_argument("--show-values", action="store_true", help="print the values (base64, as in data)")
    parser.add_argument("--allow-empty-values", action="store_true", help="keep fields with empty values")
    parser.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml", help="output format")


def hide_values(secret: KubeObject) -> KubeObject:
    """``secret`` with each data value replaced by its size."""
    data = {key: f"<hidden: {len(base64.b64decode(value))} bytes>" for key, value in (secret.get("data") or {}).items()}
    return {**secret, "data": data}


async def render(args: argparse.Namespace, settings: config.Settings) -> tuple[KubeObject, tuple[str, ...]]:
    """The Secret for ``args.item_path`` and the warnings about the item."""
    backend = access_backend(settings)
    try:
        await sign_in(backend)
        resolved = await ItemResolver(backend).resolve(args.item_path)
    finally:
        await backend.close()
    item = item_input_from_connect(resolved.item, resolved.files)
    desired = desired_secret(
        name=args.name or secret_name(resolved.item.title) or resolved.item.id,
        namespace=args.namespace,
        item=item,
        secret_type=args.type,
        metadata=SecretMetadata({}, {}),
        allow_empty=args.allow_empty_values,
    )
    secret = desired.secret
    del secret["metadata"]["ownerReferences"]  # opsync adds its OnePasswordItem or workloads
    return (secret if args.show_values else hide_values(secret)), desired.warnings


def main(args: argparse.Namespace) -> int:
    """Print the Secret; exit 1 when the item cannot be read or cannot make a Secret."""
    settings = config.settings_or_exit(argparse.Namespace(), os.environ)
    try:
        secret, warnings = asyncio.run(render(args, settings))
    except (ItemPathError, ResolveError, InvalidSecretError, config.ConfigError) as err:
        sys.stderr.write(f"opsync render: {err}\n")
        return 1
    for warning in warnings:
        sys.stderr.write(f"warning: {warning}\n")
    if args.output == "json":
        sys.stdout.write(json.dumps(secret, indent=2) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(secret, sort_keys=False))
    return 0
