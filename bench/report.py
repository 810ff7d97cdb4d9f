"""Tables for docs/benchmarks.md and PNG plots, from a run's results (the JSON in bench/results/).

Only the part of the document between ``BEGIN`` and ``END`` is rewritten; the prose around it (how to run,
the analysis of misses, other benchmarks) is kept. ``python -m bench.report bench/results/<run>.json``
regenerates both from a saved run.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on the benchmark machine
import matplotlib.pyplot as plt

from bench import versus
from bench.scenarios import kept_mean, kept_rounds, percentile, span_ratio

BEGIN = "<!-- bench:results:begin (written by `python -m bench`; edit outside) -->"
END = "<!-- bench:results:end -->"
REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
IMAGES = REPO / "docs" / "benchmarks"

# The targets in docs/benchmarks.md.
RATIO_TARGET = 1.5
RATIO_AT = 1000
PROPAGATION_SLACK = 2.0
RSS_TARGET_MIB = 150.0
FLAT_TOLERANCE = 0.05  # RSS with the most unmanaged Secrets within 5% of RSS with none: "flat"
REFRESH_SECRET_TARGET = 2.0  # seconds, p99: opsync.dev/refresh -> the Secret (issue 19)
REFRESH_RESTART_TARGET = 3.0  # seconds, p99: opsync.dev/refresh -> the workload's pod template


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table of ``rows`` under ``header``."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _kept_figure(value: float, unit: str = "") -> str:
    """A figure over the propagation rounds one poll found; n/a when there were none (NaN)."""
    return "n/a" if math.isnan(value) else f"{value:.2f}{unit}"


def _counts(counts: dict[str, int], per: float) -> str:
    return ", ".join(f"{key} {value / per:.2f}" for key, value in counts.items()) or "none"


def _cpu(seconds: dict[str, float], items: int) -> str:
    """CPU per process in ms per item."""
    return ", ".join(f"{name} {value / items * 1000:.1f}" for name, value in seconds.items() if value)


def _cpu_seconds(seconds: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.1f}" for name, value in seconds.items() if value)


def verdict(met: bool, miss: str) -> str:
    """A table's verdict cell: "met", or by how much it was missed."""
    return "met" if met else f"**missed**: {miss}"


def _spread(sync: dict[str, Any]) -> str:
    """ " (1.48 to 1.83 over 3 pairs)" when the sync was repeated (the kept one has the median ratio), else ""."""
    ratios = sync.get("ratios") or []
    return f" ({min(ratios):.2f} to {max(ratios):.2f} over {len(ratios)} pairs)" if len(ratios) > 1 else ""


def targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for each target (docs/benchmarks.md) the run covered."""
    rows: list[tuple[str, str, str]] = []
    syncs = results["initial_sync"]
    if syncs:
        sync = min(syncs, key=lambda s: abs(s["items"] - RATIO_AT))
        ratio = sync["ready_seconds"] / sync["floor_seconds"]
        rows.append(
            (
                f"initial sync at N = {sync['items']} within {RATIO_TARGET}x the floor",
                f"{ratio:.2f}x{_spread(sync)}",
                verdict(ratio <= RATIO_TARGET, f"{ratio / RATIO_TARGET - 1:.0%} over"),
            )
        )
    if idle := results["idle"]:
        connect = sum(idle["connect_requests"].values()) / idle["polls"]
        rows.append(
            (
                "idle: Connect requests per poll = vaults watched",
                f"{connect:g} for {idle['vaults']} vaults",
                verdict(connect == idle["vaults"], f"{connect - idle['vaults']:+g} per poll"),
            )
        )
        per_poll = idle["api_writes"] / idle["polls"]
        rows.append(("idle: API-server writes per poll = 0", f"{per_poll:g}", verdict(per_poll == 0, "not 0")))
    if results["propagation"]:
        prop = max(results["propagation"], key=lambda p: (p["items"], p["changed"]))
        interval = results["options"]["poll_interval"]
        limit = interval + PROPAGATION_SLACK
        for what, key in (("Secret", "secret_seconds"), ("restart annotation", "restart_seconds")):
            p99 = percentile(prop[key], 99)
            rows.append(
                (
                    f"propagation p99 ({what}) <= poll interval + 2 s at N = {prop['items']}, K = {prop['changed']}",
                    f"{p99:.1f} s (limit {limit:g} s)",
                    verdict(p99 <= limit, f"by {p99 - limit:.1f} s"),
                )
            )
    if restarts := results["restarts"]:
        most = max(restarts, key=lambda r: r["unmanaged"])
        none = min(restarts, key=lambda r: r["unmanaged"])
        rows.append(
            (
                f"RSS <= {RSS_TARGET_MIB:g} MiB with {most['unmanaged']:,} unmanaged Secrets",
                f"{most['rss_mib']:.0f} MiB (peak {most['peak_rss_mib']:.0f})",
                verdict(most["rss_mib"] <= RSS_TARGET_MIB, f"by {most['rss_mib'] - RSS_TARGET_MIB:.0f} MiB"),
            )
        )
        growth = most["rss_mib"] - none["rss_mib"]
        rows.append(
            (
                "RSS flat in the number of unmanaged Secrets",
                f"{growth:+.1f} MiB from {none['unmanaged']:,} to {most['unmanaged']:,}",
                verdict(growth <= FLAT_TOLERANCE * none["rss_mib"], f"grows {growth:.1f} MiB"),
            )
        )
        writes = max(r["api_writes"] for r in restarts)
        rows.append(("restart: API-server writes = 0", f"{writes}", verdict(writes == 0, f"{writes} writes")))
    if refresh := results.get("refresh"):  # runs before this scenario existed have none
        for what, key, limit in (
            ("Secret", "secret_seconds", REFRESH_SECRET_TARGET),
            ("pod template", "restart_seconds", REFRESH_RESTART_TARGET),
        ):
            p99 = percentile(refresh[key], 99)
            rows.append(
                (
                    f"refresh p99 ({what}) < {limit:g} s, poll interval {refresh['poll_interval']} s, "
                    f"{len(refresh[key])} refreshes",
                    f"{p99:.2f} s",
                    verdict(p99 < limit, f"by {p99 - limit:.2f} s"),
                )
            )
    return rows


def refresh_section(results: dict[str, Any]) -> list[str]:
    """Scenario 6's table (empty for a run without it)."""
    refresh = results.get("refresh")
    if not refresh:
        return []
    cells: list[object] = [f"{refresh['items']:,}", refresh["poll_interval"], len(refresh["secret_seconds"])]
    for key in ("secret_seconds", "restart_seconds"):
        cells += [f"{percentile(refresh[key], q):.2f}" for q in (50, 99)]
    return [
        "### 6. On-demand refresh",
        "Seconds from the `opsync.dev/refresh` patch to the Secret's new `item-version` and to the Deployment's "
        "pod-template restart annotation, one refresh at a time.",
        markdown_table(
            ("N", "poll interval (s)", "refreshes", "Secret p50", "Secret p99", "pod template p50", "pod template p99"),
            [cells],
        ),
    ]


def markdown(results: dict[str, Any], images: str) -> str:
    """The generated section; ``images``: the PNG folder relative to the document."""
    options = results["options"]
    parts = [
        f"Run of {results['started']}: wall time {results['wall_seconds'] / 60:.1f} min; poll interval "
        f"{options['poll_interval']} s, {options['workers']} workers per controller, {options['rounds']} "
        f"propagation rounds per K.",
    ]
    if verdicts := targets(results):
        parts += ["### Targets", markdown_table(("target", "measured", "verdict"), verdicts)]
    if sides := results.get("versus"):
        parts += [
            "### Side by side with the Go operator",
            f"Both operators in one run, one after the other, each in fresh namespaces: {versus.DESCRIPTION}",
            versus.table(sides),
        ]
    if syncs := results["initial_sync"]:
        rows = [
            (
                f"{s['items']:,}",
                f"{s['apply_seconds']:.1f}",
                f"{s['ready_seconds']:.1f}",
                f"{s['floor_seconds']:.1f}",
                f"{s['ready_seconds'] / s['floor_seconds']:.2f}{_spread(s)}",
                _cpu(s["cpu_seconds"], s["items"]),
                _cpu(s["floor_cpu_seconds"], s["items"]),
                _counts(s["connect_requests"], s["items"]),
                _counts(s["api_requests"], s["items"]),
                f"{s['item_reconciles'] / s['items']:.2f}" if s.get("item_reconciles") else "",
            )
            for s in syncs
        ]
        parts += [
            "### 1. Initial sync",
            markdown_table(
                (
                    "N",
                    "apply (s)",
                    "apply → all Ready (s)",
                    "floor (s)",
                    "ratio",
                    "CPU ms per item: apply → idle",
                    "CPU ms per item: floor",
                    "Connect requests per item",
                    "API-server requests per item",
                    "item reconciles per item",
                ),
                rows,
            ),
            f"![initial sync]({images}/initial-sync.png)",
            f"![initial sync over time]({images}/initial-sync-timeline.png)",
        ]
    if idle := results["idle"]:
        polls = idle["polls"]
        parts += [
            "### 2. Idle cost",
            markdown_table(
                (
                    "N",
                    "vaults",
                    "polls",
                    "Connect requests per poll",
                    "API-server requests per poll",
                    "writes per poll",
                    "opsync CPU ms per poll",
                ),
                [
                    (
                        f"{idle['items']:,}",
                        idle["vaults"],
                        polls,
                        _counts(idle["connect_requests"], polls),
                        _counts(idle["api_requests"], polls),
                        f"{idle['api_writes'] / polls:g}",
                        f"{idle['cpu_seconds'] / polls * 1000:.0f}" if "cpu_seconds" in idle else "n/a",
                    )
                ],
            ),
        ]
    if props := results["propagation"]:
        interval = options["poll_interval"]
        prop_rows: list[list[object]] = []
        for p in props:
            cells: list[object] = [f"{p['items']:,}", p["changed"], len(p["secret_seconds"])]
            for key in ("secret_seconds", "restart_seconds"):
                for q in (50, 99):
                    value = percentile(p[key], q)
                    cells.append(f"{value:.1f} ({value / interval:.2f})")
            cells.append(_cpu(p["cpu_seconds"], len(p["secret_seconds"])))
            prop_rows.append(cells)
        parts += [
            "### 3. Propagation",
            f"Seconds from the change in 1Password (in poll intervals of {interval} s).",
            markdown_table(
                (
                    "N",
                    "K",
                    "samples",
                    "Secret p50",
                    "Secret p99",
                    "restart p50",
                    "restart p99",
                    "CPU ms per changed item",
                ),
                prop_rows,
            ),
            f"![propagation]({images}/propagation.png)",
        ]
        if spans := [p for p in props if p.get("floor_spans")]:  # runs before 2026-12-04 had no floor
            parts += [
                "After the poll that finds the changes, per round on average: from the first Secret updated to the "
                "last restart annotation, opsync's and the floor's, the same Secret updates and Deployment restarts "
                "written by the benchmark right after (`--workers` of each in flight, nothing read, no status, no "
                "Event), over the rounds whose changes one poll found (a round whose edits a poll split, the rest "
                "found by the next, holds a poll interval of waiting); opsync's API-server requests and the CPU per "
                "changed item.",
                markdown_table(
                    (
                        "N",
                        "K",
                        "rounds one poll found",
                        "opsync",
                        "floor",
                        "ratio",
                        "opsync requests per change",
                        "CPU ms per change: opsync round",
                        "floor",
                    ),
                    [
                        [
                            f"{p['items']:,}",
                            p["changed"],
                            f"{len(kept_rounds(p['spans'], p.get('split', ())))} of {len(p['spans'])}",
                            _kept_figure(kept_mean(p["spans"], p.get("split", ())), " s"),
                            _kept_figure(kept_mean(p["floor_spans"], p.get("split", ())), " s"),
                            _kept_figure(span_ratio(p["spans"], p["floor_spans"], p.get("split", ()))),
                            _counts(p["api_requests"], len(p["secret_seconds"])),
                            _cpu(p["cpu_seconds"], len(p["secret_seconds"])),
                            _cpu(p["floor_cpu_seconds"], len(p["secret_seconds"])),
                        ]
                        for p in spans
                    ],
                ),
            ]
    if restarts := results["restarts"]:
        steady = results["steady_memory"]
        restart_rows = [
            (
                f"{r['items']:,}",
                f"{r['unmanaged']:,}",
                f"{r['ready_seconds']:.1f}",
                f"{r['idle_seconds']:.1f}",
                _cpu_seconds(r["cpu_seconds"]),
                r["api_writes"],
                _counts(r["api_requests"], 1),
                r["connect_requests"],
                f"{r['rss_mib']:.0f}",
                f"{r['peak_rss_mib']:.0f}",
            )
            for r in restarts
        ]
        parts += [
            "### 4. and 5. Memory and restart",
            markdown_table(
                (
                    "N",
                    "unmanaged Secrets",
                    "to /readyz (s)",
                    "to idle (s)",
                    "CPU (s)",
                    "API-server writes",
                    "API-server requests",
                    "Connect requests",
                    "RSS (MiB)",
                    "peak RSS (MiB)",
                ),
                restart_rows,
            ),
        ]
        if steady:
            parts.append(
                f"The opsync of scenarios 1-3 (initial sync of N = {restarts[0]['items']:,}, then "
                f"propagation) held {steady['rss_mib']:.0f} MiB afterwards, peak "
                f"{steady['peak_rss_mib']:.0f} MiB."
            )
        parts.append(f"![memory]({images}/memory.png)")
    parts += refresh_section(results)
    return "\n\n".join(parts)


def plots(results: dict[str, Any], folder: Path) -> None:
    """initial-sync.png, initial-sync-timeline.png, propagation.png and memory.png in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    if syncs := results["initial_sync"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        labels = [f"{s['items']:,}" for s in syncs]
        xs = range(len(syncs))
        ax.bar([x - 0.2 for x in xs], [s["ready_seconds"] for s in syncs], 0.4, label="opsync: apply → all Ready")
        ax.bar([x + 0.2 for x in xs], [s["floor_seconds"] for s in syncs], 0.4, label="floor: apply, Secrets, status")
        for x, s in zip(xs, syncs, strict=True):
            ax.annotate(
                f"{s['ready_seconds'] / s['floor_seconds']:.2f}x",
                (x - 0.2, s["ready_seconds"]),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set(
            xticks=list(xs),
            xticklabels=labels,
            xlabel="OnePasswordItems (N)",
            ylabel="seconds",
            yscale="log",
            title="Initial sync",
        )
        ax.legend()
        save_figure(fig, folder / "initial-sync.png")
        largest = syncs[-1]
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, name in (("applied", "OnePasswordItems created"), ("ready", "OnePasswordItems Ready")):
            ax.step(largest[key], range(1, len(largest[key]) + 1), where="post", label=name)
        ax.axvline(largest["floor_seconds"], color="grey", linestyle=":", label="floor: the last item seen Ready")
        ax.set(
            xlabel="seconds from the first create",
            ylabel="items",
            xlim=(0, None),
            ylim=(0, None),
            title=f"Initial sync of N = {largest['items']:,} over time",
        )
        ax.legend()
        save_figure(fig, folder / "initial-sync-timeline.png")
    if props := results["propagation"]:
        interval = results["options"]["poll_interval"]
        fig, ax = plt.subplots(figsize=(6, 4))
        ks = [str(p["changed"]) for p in props]
        for key, name in (("secret_seconds", "Secret"), ("restart_seconds", "restart")):
            for q, style in ((50, "o--"), (99, "s-")):
                ax.plot(ks, [percentile(p[key], q) / interval for p in props], style, label=f"{name} p{q}")
        ax.axhline((interval + PROPAGATION_SLACK) / interval, color="red", linewidth=1, label="target (p99)")
        ax.set(
            xlabel="items changed (K)",
            ylabel="poll intervals",
            ylim=(0, None),
            title=f"Propagation at N = {props[0]['items']:,} (interval {interval} s)",
        )
        ax.legend()
        save_figure(fig, folder / "propagation.png")
    if restarts := results["restarts"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        xs_unmanaged = [r["unmanaged"] for r in restarts]
        ax.plot(xs_unmanaged, [r["rss_mib"] for r in restarts], "o-", label="RSS when idle")
        ax.plot(xs_unmanaged, [r["peak_rss_mib"] for r in restarts], "s--", label="peak RSS")
        ax.axhline(RSS_TARGET_MIB, color="red", linewidth=1, label="target")
        ax.set(
            xlabel="unmanaged Secrets in the watched namespaces",
            ylabel="MiB",
            ylim=(0, None),
            title=f"opsync memory with {restarts[0]['items']:,} managed Secrets",
        )
        ax.legend()
        save_figure(fig, folder / "memory.png")


def save_figure(fig: Any, path: Path) -> None:
    """``fig`` as a PNG at ``path``, then closed (pyplot keeps every open figure in memory)."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(results: dict[str, Any], doc: Path = DOC, images: Path = IMAGES) -> None:
    """Plots into ``images``; the generated section of ``doc`` replaced (appended if it has none)."""
    plots(results, images)
    write_section(doc, BEGIN, END, markdown(results, link_path(images, doc)))


def link_path(images: Path, doc: Path) -> str:
    """``images`` as ``doc`` links to it: relative to the document's folder when inside it."""
    return str(images.relative_to(doc.parent) if images.is_relative_to(doc.parent) else images)


def write_section(doc: Path, begin: str, end: str, body: str) -> None:
    """``body`` between the markers ``begin`` and ``end`` in ``doc``, replacing what was between them (the
    markers and ``body`` appended if ``doc`` lacks them); the rest of the document is kept."""
    section = f"{begin}\n\n{body}\n\n{end}"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.write_text(text)


def main() -> None:
    """Regenerate the document and plots from a saved run."""
    parser = argparse.ArgumentParser(description="Rewrite docs/benchmarks.md's results from a saved run.")
    parser.add_argument("results", type=Path, help="a JSON file from bench/results/")
    args = parser.parse_args()
    write(json.loads(args.results.read_text()))


if __name__ == "__main__":
    main()
