"""The Dockerfile and ``make image`` (hack/image.sh) define the same image: same Debian suite and Python, same
user, entrypoint, command and environment, and both install exactly requirements.lock.

tests/integration/end_to_end/test_image.py checks the built archive's configuration against the Dockerfile too.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.dockerfile import base_images, image_config, instructions

REPO = Path(__file__).resolve().parents[3]
DEBIAN_RELEASES = {"bookworm": "12", "trixie": "13"}
LOCKED_INSTALL = "--require-hashes --no-deps -r requirements.lock"


def script() -> str:
    return (REPO / "hack" / "image.sh").read_text()


def script_setting(name: str) -> str:
    match = re.search(rf"^{name}=(\S+)", script(), re.MULTILINE)
    assert match, f"hack/image.sh sets no {name}"
    return match[1]


def script_config(option: str) -> list[str]:
    """The values of every ``--config.<option> VALUE`` in hack/image.sh, with its settings substituted."""
    values = [v.strip('"') for v in re.findall(rf"--config\.{option} (\"[^\"]*\"|\S+)", script())]
    for setting in ("PYTHON_VERSION", "IMAGE_USER"):
        values = [v.replace(f"${setting}", script_setting(setting)) for v in values]
    return values


def test_both_use_debian_python_of_the_same_release() -> None:
    suite, python = script_setting("SUITE"), script_setting("PYTHON_VERSION")
    build_image, runtime_image = base_images()
    assert build_image.partition("@")[0] == f"debian:{suite}-slim"
    assert runtime_image.startswith(f"gcr.io/distroless/python3-debian{DEBIAN_RELEASES[suite]}")
    assert f"python{python}-minimal" in (REPO / "hack" / "image" / "packages").read_text().split()
    assert f"apt-get install -y --no-install-recommends python{python} " in " ".join(instructions()["RUN"])


def test_both_run_as_the_same_user_with_the_same_entrypoint_command_and_environment() -> None:
    docker = image_config()
    assert [docker["User"]] == [script_setting("IMAGE_USER")] == script_config("user")
    assert docker["Entrypoint"] == script_config("entrypoint")
    assert docker["Cmd"] == script_config("cmd")
    assert [docker["WorkingDir"]] == script_config("workingdir")
    assert set(docker["Env"]) <= set(script_config("env"))


def test_both_install_exactly_the_lock_file_with_hashes() -> None:
    assert LOCKED_INSTALL in script()
    assert LOCKED_INSTALL in " ".join(instructions()["RUN"])
