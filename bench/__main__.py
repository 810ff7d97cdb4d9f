"""``python -m bench`` (``make bench``): docs/benchmarks.md's scenarios on a fresh control plane and Connect emulator.

Writes the results as JSON to bench/results/<time>.json (with opsync's and the emulator's logs), the tables to
docs/benchmarks.md and the plots to docs/benchmarks/ (``--no-doc``: only print the tables). ``--quick`` runs
tiny sizes in about a minute and leaves the document alone unless ``--doc`` is given. ``--scale`` runs the
initial sync alone at issue 17's sizes and writes the document's scale section instead (``bench.scaling``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from bench import cluster, report, scaling
from bench.processes import ConnectEmulator
from bench.scenarios import REPEATED_UP_TO, Bench, Options, Results, run_all
from opsync.envtest import ControlPlane

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
QUICK = Options(sizes=(10, 50), changes=(1, 10), unmanaged=200, poll_interval=2, rounds=2, idle_polls=2)


def _sizes(text: str) -> tuple[int, ...]:
    values = tuple(int(part) for part in text.split(",") if part.strip())
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive numbers")
    return values


def _scale_sizes(text: str) -> tuple[int, ...]:
    values = _sizes(text)
    if len(set(values)) < 2:
        raise argparse.ArgumentTypeError("at least two different sizes: a line is fitted through them")
    return values


def log(message: str) -> None:
    """Progress on stderr, with the time."""
    print(time.strftime("%H:%M:%S"), message, file=sys.stderr, flush=True)


async def run(options: Options, control_plane: ControlPlane, work_dir: Path) -> Results:
    """Every scenario against ``control_plane``, with an emulator holding the largest size's items.

    ``work_dir`` (which must exist) receives the emulator's and opsync's logs."""
    emulator = ConnectEmulator(cluster.emulator_data(options.largest), cluster.TOKEN, work_dir / "emulator.log")
    await emulator.start()
    try:
        kube = await control_plane.client()
        try:
            return await run_all(Bench(options, control_plane, kube, emulator, work_dir, log))
        finally:
            await kube.close()
    finally:
        await emulator.stop()


async def _main(options: Options, work_dir: Path) -> Results:
    async with ControlPlane(crds=[REPO / "crds"]) as control_plane:
        log(f"control plane up in {control_plane.startup_seconds:.1f} s; results in {work_dir}")
        return await run(options, control_plane, work_dir)


def main() -> None:
    """Parse the options, run, save, report."""
    defaults = Options()
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Run the operator benchmarks (docs/benchmarks.md)."
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=defaults.sizes,
        help="N for the initial sync (largest: scenarios 2-5); default %(default)s",
    )
    parser.add_argument("--changes", type=_sizes, default=defaults.changes, help="K for propagation")
    parser.add_argument("--unmanaged", type=int, default=defaults.unmanaged, help="Secrets opsync does not manage")
    parser.add_argument(
        "--unmanaged-steps",
        type=int,
        default=defaults.unmanaged_steps,
        help="restarts measured at 0 and this many steps up to --unmanaged",
    )
    parser.add_argument("--poll-interval", type=int, default=defaults.poll_interval, help="POLLING_INTERVAL, s")
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="propagation rounds per K")
    parser.add_argument("--idle-polls", type=int, default=defaults.idle_polls, help="polls counted when idle")
    parser.add_argument(
        "--workers",
        type=int,
        default=defaults.workers,
        help="opsync --workers, also the floor's and the apply's concurrency",
    )
    parser.add_argument(
        "--sync-repeats",
        type=int,
        default=defaults.sync_repeats,
        help=f"initial syncs (each with its floor) per size up to {REPEATED_UP_TO:,}; the median ratio is kept",
    )
    parser.add_argument(
        "--refreshes", type=int, default=defaults.refreshes, help="on-demand refreshes timed (0: skip scenario 6)"
    )
    parser.add_argument(
        "--scenarios",
        type=lambda text: tuple(part for part in text.split(",") if part),
        default=defaults.scenarios,
        help="which of sync,idle,propagation,refresh,restart to run (the others need sync); default all",
    )
    parser.add_argument(
        "--go-operator",
        default=os.environ.get("GO_OPERATOR") or None,
        help="1Password's Go operator (its manager binary): run the side-by-side scenario too (env GO_OPERATOR)",
    )
    parser.add_argument("--versus-items", type=int, default=defaults.versus_items, help="N side by side")
    parser.add_argument("--versus-changes", type=int, default=defaults.versus_changes, help="K side by side")
    parser.add_argument(
        "--versus-unmanaged", type=int, default=defaults.versus_unmanaged, help="16 KiB Secrets side by side"
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help=f"tiny sizes: {QUICK}")
    size.add_argument(
        "--scale",
        nargs="?",
        type=_scale_sizes,
        const=scaling.SIZES,
        metavar="SIZES",
        help=f"only the initial sync, at these N (default {','.join(map(str, scaling.SIZES))}), and the costs "
        "against N: the scale section of docs/benchmarks.md (issue 17)",
    )
    parser.add_argument(
        "--doc",
        action=argparse.BooleanOptionalAction,
        help="rewrite docs/benchmarks.md and its plots (default: unless --quick)",
    )
    args = parser.parse_args()
    options = (
        QUICK
        if args.quick
        else Options(
            sizes=args.sizes,
            changes=args.changes,
            unmanaged=args.unmanaged,
            unmanaged_steps=args.unmanaged_steps,
            poll_interval=args.poll_interval,
            rounds=args.rounds,
            idle_polls=args.idle_polls,
            workers=args.workers,
            refreshes=args.refreshes,
            sync_repeats=args.sync_repeats,
            scenarios=args.scenarios,
            go_operator=args.go_operator,
            versus_items=args.versus_items,
            versus_changes=args.versus_changes,
            versus_unmanaged=args.versus_unmanaged,
        )
    )
    if args.scale:  # the initial sync alone: no other scenario, no side-by-side run
        options = replace(options, sizes=args.scale, scenarios=("sync",), go_operator=None, sync_repeats=1)
    section = scaling if args.scale else report
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work_dir = RESULTS / stamp
    work_dir.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(_main(options, work_dir))
    data = results.to_json()
    path = RESULTS / f"{stamp}.json"
    path.write_text(json.dumps(data, indent=1))
    log(f"done in {results.wall_seconds / 60:.1f} min; results in {path}")
    if args.doc if args.doc is not None else not args.quick:
        section.write(data)
        log(f"wrote {report.DOC} and {report.IMAGES}/")
    else:
        print(section.markdown(data, "."))


if __name__ == "__main__":
    main()
