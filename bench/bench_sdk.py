"""What polling costs with a service account: 1Password SDK calls per poll, and reads per hour.

``python -m bench.bench_sdk [--items 1000] [--vaults 5] [--interval 10] [--polls 10]`` builds an emulator with
that many items, spread evenly over the vaults, all followed by opsync, and polls it through the real SDK's
Python layer (the emulator's SDK core in place of the native one), then through Connect for comparison. It
prints the rows of docs/service-accounts.md: calls per quiet poll (goal: 1), calls when items of one vault
change, and reads per hour at the interval next to the Go operator's formula (reference 4.3: 2 + F reads per
item by id, 3 + F by title, every poll; F = files per item, 0 here).
"""

from __future__ import annotations

import argparse
import asyncio
import math
from collections import Counter
from dataclasses import dataclass

from onepassword_access import ConnectBackend, ConnectClient, SdkBackend
from onepassword_access.emulator import Emulator

TOKEN = "bench-token"


@dataclass(frozen=True)
class Costs:
    """Calls measured for one size."""

    items: int
    vaults: int
    sdk_quiet: float
    connect_quiet: float
    sdk_change: int
    changed: int

    def rows(self, interval: float) -> list[str]:
        """Markdown table rows."""
        per_hour = 3600 / interval
        go_by_id, go_by_title = self.items * 2 * per_hour, self.items * 3 * per_hour
        return [
            f"| SDK calls per quiet poll, N = {self.items:,} in {self.vaults} vaults | {self.sdk_quiet:g} (goal 1) "
            f"| {self.items * 2:,} by id, {self.items * 3:,} by title |",
            f"| SDK calls for a poll in which {self.changed} items of one vault changed | {self.sdk_change} "
            f"| {self.items * 2:,} |",
            f"| SDK reads per hour, quiet, every {interval:g} s | {self.sdk_quiet * per_hour:,.0f} "
            f"| {go_by_id:,.0f} by id, {go_by_title:,.0f} by title |",
            f"| Connect requests per quiet poll (for comparison) | {self.connect_quiet:g} | {self.items * 2:,} |",
        ]


async def measure(items: int, vaults: int, polls: int, changed: int) -> Costs:
    """Poll ``polls`` times with nothing changing, then once after ``changed`` items of one vault changed."""
    per_vault = math.ceil(items / vaults)
    data = {
        "tokens": [{"token": TOKEN}],
        "vaults": [
            {
                "name": f"vault-{v}",
                "items": [
                    {"title": f"item-{i}", "fields": [{"label": "password", "value": "x"}]}
                    for i in range(min(per_vault, items - v * per_vault))
                ],
            }
            for v in range(vaults)
        ],
    }
    async with Emulator(data) as emu:
        tracked = {vault.id: set(vault.items) for vault in emu.store.vaults.values()}
        calls: Counter[str] = Counter()
        with emu.sdk_core.installed():
            sdk = SdkBackend(
                emu.service_account_token(),
                integration_version="bench",
                on_call=lambda operation, outcome: calls.update([operation]),
            )
            await sdk.poll(tracked)  # the first poll reads every vault
            calls.clear()
            for _ in range(polls):
                await sdk.poll(tracked)
            sdk_quiet = sum(calls.values()) / polls
            for index in range(changed):
                emu.update_item("vault-0", f"item-{index}", fields={"password": f"x{index}"})
            calls.clear()
            await sdk.poll(tracked)
            sdk_change = sum(calls.values())
        async with ConnectClient(emu.url, TOKEN) as client:
            connect = ConnectBackend(client)
            await connect.poll(tracked)
            emu.request_counts.clear()
            for _ in range(polls):
                await connect.poll(tracked)
            connect_quiet = sum(emu.request_counts.values()) / polls
    return Costs(items, vaults, sdk_quiet, connect_quiet, sdk_change, changed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--vaults", type=int, default=5)
    parser.add_argument("--interval", type=float, default=10.0, help="POLLING_INTERVAL in seconds")
    parser.add_argument("--polls", type=int, default=10, help="quiet polls to average over")
    parser.add_argument("--changed", type=int, default=20, help="items changed in one vault")
    args = parser.parse_args()
    costs = asyncio.run(measure(args.items, args.vaults, args.polls, args.changed))
    print("| | opsync | Go operator (reference 4.3) |")
    print("| --- | --- | --- |")
    for row in costs.rows(args.interval):
        print(row)


if __name__ == "__main__":
    main()
