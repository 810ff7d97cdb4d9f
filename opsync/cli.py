"""The ``opsync`` command.

Each subcommand lives in the module that implements it, which provides ``configure_parser(parser)`` and
``main(args) -> int``. Modules are imported only when their subcommand runs, so ``opsync version`` does
not pay for the operator's imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from opsync import __version__

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("controllers.main", "run the operator"),
    "envtest": ("opsync.envtest", "run a local control plane (etcd, kube-apiserver, kube-controller-manager)"),
    "connect-emulator": ("opsync.onepassword.emulator", "serve the 1Password Connect emulator"),
    "render": ("controllers.render", "print the Secret opsync would produce for an item path"),
    "check": ("controllers.check", "check the configuration, Connect and Kubernetes permissions"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s own options are loaded (all of them when it is None)."""
    parser = argparse.ArgumentParser(prog="opsync", description="Keep Kubernetes Secrets in sync with 1Password.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("version", help="print the version")
    for name, (module, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module)
        if command is None or command == name:
            importlib.import_module(module).configure_parser(sub_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
    result: int = importlib.import_module(args._module).main(args)
    return result
