"""The image's dependencies are bounded and locked with hashes, its base images pinned by digest (issue 16)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.dockerfile import base_images

REPO = Path(__file__).resolve().parents[3]


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["dependencies"]]


def locked(name: str = "requirements.lock") -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) from a lock file of hack/lock.sh."""
    text = (REPO / name).read_text().replace("\\\n", " ")
    pins = {}
    for line in text.splitlines():
        found = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)\s*(.*)$", line)
        if found:
            pins[canonicalize_name(found[1])] = (found[2], re.findall(r"--hash=sha256:([0-9a-f]{64})", found[3]))
    return pins


def test_every_runtime_dependency_has_an_upper_bound() -> None:
    for requirement in runtime_requirements():
        assert any(spec.operator in ("<", "<=", "~=", "==") for spec in requirement.specifier), requirement


def test_the_lock_pins_every_dependency_within_its_range_with_hashes() -> None:
    pins = locked()
    for requirement in runtime_requirements():
        version, _ = pins[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(version), (requirement, version)
    assert all(hashes for _, hashes in pins.values()), [name for name, (_, h) in pins.items() if not h]


# Packages of the image that the test tools hold back, and why; any other difference fails.
HELD_BACK_IN_TESTS = {
    "python-dateutil": "the official Connect SDK (which proves the emulator) requires python-dateutil<3",
    "tzdata": "only python-dateutil 3 and later depend on it",
}


def test_the_tests_run_on_the_versions_the_image_ships() -> None:
    """``make venv`` installs under requirements-dev.lock: the image's packages at the versions it ships."""
    image, dev = locked(), locked("requirements-dev.lock")
    differ = {name for name, (version, _) in image.items() if dev.get(name, ("",))[0] != version}
    assert differ == HELD_BACK_IN_TESTS.keys(), {name: (image[name][0], dev.get(name)) for name in differ}
    makefile = (REPO / "Makefile").read_text()
    assert "--constraint requirements-dev.lock -e '.[test]'" in makefile


def test_the_image_installs_only_the_locked_files() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "--require-hashes" in dockerfile and "-r requirements.lock" in dockerfile
    assert "--only-binary=:all:" in dockerfile  # wheels only: nothing from the lock is built, nothing runs setup.py
    assert "!requirements.lock" in (REPO / ".dockerignore").read_text()


def test_every_base_image_is_pinned_by_digest() -> None:
    images = base_images()
    assert len(images) == 2, images  # the builder and the runtime: a stage added or lost is seen here
    for image in images:
        # name:tag@sha256:<64 hex>: the tag says what it is, the digest what is pulled.
        assert re.fullmatch(r"[a-z0-9./-]+:[\w.-]+@sha256:[0-9a-f]{64}", image), image
