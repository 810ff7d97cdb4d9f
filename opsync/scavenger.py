"""Giving heap that a burst of work freed back to the operating system, as Go's runtime scavenger does.

CPython hands every object larger than 512 bytes (response bodies, the tables of big dicts and lists) to the C
allocator. glibc's ``malloc`` returns freed memory to the system only from the top of its heap, so after a
burst (an initial sync, a relist, a poll that fetched many items) the pages freed below live objects stay in
the process's resident set for its life: 1 to 2.5 MiB of opsync's RSS at 500 to 2,000 items
(docs/benchmarks.md). ``malloc_trim(0)`` gives them back.

``Scavenger`` calls it when the allocator holds at least ``threshold`` bytes more free memory than after its
last call (``mallinfo2``; at the first look, ``threshold`` free at all), looking every ``interval`` seconds: an
idle process is not trimmed again for memory already trimmed. With a C library that has neither function
(musl, macOS), it does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
from typing import Any

log = logging.getLogger(__name__)


class _MallInfo2(ctypes.Structure):
    # glibc 2.33+ ``struct mallinfo2``: all size_t.
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


class Allocator:
    """The C allocator's two calls the scavenger needs; ``available`` is False without them."""

    def __init__(self) -> None:
        self._trim: Any = None
        self._info: Any = None
        try:
            libc = ctypes.CDLL(None)  # the process's own symbols, the C library's among them
        except OSError:  # a platform without dlopen(NULL)
            return
        self._trim = getattr(libc, "malloc_trim", None)
        self._info = getattr(libc, "mallinfo2", None)
        if self._trim is not None and self._info is not None:
            self._trim.argtypes, self._trim.restype = [ctypes.c_size_t], ctypes.c_int
            self._info.argtypes, self._info.restype = [], _MallInfo2

    @property
    def available(self) -> bool:
        """Whether this C library can report free heap and trim it (glibc 2.33 or later)."""
        return self._trim is not None and self._info is not None

    def free_bytes(self) -> int:
        """Bytes the allocator holds free (in its bins and fast bins), resident or not."""
        assert self._info is not None, "not available"
        info = self._info()
        return int(info.fordblks) + int(info.fsmblks)

    def trim(self) -> None:
        """Give every free page of every arena back to the system (``malloc_trim(0)``)."""
        assert self._trim is not None, "not available"
        self._trim(0)


class Scavenger:
    """A manager runnable (on every replica) that trims the heap after bursts of freed memory."""

    name = "scavenger"

    def __init__(
        self, *, interval: float = 5.0, threshold: int = 256 << 10, allocator: Allocator | None = None
    ) -> None:
        self.interval = interval
        self.threshold = threshold
        self._allocator = allocator or Allocator()
        self.trims = 0
        """How many times the heap was trimmed."""

    async def run(self, stopping: asyncio.Event) -> None:
        """Look every ``interval`` seconds until ``stopping`` is set."""
        allocator = self._allocator
        if not allocator.available:
            log.debug("no malloc_trim and mallinfo2 in this C library: freed heap is not given back")
            await stopping.wait()
            return
        floor = 0  # the first look trims what start-up freed
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.interval)
            free = allocator.free_bytes()
            # Reuse lowers the free memory, so the floor follows it down; trimmed pages stay counted as free.
            floor = min(floor, free)
            if free - floor >= self.threshold:
                # In a worker thread: the call walks every arena (a few milliseconds for opsync's heap).
                await asyncio.to_thread(allocator.trim)
                self.trims += 1
                floor = allocator.free_bytes()
