#!/usr/bin/env bash
# The whole test suite: lint, format check, types, then pytest (unit, API,
# integration with real PostgreSQL/Redis servers, and system tests as root).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== ruff check"; ruff check src tests
echo "== ruff format --check"; ruff format --check src tests
echo "== mypy"; mypy
echo "== pytest"; python3 -m pytest "$@"
