#!/usr/bin/env bash
# `make demo`: the narrated demo in hack/demo.py, run from the repository root with the project's Python.
# DEMO_ONCE=1 makes it exit after the story instead of running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" hack/demo.py
