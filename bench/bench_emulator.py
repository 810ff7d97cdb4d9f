"""Throughput of the Connect emulator's item GET, driven by ``ConnectClient``.

Both run in this process on 127.0.0.1 (as in the tests), so the figure is what one core gives a poller
talking to the emulator: ``python -m bench.bench_emulator [--seconds 3] [--concurrency 16]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from onepassword_access import ConnectClient
from onepassword_access.emulator import Emulator

DATA = Path(__file__).resolve().parents[1] / "examples" / "emulator-data.yaml"
ROUTE = "GET /v1/vaults/{vault}/items/{item}"


@dataclass(frozen=True)
class Result:
    """What one run measured."""

    requests: int
    seconds: float
    concurrency: int
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        """Completed item GETs per second."""
        return self.requests / self.seconds

    def __str__(self) -> str:
        return (
            f"emulator item GET: {self.per_second:,.0f} requests/s (concurrency {self.concurrency}, "
            f"{self.seconds:.1f} s, {self.requests} requests, p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms)"
        )


async def measure(seconds: float = 3.0, concurrency: int = 16) -> Result:
    """GET the demo login item (fields, a file, an OTP code to compute) as fast as ``concurrency`` workers can."""
    async with Emulator(DATA) as emu, ConnectClient(emu.url, emu.token, max_connections=concurrency) as client:
        item = emu.get_item("Demo", "db-credentials")
        for _ in range(20):  # warm up connections and code paths
            await client.get_item(item.vault.id, item.id)
        emu.request_counts.clear()
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                await client.get_item(item.vault.id, item.id)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        assert emu.request_counts[ROUTE] == len(latencies), "every GET reached the emulator once (no retries)"
    cuts = statistics.quantiles(latencies, n=100)
    return Result(len(latencies), elapsed, concurrency, cuts[49] * 1000, cuts[98] * 1000)


def main() -> None:
    """Run once and print the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    print(asyncio.run(measure(args.seconds, args.concurrency)))


if __name__ == "__main__":
    main()
