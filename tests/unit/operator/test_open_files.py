"""``opsync run`` raises its soft limit on open files, as a Go program does: each open watch holds a socket."""

from __future__ import annotations

import subprocess
import sys


def test_the_run_command_raises_the_soft_open_files_limit_to_the_hard_one() -> None:
    """Each open watch holds a socket; a soft limit of 1,024 would end at about a hundred namespaces."""
    code = (
        "import resource; from controllers.main import raise_open_file_limit; "
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]; "
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)); raise_open_file_limit(); "
        "print(resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "True"
