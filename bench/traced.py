"""``python -m bench.traced OUT ARGS...``: ``opsync ARGS...`` under tracemalloc, for ``bench.memory``.

The operator runs exactly as ``python -m opsync ARGS...`` does, in this process, with tracemalloc tracing
``BENCH_TRACE_FRAMES`` frames (default 12) per allocation from before opsync's first import. On SIGUSR1 it
writes what is allocated now to ``OUT`` (JSON, ``report``'s layout) and carries on. Nothing here is imported
by opsync: production code knows nothing of the tracing.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType
from typing import Any

TOP = 40  # rows per table
ROOT = str(Path(__file__).resolve().parents[1]) + os.sep
PROJECT = tuple(ROOT + package + os.sep for package in ("opsync", "controllers", "onepassword_access"))


def _package(filename: str) -> str:
    """What a file belongs to: a project package, a site-packages distribution, the stdlib or ``<frozen ...>``."""
    if filename.startswith(ROOT):
        return filename[len(ROOT) :].split(os.sep, 1)[0]
    if "site-packages" + os.sep in filename:
        return filename.split("site-packages" + os.sep, 1)[1].split(os.sep, 1)[0].removesuffix(".py")
    if filename.startswith("<"):
        return filename
    return "stdlib"


def _site(frame: tracemalloc.Frame) -> str:
    return f"{_package(frame.filename)}:{Path(frame.filename).name}:{frame.lineno}"


def _caller(traceback: tracemalloc.Traceback) -> str:
    """Who asked for an allocation: "imports" when an import made it, else the innermost project frame (the
    opsync line that led to it), else the allocating line itself."""
    if any(frame.filename.startswith("<frozen importlib") for frame in traceback):
        return "imports"
    for frame in reversed(traceback):  # oldest first: reversed walks from the allocation outwards
        if frame.filename.startswith(PROJECT):
            return f"{frame.filename[len(ROOT) :]}:{frame.lineno}"
    return _site(traceback[-1])


def report(snapshot: tracemalloc.Snapshot) -> dict[str, Any]:
    """Traced bytes now: the total, by the package of the allocating line, and by who asked for it
    (``_caller``) with the lines that allocated most under each, the biggest first."""
    by_package: dict[str, int] = {}
    by_caller: dict[str, dict[str, int]] = {}
    total = 0
    for stat in snapshot.statistics("traceback"):
        total += stat.size
        site = stat.traceback[-1]
        by_package[_package(site.filename)] = by_package.get(_package(site.filename), 0) + stat.size
        sites = by_caller.setdefault(_caller(stat.traceback), {})
        sites[_site(site)] = sites.get(_site(site), 0) + stat.size

    def top(sizes: dict[str, int], count: int = TOP) -> list[tuple[str, int]]:
        return sorted(sizes.items(), key=lambda kv: -kv[1])[:count]

    callers = top({caller: sum(sites.values()) for caller, sites in by_caller.items()})
    return {
        "traced_bytes": total,
        "by_package": top(by_package),
        "by_caller": [(caller, size, top(by_caller[caller], 3)) for caller, size in callers],
    }


def main() -> None:
    """Trace, install the SIGUSR1 dump, run the opsync command line (after tracing started: imports count)."""
    out = Path(sys.argv[1])
    tracemalloc.start(int(os.environ.get("BENCH_TRACE_FRAMES", "12")))

    def dump(_signal: int, _frame: FrameType | None) -> None:
        data = report(tracemalloc.take_snapshot())
        data["peak_traced_bytes"] = tracemalloc.get_traced_memory()[1]
        out.write_text(json.dumps(data, indent=1))

    signal.signal(signal.SIGUSR1, dump)
    sys.argv = ["opsync", *sys.argv[2:]]
    runpy.run_module("opsync", run_name="__main__", alter_sys=True)  # as `python -m opsync`; it raises SystemExit


if __name__ == "__main__":
    main()
