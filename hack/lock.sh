#!/usr/bin/env bash
# Writes requirements.lock: every package `opsync run` needs (pyproject.toml's dependencies, resolved), pinned,
# with the sha256 of every file PyPI has for that version. The image installs exactly these, with
# --require-hashes (hack/image.sh). Also writes requirements-dev.lock: the same with the test tools
# (pyproject.toml's `test` extra), without hashes: the constraints of `make venv`, so that CI and every developer
# test with the versions this file names, not whatever PyPI served that day. pip-tools runs in a throwaway
# virtualenv, with the image's Python version.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check "pip-tools>=7.4"
"$work/venv/bin/pip-compile" --quiet --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \
  --no-emit-find-links ${LOCK_FLAGS:-} --output-file requirements.lock pyproject.toml
"$work/venv/bin/pip-compile" --quiet --extra test --strip-extras --allow-unsafe --no-emit-index-url \
  --no-emit-find-links ${LOCK_FLAGS:-} --output-file requirements-dev.lock pyproject.toml
