"""``opsync.scavenger``: freed heap goes back to the system after a burst, and an idle process is left alone."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

from opsync.scavenger import Allocator, Scavenger


async def until(condition: object, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.005)


class FakeAllocator(Allocator):
    """A heap whose free bytes the test sets; it counts the scavenger's looks and records each trim."""

    def __init__(self, free: int, *, available: bool = True) -> None:
        self.free = free
        self.looks = 0
        self.trimmed: list[int] = []
        self._available = available

    @property
    def available(self) -> bool:
        return self._available

    def free_bytes(self) -> int:
        self.looks += 1
        return self.free

    async def looked(self, times: int = 3) -> None:
        """Until the scavenger has read the free bytes ``times`` more times (a whole look among them)."""
        seen = self.looks
        await until(lambda: self.looks >= seen + times)

    def trim(self) -> None:
        self.trimmed.append(self.free)


async def test_trims_once_per_burst_of_freed_memory() -> None:
    heap = FakeAllocator(3 << 20)  # start-up left 3 MiB free
    trimmed = heap.trimmed
    scavenger = Scavenger(interval=0.01, threshold=1 << 20, allocator=heap)
    stopping = asyncio.Event()
    task = asyncio.create_task(scavenger.run(stopping))
    try:
        await until(lambda: len(trimmed) == 1)
        await heap.looked(20)  # idle: trimmed pages stay counted as free, and are not trimmed again
        assert trimmed == [3 << 20]

        heap.free = 1 << 20  # reused
        await heap.looked()
        heap.free = (1 << 20) + (512 << 10)  # half a MiB more freed: below the threshold
        await heap.looked()
        assert len(trimmed) == 1
        heap.free = 3 << 20  # a burst freed 2 MiB above the lowest free seen
        await until(lambda: len(trimmed) == 2)
        assert scavenger.trims == 2
    finally:
        stopping.set()
        await asyncio.wait_for(task, 5)


async def test_without_the_calls_it_waits_for_stopping() -> None:
    heap = FakeAllocator(8 << 20, available=False)  # musl, macOS
    scavenger = Scavenger(interval=0.01, allocator=heap)
    stopping = asyncio.Event()
    task = asyncio.create_task(scavenger.run(stopping))
    for _ in range(10):  # let it run as far as it would go
        await asyncio.sleep(0)
    assert not task.done()
    stopping.set()
    await asyncio.wait_for(task, 5)
    assert (scavenger.trims, heap.looks) == (0, 0)


def test_glibc_gives_the_freed_pages_back() -> None:
    """On this machine's glibc: memory freed below live objects leaves the resident set only when trimmed."""
    assert Allocator().available, "glibc 2.33+ expected on the test machine"
    code = textwrap.dedent(
        """
        import asyncio, json
        from opsync.scavenger import Scavenger

        def rss():
            return int(open("/proc/self/statm").read().split()[1]) * 4096

        blocks = [bytes(4000) for _ in range(20000)]  # 80 MB on the C heap (over 512 B: not pymalloc's)
        kept = blocks[::16]  # a live block every 64 KB holds the heap below the top
        del blocks
        before = rss()

        async def main():
            scavenger = Scavenger(interval=0.01)
            stopping = asyncio.Event()
            task = asyncio.create_task(scavenger.run(stopping))
            async with asyncio.timeout(30):
                while scavenger.trims == 0:
                    await asyncio.sleep(0.01)
            stopping.set()
            await task

        asyncio.run(main())
        print(json.dumps({"freed_mib": (before - rss()) / 2**20, "kept": len(kept)}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    result = json.loads(out.stdout)
    assert result["freed_mib"] > 40, result
