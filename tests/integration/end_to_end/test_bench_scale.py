"""The scale report of ``bench.scaling`` from synthetic initial syncs (no bench runs here). Here, not in
tests/unit, because the plot needs matplotlib, a test extra that make check-min-deps does not install."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import scaling


def _sync(items: int, seconds: float, rss_mib: float) -> dict[str, Any]:
    # Connect requests N + 2V and two API-server writes per item, as opsync spends them with 5 vaults.
    return {
        "items": items,
        "ready_seconds": seconds,
        "connect_requests": {"GET /v1/vaults/{vault}/items/{item}": items, "GET /v1/vaults/{vault}/items": 10},
        "api_writes": 2 * items,
        "rss_mib": rss_mib,
    }


def _results(*syncs: dict[str, Any]) -> dict[str, Any]:
    return {
        "options": {"poll_interval": 10, "workers": 4},
        "started": "2026-12-04T00:00:00Z",
        "wall_seconds": 120.0,
        "initial_sync": list(syncs),
    }


def test_a_line_fits_linear_points_exactly_and_measures_how_far_others_are() -> None:
    line = scaling.fit([1000, 2000, 4000], [60.0, 70.0, 90.0])
    assert (line.slope, line.intercept) == pytest.approx((0.01, 50.0))
    assert (line.r_squared, line.max_deviation) == pytest.approx((1.0, 0.0))

    bent = scaling.fit([1000, 2000, 4000], [10.0, 20.0, 80.0])  # quadratic-ish: far from a line
    assert bent.r_squared < 0.99 and bent.max_deviation > 0.2

    assert scaling.fit([1, 2], [5.0, 5.0]).r_squared == 1.0, "a constant is on its flat line"
    with pytest.raises(ValueError, match="two different N"):
        scaling.fit([5, 5], [1.0, 2.0])


def test_the_section_gives_each_cost_per_n_its_line_and_verdict(tmp_path: Path) -> None:
    # Unsorted on purpose: the report orders by N. The time grows as N², the rest linearly.
    results = _results(_sync(4000, 160.0, 90.0), _sync(1000, 10.0, 60.0), _sync(2000, 40.0, 70.0))
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nkept above\n\n{scaling.BEGIN}\nold\n{scaling.END}\n\nkept below\n")

    scaling.write(results, doc, tmp_path / "images")

    text = doc.read_text()
    assert "kept above" in text and "kept below" in text and "\nold\n" not in text
    assert "alone at N = 1,000, 2,000, 4,000," in text
    assert "| 1,000 | 10.0 | 1,010 | 2,000 | 60 |" in text
    assert "| Connect requests | 1 | 10.0 | 1.0000 | 0.0% | met |" in text
    assert "| API-server writes | 2 | 0.0 | 1.0000 | 0.0% | met |" in text
    assert "| opsync RSS once idle (MiB) | 0.01 | 50.0 | 1.0000 | 0.0% | met |" in text
    assert "| apply → all Ready (s) |" in text and "**missed**: R² < 0.99 |" in text
    assert "![costs against N](images/scaling.png)" in text
    assert [p.name for p in (tmp_path / "images").iterdir()] == ["scaling.png"]
