"""A 1Password Connect emulator: the whole REST API over an in-memory store, plus fault injection.

``opsync connect-emulator --data FILE`` serves it; tests and benchmarks use ``Emulator`` in-process. The
data file format is described in docs/connect-emulator.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import sys

from onepassword_access.emulator.data import EmulatorData, ItemSpec, load_data
from onepassword_access.emulator.faults import Faults
from onepassword_access.emulator.server import Emulator
from opsync.logging import setup_logging

__all__ = ["Emulator", "EmulatorData", "Faults", "ItemSpec", "configure_parser", "load_data", "main"]

log = logging.getLogger(__name__)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``opsync connect-emulator``."""
    parser.add_argument("--data", required=True, help="YAML (or JSON) file with tokens, vaults and items")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default: %(default)s)")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM; needs --tls-key)")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    parser.add_argument(
        "--admin", action="store_true", help="serve the /__admin fault and data API (off: anyone could rewrite items)"
    )


def main(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM."""
    setup_logging("info")
    if bool(args.tls_cert) != bool(args.tls_key):
        log.error("--tls-cert and --tls-key go together")
        return 2
    try:
        data = load_data(args.data)
        context = None
        if args.tls_cert:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ValueError) as err:  # a pydantic ValidationError lists every bad key
        log.error("cannot load the emulator's data or certificate: %s", err)
        return 2
    emulator = Emulator(data, host=args.host, port=args.port, admin=args.admin, ssl_context=context)
    asyncio.run(_serve(emulator))
    return 0


async def _serve(emulator: Emulator) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    async with emulator:
        log.info("Connect emulator serving", extra={"url": emulator.url, "vaults": len(emulator.store.vaults)})
        # One plain line on stdout, like `opsync envtest`: scripts wait for it (and learn the port of --port 0).
        sys.stdout.write(f"connect-emulator ready: {emulator.url}\n")
        sys.stdout.flush()
        await stopping.wait()
