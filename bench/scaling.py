"""Issue 17's scale run: the initial sync alone at growing N, and how its costs grow with N.

``python -m bench --scale`` (``make bench-scale``) runs scenario 1 at each of ``SIZES`` (or the sizes given)
and nothing else; this module fits a least-squares line to each cost against N and writes docs/benchmarks.md's
scale section (between ``BEGIN`` and ``END``, apart from the section of ``make bench``) and ``scaling.png``.
Linear growth is judged by numbers, not by eye: each fit's R² and the largest distance of a point from its
line, as a share of the point. ``python -m bench.scaling bench/results/<run>.json`` rewrites both from a
saved run.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt  # on the Agg backend, which importing bench.report selects

from bench import report

SIZES = (1000, 2000, 5000, 10_000, 20_000)
BEGIN = "<!-- bench:scale:begin (written by `python -m bench --scale`; edit outside) -->"
END = "<!-- bench:scale:end -->"
PLOT = "scaling.png"
LINEAR_R_SQUARED = 0.99  # the verdict's threshold: a line explains at least 99% of the variation

Sync = dict[str, Any]  # one InitialSync as JSON

METRICS: tuple[tuple[str, Callable[[Sync], float], str], ...] = (
    ("apply → all Ready (s)", lambda s: s["ready_seconds"], "{:,.1f}"),
    ("Connect requests", lambda s: sum(s["connect_requests"].values()), "{:,.0f}"),
    ("API-server writes", lambda s: s["api_writes"], "{:,.0f}"),
    ("opsync RSS once idle (MiB)", lambda s: s["rss_mib"], "{:,.0f}"),
)
"""What is set against N: its name, how to read it from an initial sync, its format in the table."""


@dataclass(frozen=True)
class Fit:
    """The least-squares line ``y = slope * N + intercept`` through some points, and how well it fits them."""

    slope: float
    intercept: float
    r_squared: float  # 1 when every point is on the line
    max_deviation: float  # the largest |point - line| / point, over the points that are not 0

    def at(self, n: float) -> float:
        """The line's value at ``n``."""
        return self.slope * n + self.intercept


def fit(ns: Sequence[float], ys: Sequence[float]) -> Fit:
    """The least-squares line through ``(ns[i], ys[i])``; needs at least two different ``ns``."""
    mean_n, mean_y = sum(ns) / len(ns), sum(ys) / len(ys)
    spread = sum((n - mean_n) ** 2 for n in ns)
    if not spread:
        raise ValueError("a line needs at least two different N")
    slope = sum((n - mean_n) * (y - mean_y) for n, y in zip(ns, ys, strict=True)) / spread
    intercept = mean_y - slope * mean_n
    residuals = [y - (slope * n + intercept) for n, y in zip(ns, ys, strict=True)]
    total = sum((y - mean_y) ** 2 for y in ys)
    # A constant series (every point equal) is on its flat line: R² would be 0 / 0.
    r_squared = 1 - sum(r * r for r in residuals) / total if total else 1.0
    deviations = [abs(r) / abs(y) for r, y in zip(residuals, ys, strict=True) if y]
    return Fit(slope, intercept, r_squared, max(deviations, default=0.0))


def fits(syncs: Sequence[Sync]) -> list[tuple[str, Fit]]:
    """Each of ``METRICS`` with its line against N."""
    ns = [s["items"] for s in syncs]
    return [(name, fit(ns, [float(read(s)) for s in syncs])) for name, read, _ in METRICS]


def markdown(results: dict[str, Any], images: str) -> str:
    """The scale section: the costs at each N, their lines and verdicts; ``images``: the PNG folder relative
    to the document."""
    syncs = sorted(results["initial_sync"], key=lambda s: s["items"])
    options = results["options"]
    sizes = ", ".join(f"{s['items']:,}" for s in syncs)
    measured = report.markdown_table(
        ("N", *(name for name, _, _ in METRICS)),
        [(f"{s['items']:,}", *(form.format(read(s)) for _, read, form in METRICS)) for s in syncs],
    )
    lines = report.markdown_table(
        ("against N", "per item (slope)", "at N = 0 (intercept)", "R²", "largest deviation", "verdict"),
        [
            (
                name,
                f"{line.slope:.4g}",
                f"{line.intercept:,.1f}",
                f"{line.r_squared:.4f}",
                f"{line.max_deviation:.1%}",
                report.verdict(line.r_squared >= LINEAR_R_SQUARED, f"R² < {LINEAR_R_SQUARED}"),
            )
            for name, line in fits(syncs)
        ],
    )
    return "\n\n".join(
        [
            f"Run of {results['started']}: wall time {results['wall_seconds'] / 60:.1f} min; the initial sync "
            f"alone at N = {sizes}, one fresh opsync per N, poll interval "
            f"{options['poll_interval']} s, {options['workers']} workers.",
            measured,
            f"Least-squares lines; linear when R² >= {LINEAR_R_SQUARED}.",
            lines,
            f"![costs against N]({images}/{PLOT})",
        ]
    )


def plot(syncs: Sequence[Sync], path: Path) -> None:
    """One panel per metric: the points, their line from N = 0, its slope and R²."""
    syncs = sorted(syncs, key=lambda s: s["items"])
    ns = [s["items"] for s in syncs]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for ax, (name, read, _), (_, line) in zip(axes.flat, METRICS, fits(syncs), strict=True):
        points = ax.plot(ns, [read(s) for s in syncs], "o", label="measured")
        ax.plot(
            (0, ns[-1]),
            (line.at(0), line.at(ns[-1])),
            "--",
            color=points[0].get_color(),
            label=f"fit: {line.slope:.3g} per item, R² {line.r_squared:.4f}",
        )
        ax.set(xlabel="OnePasswordItems (N)", ylabel=name, xlim=(0, None), ylim=(0, None))
        ax.legend(fontsize=8)
    fig.suptitle("Initial sync against N (one fresh opsync per N)")
    report.save_figure(fig, path)


def write(results: dict[str, Any], doc: Path = report.DOC, images: Path = report.IMAGES) -> None:
    """``scaling.png`` into ``images``; the scale section of ``doc`` replaced (appended if it has none)."""
    images.mkdir(parents=True, exist_ok=True)
    plot(results["initial_sync"], images / PLOT)
    report.write_section(doc, BEGIN, END, markdown(results, report.link_path(images, doc)))


def main() -> None:
    """Regenerate the scale section and its plot from a saved scale run."""
    parser = argparse.ArgumentParser(description="Rewrite docs/benchmarks.md's scale section from a saved run.")
    parser.add_argument("results", type=Path, help="a JSON file from bench/results/ (of `python -m bench --scale`)")
    args = parser.parse_args()
    write(json.loads(args.results.read_text()))


if __name__ == "__main__":
    main()
