#!/usr/bin/env bash
# The whole test suite: lint, types, unit, golden, and (as root) integration tests in real namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
bash contrib/setup.sh
.venv/bin/ruff check cniplug tests
.venv/bin/mypy
exec .venv/bin/python -m pytest -q -ra "$@"
