"""Packaging: one version everywhere, and ``opsync run`` loads none of the test tools the package also ships."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from opsync import __version__

REPO = Path(__file__).resolve().parents[3]
# Shipped for tests and the demo (opsync envtest, opsync connect-emulator), or test-only dependencies.
TEST_TOOLS = ("opsync.envtest", "onepassword_access.emulator", "pytest", "hypothesis", "openapi_core")


def imported_modules(*args: str) -> set[str]:
    """The modules ``python -m opsync ARGS`` imports, from ``-X importtime`` (it lists each on stderr)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "opsync", *args],
        env={"PATH": "/usr/bin:/bin"},  # no OP_CONNECT_HOST: `run` stops at its configuration check
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \| +(\S+)$", result.stderr, re.MULTILINE))


def loads_a_test_tool(modules: set[str]) -> set[str]:
    return {m for m in modules if any(m == tool or m.startswith(f"{tool}.") for tool in TEST_TOOLS)}


def test_opsync_run_imports_the_operator_and_no_test_tool() -> None:
    modules = imported_modules("run")
    assert {"controllers.main", "onepassword_access.client", "opsync.manager"} <= modules
    assert loads_a_test_tool(modules) == set()


def test_the_import_check_sees_a_test_tool_when_one_is_loaded() -> None:
    assert "opsync.envtest" in loads_a_test_tool(imported_modules("envtest", "--help"))


def test_the_chart_and_the_python_package_carry_the_same_version() -> None:
    chart = yaml.safe_load((REPO / "charts" / "opsync" / "Chart.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == __version__


def test_the_changelog_has_a_section_for_the_current_version() -> None:
    assert re.search(rf"^## \[{re.escape(__version__)}\]", (REPO / "CHANGELOG.md").read_text(), re.MULTILINE)
