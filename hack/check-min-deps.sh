#!/usr/bin/env bash
# Proves pyproject.toml's lower bounds: installs every runtime dependency at exactly the lowest version it
# allows (`dep==min`, the rest resolved by pip) into a throwaway virtualenv, with the oldest Python claimed,
# then imports every module of the three packages and runs the unit tests there.
# A dependency without a `>=` bound fails the check: every dependency must state the oldest version it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$python" - >"$work/constraints.txt" <<'PY'
import re, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
oldest = re.fullmatch(r">=\s*(\d+(?:\.\d+)*)", project["requires-python"])
if not oldest or sys.version_info[:2] != tuple(int(n) for n in oldest[1].split(".")[:2]):
    sys.exit(f"check-min-deps: run with Python {project['requires-python'].lstrip('>=')} (PYTHON=...), not {sys.version.split()[0]}")
for requirement in project["dependencies"]:
    match = re.match(r"([A-Za-z0-9._-]+)\s*[^,;]*?>=\s*([0-9][0-9.]*)", requirement)
    if not match:
        sys.exit(f"check-min-deps: {requirement!r} has no lower bound (>=)")
    print(f"{match[1]}=={match[2]}")
PY
echo "check-min-deps: $("$python" --version), oldest allowed versions:" $(cat "$work/constraints.txt")

"$python" -m venv "$work/venv"
pip=("$work/venv/bin/pip" --quiet --disable-pip-version-check)
# Only the runner of the unit tests besides opsync itself, and h2 (the HTTP/2 server opsync.http2's unit tests
# talk to; it depends on nothing of opsync's): the other test tools need newer libraries (openapi-core, the
# Connect SDK) and test nothing about opsync's own lower bounds.
"${pip[@]}" install --constraint "$work/constraints.txt" . pytest pytest-asyncio pytest-timeout hypothesis h2
"$work/venv/bin/python" - "$work/constraints.txt" <<'PY'
import sys
from importlib.metadata import version

def release(text):  # 3.9 and 3.9.0 are the same release
    parts = text.split(".")
    while len(parts) > 1 and parts[-1] == "0":
        parts.pop()
    return parts

pins = [line.strip().split("==") for line in open(sys.argv[1])]
print("check-min-deps: installed", ", ".join(f"{name} {version(name)}" for name, _ in pins))
wrong = [f"{name} {version(name)} (not {pin})" for name, pin in pins if release(version(name)) != release(pin)]
if wrong:
    sys.exit("check-min-deps: " + ", ".join(wrong))
PY

cd "$work"  # import the installed copy, not the source tree
"$work/venv/bin/python" - <<'PY'
import importlib, pkgutil
for name in ("opsync", "onepassword_access", "controllers"):
    package = importlib.import_module(name)
    for module in pkgutil.walk_packages(package.__path__, f"{name}."):
        if not module.name.endswith(".__main__"):  # that one runs the command
            importlib.import_module(module.name)
print("check-min-deps: every module imports")
PY
"$work/venv/bin/opsync" version
# `opsync run` starts and stops at its configuration check, naming the missing setting.
if output=$(env -i PATH=/usr/bin:/bin "$work/venv/bin/opsync" run 2>&1); then
  echo "check-min-deps: opsync run without OP_CONNECT_HOST succeeded" >&2; exit 1
fi
grep -q "OP_CONNECT_HOST" <<<"$output" || { echo "check-min-deps: opsync run said: $output" >&2; exit 1; }
cd - >/dev/null
# test_layers checks the import contract with import-linter, a lint tool, not a runtime dependency.
"$work/venv/bin/python" -m pytest -q -p no:cacheprovider --import-mode=importlib \
  --ignore=tests/unit/test_layers.py tests/unit
