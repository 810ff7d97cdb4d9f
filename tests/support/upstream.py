"""1Password's own artifacts (its connect chart, the Go operator's CRD), from the project's shared folder.

They are test data that lives beside the repository, never in it: ``$OPSYNC_UPSTREAM`` when set, else
``../shared/upstream`` from the repository root (how CI lays it out), else the development machine's
``/work/shared/upstream``.
A test that needs them fails, and says where it looked, when none exists.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONNECT_CHART = "connect-chart-2.4.1"
GO_OPERATOR_CRD = "onepassword-operator-1.12.0/onepassword.com_onepassworditems.yaml"


def upstream() -> Path:
    """The folder holding ``connect-chart-2.4.1/`` and ``onepassword-operator-1.12.0/``."""
    candidates = [REPO.parent / "shared" / "upstream"]
    if os.environ.get("OPSYNC_UPSTREAM"):
        candidates.insert(0, Path(os.environ["OPSYNC_UPSTREAM"]))
    candidates.append(Path("/work/shared/upstream"))
    for folder in candidates:
        if (folder / CONNECT_CHART / "Chart.yaml").is_file():
            return folder
    raise FileNotFoundError(f"1Password's upstream artifacts are in none of {', '.join(map(str, candidates))}")
