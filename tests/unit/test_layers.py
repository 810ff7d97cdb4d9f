"""The three layers' import contract (pyproject's ``[tool.importlinter]``, docs/architecture.md) holds, and breaks.

The contract runs on the real tree, then on copies of it with one forbidden import added, to prove that the
checker really catches what the contract forbids.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("opsync", "onepassword_access", "controllers")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # The copy comes first on the path, ahead of the editable install of the real tree.
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "COLUMNS": "300"}  # one line per contract
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_tree_keeps_the_contract() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    return tmp_path


def inject(root: Path, module: str, statement: str) -> None:
    path = root / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + f"\n{statement}  # injected by the test\n")


@pytest.mark.parametrize(
    ("module", "statement", "contract"),
    [
        ("opsync.queue", "import controllers.constants", "The framework (opsync, except the CLI)"),
        ("opsync.manager", "from onepassword_access import paths", "The framework (opsync, except the CLI)"),
        ("onepassword_access.resolve", "import controllers.source", "1Password access does not import the operator"),
        ("controllers.items", "from opsync import cli", "Only opsync.cli wires the layers"),
        ("opsync.resources", "import opsync.cache", "No import cycles inside a layer"),
    ],
)
def test_a_forbidden_import_breaks_the_contract(tree_copy: Path, module: str, statement: str, contract: str) -> None:
    assert lint_imports(tree_copy).returncode == 0  # the copy itself is clean
    inject(tree_copy, module, statement)
    result = lint_imports(tree_copy)
    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if "BROKEN" in line]
    assert len(broken) == 1, result.stdout
    assert broken[0].startswith(contract), broken


def test_opsync_run_never_loads_the_emulator() -> None:
    """Issue 16: the emulator (with its token-less admin API) is in the image, but never in what ``opsync run``
    loads: building the operator imports everything it runs with."""
    code = (
        "import sys\n"
        "from opsync.cli import build_parser\n"
        "build_parser('run')\n"
        "from controllers.main import build_operator, connect_client, kubernetes_client\n"
        "import controllers.check, controllers.render\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('onepassword_access.emulator'))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
