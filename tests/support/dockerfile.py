"""The repository's Dockerfile, parsed just enough to compare it with ``make image`` (hack/image.sh)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


def instructions() -> dict[str, list[str]]:
    """Instruction -> its arguments, in order (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, rest = line.strip().partition(" ")
            found.setdefault(instruction.upper(), []).append(re.sub(r"\s+", " ", rest.strip()))
    return found


def base_images() -> list[str]:
    """The image each ``FROM`` starts from, build arguments substituted; a ``FROM`` of an earlier stage is left out."""
    found = instructions()
    arguments = {name: value for name, _, value in (arg.partition("=") for arg in found.get("ARG", []))}
    stages: set[str] = set()
    images = []
    for line in found["FROM"]:
        words = [word for word in line.split() if not word.startswith("--")]  # --platform=...
        image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: arguments[m[1] or m[2]], words[0])
        if image not in stages:
            images.append(image)
        if len(words) == 3 and words[1].upper() == "AS":
            stages.add(words[2])
    return images


def image_config() -> dict[str, Any]:
    """What the final stage sets, in the OCI image configuration's terms (User, Entrypoint, Cmd, Env...)."""
    found = instructions()
    final_env = found["ENV"][-1]
    return {
        "User": found["USER"][-1],
        "Entrypoint": json.loads(found["ENTRYPOINT"][-1]),
        "Cmd": json.loads(found["CMD"][-1]),
        "WorkingDir": found["WORKDIR"][-1],
        "Env": [f"{name}={value}" for name, value in re.findall(r"(\w+)=(\S+)", final_env)],
    }
