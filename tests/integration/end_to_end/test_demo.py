"""``make demo`` tells its whole story and exits 0 (``DEMO_ONCE=1``, run as the Makefile runs it).

The demo starts its own control plane, Connect emulator and ``opsync run``, so this test uses no fixture.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def example_values() -> list[str]:
    """Every field value of the demo's vault: none may show up in the demo's output."""
    data = yaml.safe_load((ROOT / "examples/emulator-data.yaml").read_text())
    fields = [field for vault in data["vaults"] for item in vault["items"] for field in item.get("fields", [])]
    return [str(field["value"]) for field in fields if len(str(field["value"])) > 4]


@pytest.mark.timeout(300)
def test_make_demo_once_tells_the_story_and_succeeds() -> None:
    env = {**os.environ, "DEMO_ONCE": "1", "PYTHON": sys.executable}
    with subprocess.Popen(
        ["bash", "hack/demo.sh"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as demo:
        try:
            stdout, stderr = demo.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            demo.terminate()  # SIGTERM: the demo stops what it started
            stdout, stderr = demo.communicate(timeout=60)
            pytest.fail(f"the demo did not finish within 240 s:\n{stdout}{stderr}")
    output = stdout + stderr
    assert demo.returncode == 0, f"the demo failed (exit {demo.returncode}):\n{output}"

    assert re.search(r"Secret demo/db-credentials appeared: .*password=<\d+ bytes>", stdout), output
    assert re.search(r"Secret demo/api-key appeared: credential=<\d+ bytes>", stdout), output
    assert re.search(r"Secret demo/db-credentials followed: password changed.*item-version 1 -> 2", stdout), output
    assert re.search(r"Deployment demo/web rolled: .*new ReplicaSet web-\w+", stdout), output
    assert 'opsync_workload_restarts_total{kind="Deployment"} 1' in stdout, output
    assert "Done (DEMO_ONCE=1)" in stdout, output
    for value in example_values():
        assert value not in output, "a Secret value was printed"
