"""The side-by-side table of ``bench.versus``: its report only (the Go operator never runs in tests). Here, not
in tests/unit, because the report needs matplotlib, a test extra that make check-min-deps does not install."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from bench import report, versus


def _side(operator: str, **figures: Any) -> dict[str, Any]:
    base = versus.Side(
        operator=operator,
        items=2000,
        unmanaged=3000,
        sync_seconds=40.0,
        sync_connect_requests=20000,
        sync_api_writes=10000,
        quiet_polls=2,
        quiet_connect_requests=16000,
        quiet_cpu_seconds=2.0,
        rss_mib=238.0,
        peak_rss_mib=240.0,
        changed=200,
        change_secret_seconds=[1.0] * 98 + [14.0] * 2,
        restart_connect_requests=24000,
        restart_api_writes=2000,
        restart_seconds=30.0,
    )
    return asdict(base) | figures


def test_the_table_puts_go_and_opsync_side_by_side_with_their_ratio() -> None:
    sides = [
        _side("go"),
        _side(
            "opsync",
            sync_seconds=20.0,
            quiet_connect_requests=10,
            rss_mib=119.0,
            change_secret_seconds=[1.0] * 98 + [4.0] * 2,
            restart_connect_requests=11,
            restart_api_writes=0,
        ),
    ]
    table = versus.table(sides)

    assert table.splitlines()[0] == "| N = 2,000 items, 3,000 other 16 KiB Secrets | Go | opsync | Go / opsync |"
    assert "| apply → every Secret exists (s) | 40.0 | 20.0 | 2.0x |" in table
    assert "| Connect requests per quiet poll | 8,000.0 | 5.0 | 1600.0x |" in table
    assert "| RSS (MiB) | 238 | 119 | 2.0x |" in table
    assert "| 200 items changed at once: Secret p99 (s) | 14.0 | 4.0 | 3.5x |" in table
    assert "| restart in sync: API-server writes | 2,000 | 0 | n/a |" in table  # no ratio against zero


def test_a_run_with_only_the_side_by_side_reports_it_without_empty_tables() -> None:
    results = {
        "options": {"poll_interval": 10, "workers": 4, "rounds": 2},
        "started": "2026-12-03T22:00:00Z",
        "wall_seconds": 60.0,
        "initial_sync": [],
        "idle": None,
        "propagation": [],
        "restarts": [],
        "refresh": None,
        "steady_memory": None,
        "versus": [_side("go"), _side("opsync")],
    }
    text = report.markdown(results, ".")

    assert "### Side by side with the Go operator" in text
    assert "### Targets" not in text
