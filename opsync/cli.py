"""The ``opsync`` command: the one module that wires the three layers together.

The framework (the rest of ``opsync``), 1Password access (``onepassword_access``) and the operator
(``controllers``) never import one another upwards (docs/architecture.md, tests/unit/test_layers.py); this
module imports all three. Each subcommand lives in the module that implements it, which provides
``configure_parser(parser)`` and ``main(args) -> int``. The imports sit inside small loader functions, so
``opsync version`` does not pay for the operator's imports, yet are plain ``import`` statements that
import tools and type checkers see.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Protocol

from opsync import __version__


class Subcommand(Protocol):
    """What a subcommand's module provides."""

    def configure_parser(self, parser: argparse.ArgumentParser) -> None: ...

    def main(self, args: argparse.Namespace) -> int: ...


def _run() -> Subcommand:
    from controllers import main

    return main


def _envtest() -> Subcommand:
    from opsync import envtest

    return envtest


def _connect_emulator() -> Subcommand:
    from onepassword_access import emulator

    return emulator


def _render() -> Subcommand:
    from controllers import render

    return render


def _check() -> Subcommand:
    from controllers import check

    return check


def _refresh() -> Subcommand:
    from controllers import refresh

    return refresh


# subcommand -> (loader of its module, one-line help)
SUBCOMMANDS: dict[str, tuple[Callable[[], Subcommand], str]] = {
    "run": (_run, "run the operator"),
    "envtest": (_envtest, "run a local control plane (etcd, kube-apiserver, kube-controller-manager)"),
    "connect-emulator": (_connect_emulator, "serve the 1Password Connect emulator"),
    "render": (_render, "print the Secret opsync would produce for an item path or a OnePasswordItem file"),
    "check": (_check, "check the configuration, Connect and Kubernetes permissions"),
    "refresh": (_refresh, "ask the operator to fetch items from 1Password now (opsync.dev/refresh)"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s own options are loaded (all of them when it is None)."""
    parser = argparse.ArgumentParser(prog="opsync", description="Keep Kubernetes Secrets in sync with 1Password.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("version", help="print the version")
    for name, (load, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_load=load)
        if command is None or command == name:
            load().configure_parser(sub_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``opsync`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["version"] or argv[:1] == ["--version"]:
        sys.stdout.write(f"opsync {__version__}\n")
        return 0
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else ""
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    load: Callable[[], Subcommand] = args._load
    return load().main(args)
