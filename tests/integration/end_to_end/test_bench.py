"""The benchmark code (``python -m bench``) at tiny sizes: every scenario runs and reports well-formed results.

Nothing here is timed: speed is what the benchmark itself reports (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from bench import report
from bench.__main__ import run
from bench.scenarios import Options
from opsync.envtest import ControlPlane

TINY = Options(
    sizes=(3, 5),
    changes=(1, 2),
    unmanaged=10,
    unmanaged_steps=1,
    poll_interval=1,
    rounds=1,
    idle_polls=1,
    workers=2,
    refreshes=3,
    sync_repeats=2,
)


async def test_every_scenario_reports_its_figures(control_plane: ControlPlane, tmp_path: Path) -> None:
    results = (await run(TINY, control_plane, tmp_path)).to_json()

    assert [s["items"] for s in results["initial_sync"]] == [3, 5], "one record per size"
    for sync in results["initial_sync"]:
        assert len(sync["ratios"]) == 2, "each size ran twice"
        assert round(sync["ready_seconds"] / sync["floor_seconds"], 3) == max(sync["ratios"]), "the higher middle kept"
        assert sync["floor_answered_seconds"] > 0, "the floor's last write answered is timed too"
        assert sync["ready_seconds"] > 0 and sync["floor_seconds"] > 0
        assert len(sync["applied"]) == len(sync["ready"]) == sync["items"]
        assert sync["ready"] == sorted(sync["ready"]) and abs(sync["ready"][-1] - sync["ready_seconds"]) < 0.01
        assert sync["api_requests"]["POST"] >= sync["items"], "at least one Secret created per item"
        assert sum(sync["connect_requests"].values()) >= sync["items"], "every item was read from Connect"
    idle = results["idle"]
    assert (idle["items"], idle["polls"]) == (5, 1)
    assert idle["connect_requests"] == {"GET /v1/vaults/{vault}": 5}, "one vault read per vault when nothing changed"
    assert [(p["changed"], len(p["secret_seconds"]), len(p["restart_seconds"])) for p in results["propagation"]] == [
        (1, 1, 1),
        (2, 2, 2),
    ]
    for prop in results["propagation"]:
        assert len(prop["spans"]) == len(prop["floor_spans"]) == 1, "each round is followed by its floor"
        assert all(span > 0 for span in prop["spans"] + prop["floor_spans"]), "a Secret is seen before its restart"
        assert prop["api_requests"].get("PATCH", 0) >= prop["changed"], "at least a restart patch per change"
    assert [(r["unmanaged"], r["api_writes"]) for r in results["restarts"]] == [(0, 0), (10, 0)]
    assert all(r["rss_mib"] > 0 and r["peak_rss_mib"] >= r["rss_mib"] for r in results["restarts"])
    refresh = results["refresh"]
    assert (refresh["poll_interval"], len(refresh["secret_seconds"]), len(refresh["restart_seconds"])) == (600, 3, 3)
    assert {
        "opsync-initial-3r1.log",
        "opsync-initial-3.log",
        "opsync-refresh.log",
        "opsync-restart-10.log",
        "emulator.log",
    } <= {p.name for p in tmp_path.iterdir()}

    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nkept above\n\n{report.BEGIN}\nold\n{report.END}\n\nkept below\n")
    report.write(json.loads(json.dumps(results)), doc, tmp_path / "images")
    text = doc.read_text()
    assert "kept above" in text and "kept below" in text and "\nold\n" not in text
    assert text.count("| initial sync at N = 5 within 1.5x the floor |") == 1
    # API-server requests while idle are not asserted: the Argo Rollouts informer (optional, the CRD is not
    # installed here) asks for its kind again with backoff (up to every 30 s), which may fall into the window.
    assert re.search(r"\| 5 \| 5 \| 1 \| GET /v1/vaults/\{vault\} 5\.00 \| [^|]+ \| 0 \|", text), text
    # A round a poll split (a poll inside the edits) is left out of the spans: every round may be, rarely.
    spans = r"\| 5 \| 2 \| (?:[1-9] of \d \| [0-9.]+ s \| [0-9.]+ s \| [0-9.]+|0 of \d \| n/a \| n/a \| n/a) \| "
    assert re.search(spans, text), "the propagation floor table"
    assert "### 6. On-demand refresh" in text and "| refresh p99 (Secret) < 2 s" in text
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        "initial-sync-timeline.png",
        "initial-sync.png",
        "memory.png",
        "propagation.png",
    ]
